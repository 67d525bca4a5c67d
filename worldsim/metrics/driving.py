"""Driving metrics read from Drive frames, so that MuJoCo's video and a generator's are judged alike.

From a Drive video ``frames_uint8[T, H, W, 3]`` (``worldsim.scenes.drive``: the road runs along +x; the
camera looks straight down and follows the ego car along x) it reads, per step (``track_drive``), the
ego car's lateral position, its progress along the road, the lead car's and pedestrian's positions and
collisions; then (``video_driving``) off-road steps, lane deviation and nuPlan's comfort quantities.
The ego car's x cannot show in its own pixels, so progress is how far the centre line's dashes slide
down the image between consecutive frames (``scenery_shift_px``).

Accuracy on MuJoCo's 64x64 frames against the true state (11 worlds of 40 steps: mixture policy and
scripted crashes; ``tests/test_metrics_driving.py`` pins it): y within 0.09 m; progress 0.055 m rms per
step (dash edges land on whole rows of 0.186 m) without accumulating: x within 0.18 m after 12-30 m;
speed 0.16 m/s mean error (away from crashes); lead car and pedestrian within 0.19 m; collision onset within a step of the
simulator's contact. Away from the first and last 7 steps, longitudinal / lateral acceleration err by
0.20 / 0.12 m/s^2 on average, longitudinal jerk by 0.32 m/s^3 (0.99 at the 95th percentile) and yaw
rate by 0.04 rad/s against the same derivatives of the true path, and 95 % of steps get the same
comfort verdict (78-100 % per world); nearer the ends the fits extrapolate (jerk errors of 4-8 m/s^3): comfort is not
judged there.

Comfort follows nuPlan's ``ego_is_comfortable`` (motional/nuplan-devkit, bounds in
``nuplan/planning/script/config/common/simulation_metric/low_level/ego_*_statistics.yaml``):
longitudinal acceleration in [-4.05, 2.40] m/s^2, |lateral acceleration| < 4.89 m/s^2, |longitudinal
jerk| < 4.13 m/s^3, |jerk| < 8.37 m/s^3, |yaw rate| < 0.95 rad/s, |yaw acceleration| < 1.93 rad/s^2.
nuPlan smooths and differentiates the ego's history with Savitzky-Golay filters (quadratics over 5
samples for rates, 8 for accelerations, 15 for jerk; ``nuplan/planning/metrics/utils/state_extractors.py``);
we fit such quadratics (5, 9, 15 steps) to positions read from frames. Our jerk is the jerk vector's norm
(nuPlan differentiates the acceleration's magnitude; ours is never smaller).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worldsim.metrics import objects as obj
from worldsim.physics.camera import CameraParams
from worldsim.scenes import drive
from worldsim.scenes.colours import rgb_uint8

COMFORT_BOUNDS = {
    "lon_acceleration_mps2": (-4.05, 2.40),
    "lateral_acceleration_mps2": (-4.89, 4.89),
    "lon_jerk_mps3": (-4.13, 4.13),
    "jerk_mps3": (0.0, 8.37),
    "yaw_rate_radps": (-0.95, 0.95),
    "yaw_acceleration_radps2": (-1.93, 1.93),
}
"""nuPlan's ``ego_is_comfortable`` bounds (where they are defined: the module docstring)."""

COMFORT_EDGE_STEPS = 7
"""Comfort is judged on steps at least this far from both ends (half the jerk window)."""

MARKING_STRIP_M = 0.4
"""Half width of the strip over the centre line (y = 0) whose rows make the marking profile."""

SHIFT_RANGE_M = (-1.5, 4.5)
"""Progress searched per step: -15 to 45 m/s at 10 Hz; 4.5 m is half the dash period (9 m), beyond
which one dash would be taken for the next."""

SHIFT_GRID_PX, MIN_OVERLAP_ROWS, MIN_PROFILE_STD = 0.02, 16, 0.1
"""Shifts are searched on this grid, and a step's shift is measured only over at least this many rows
seen in both frames whose profile varies this much (a dash edge in view: a uniform strip fits any
shift)."""

PROGRESS_TOLERANCE = (1.0, 0.05)
"""Progress agrees with the truth's within max(1 m, 5 % of the truth's progress): several times the
frame estimate's own error (0.18 m at most over 40 steps)."""

MIN_HEADING_SPEED_MPS = 1.0
"""Heading follows the line of the estimated velocity (forwards or reversing, whichever turns less)
while the car moves faster than this, and is held below it (a stopped car's velocity is noise)."""


def _grow(mask: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Boolean ``mask`` dilated by one pixel along each of ``axes``."""
    for ax in axes:
        m = np.moveaxis(mask, ax, -1)
        g = m.copy()
        g[..., 1:] |= m[..., :-1]
        g[..., :-1] |= m[..., 1:]
        mask = np.moveaxis(g, -1, ax)
    return mask


def marking_profile(
    frames_uint8: np.ndarray, spec: Any, camera: CameraParams
) -> tuple[np.ndarray, np.ndarray]:
    """Centre-line marking per row ``[T, H]`` (marking pixels across the strip, 0 on bare road), and
    the rows no object covers, ``bool[T, H]``."""
    f = np.asarray(frames_uint8)
    edge = camera.project(np.array([[camera.position_m[0], s * MARKING_STRIP_M, 0.0] for s in (1, -1)]))
    cols = np.arange(int(np.floor(edge[:, 0].min())), int(np.ceil(edge[:, 0].max())))
    cols = cols[(cols >= 0) & (cols < f.shape[2])]
    road, mark = np.array(rgb_uint8("road"), float), np.array(rgb_uint8("marking"), float)
    white = np.clip((f[:, :, cols].astype(float) - road) @ ((mark - road) / np.sum((mark - road) ** 2)), 0, 1)
    strip = f[:, :, max(cols[0] - 1, 0) : cols[-1] + 2]
    covered = _grow(obj.object_masks(strip, obj.palette_for(spec)).any((1, 3)), [1])  # blended rows too
    return white.sum(-1), ~covered


def scenery_shift_px(
    profile: np.ndarray, valid: np.ndarray, shift_range_px: tuple[float, float]
) -> np.ndarray:
    """Rows the scenery moved down between consecutive frames, ``[T]``: the shift that best maps one
    frame's ``marking_profile`` onto the next (least squares over rows seen in both). NaN at step 0 and
    where the profiles cannot tell (too little overlap, or no dash edge in view)."""
    T, H = profile.shape
    grid = np.arange(
        np.ceil(shift_range_px[0] / SHIFT_GRID_PX), np.floor(shift_range_px[1] / SHIFT_GRID_PX) + 1
    )
    shifts = grid * SHIFT_GRID_PX  # holds 0 exactly: a still video shows no progress
    rows = np.arange(H) + 0.5
    q = rows[None, :] - shifts[:, None]  # where each row of frame t was in frame t-1
    inside = (q >= 0.5) & (q <= H - 0.5)
    lo = np.clip(np.floor(q - 0.5).astype(int), 0, H - 1)
    hi = np.minimum(lo + 1, H - 1)
    out = np.full(T, np.nan)
    for t in range(1, T):
        m = inside & valid[t - 1][lo] & valid[t - 1][hi] & valid[t][None, :]
        n = m.sum(1)
        sq = (profile[t][None, :] - np.interp(q, rows, profile[t - 1])) ** 2
        cost = np.where(n >= MIN_OVERLAP_ROWS, (m * sq).sum(1) / np.maximum(n, 1), np.inf)
        k = int(np.argmin(cost))
        if np.isfinite(cost[k]) and profile[t][m[k]].std() >= MIN_PROFILE_STD:
            out[t] = shifts[k]
    return out


def track_drive(
    frames_uint8: np.ndarray, spec: Any, cameras: Sequence[CameraParams]
) -> dict[str, np.ndarray]:
    """What a Drive video ``uint8[T, H, W, 3]`` shows, per step ``[T]``: ``ego_y_m``; ``step_progress_m``
    (advance since the previous frame; NaN at step 0 and where unmeasured); ``ego_x_m`` (camera 0's
    ego x plus the cumulative progress, unmeasured steps interpolated; NaN if none is measured);
    ``lead_x_m``, ``lead_y_m``, ``ped_x_m``, ``ped_y_m`` (NaN when absent, out of view or cut by the
    border); ``collision`` (bool: the ego mask grown by a pixel touches another agent's mask, or their
    lifted centres are closer than the two footprints' half extents).

    ``cameras``: the truth camera of each frame. Only camera 0's x is read as a position (the origin
    of progress); the others serve as rulers, so a car standing still shows no progress whatever the
    truth cameras did.
    """
    f = np.asarray(frames_uint8)
    palette = obj.palette_for(spec)
    tracks = obj.extract_objects(f, palette)
    pts = obj.lift_centroids(tracks.centroid_px, list(cameras), obj.object_planes(spec))[..., :2]
    scale = cameras[0].position_m[2] / cameras[0].K[1, 1]  # ground metres per row, looking straight down
    shift_range = (SHIFT_RANGE_M[0] / scale, SHIFT_RANGE_M[1] / scale)
    progress = scenery_shift_px(*marking_profile(f, spec, cameras[0]), shift_range) * scale
    steps, ok = np.arange(len(f)), np.isfinite(progress)
    filled = np.interp(steps[1:], steps[ok], progress[ok]) if ok.any() else progress[1:]
    cam_x = np.array([c.position_m[0] - drive.CAMERAS[0].pos_m[0] for c in cameras])
    ego_x = cam_x[0] + np.concatenate([[0.0], np.cumsum(filled)])

    h, w = tracks.image_hw
    b = tracks.bbox_px
    with np.errstate(invalid="ignore"):
        whole = tracks.visible & (b[..., 0] > 0) & (b[..., 1] > 0) & (b[..., 2] < w) & (b[..., 3] < h)
    world = pts + np.stack([ego_x - cam_x, np.zeros_like(ego_x)], -1)[:, None, :]
    masks = obj.object_masks(f, palette)
    collision = (_grow(masks[:, :1], [2, 3]) & masks[:, 1:]).any((1, 2, 3))
    out = {"ego_x_m": ego_x, "ego_y_m": np.where(tracks.visible[:, 0], pts[:, 0, 1], np.nan)}
    out["step_progress_m"] = progress
    agents = {"lead": np.full((len(f), 2), np.nan), "ped": np.full((len(f), 2), np.nan)}
    for k, name in enumerate(palette.objects[1:], start=1):
        r = drive.CAR_HALF[:2] if name == "lead" else (drive.PED_RADIUS_M, drive.PED_RADIUS_M)
        gap = np.abs(pts[:, k] - pts[:, 0])
        with np.errstate(invalid="ignore"):
            collision |= (gap[:, 0] < drive.CAR_HALF[0] + r[0]) & (gap[:, 1] < drive.CAR_HALF[1] + r[1])
        agents[name] = np.where(whole[:, k, None], world[:, k], np.nan)
    for name, xy in agents.items():
        out[f"{name}_x_m"], out[f"{name}_y_m"] = xy[:, 0], xy[:, 1]
    return {**out, "collision": collision}


def local_derivative(y: np.ndarray, dt_s: float, window: int) -> np.ndarray:
    """First derivative of ``y[T]`` or ``y[T, D]`` from least-squares quadratics over ``window`` steps,
    centred (shifted inwards at the ends, as Savitzky-Golay's ``interp`` mode); NaN samples are left
    out of a fit, and a fit of fewer than 3 samples gives NaN."""
    flat = np.asarray(y, float).reshape(len(y), -1)
    out = np.full(flat.shape, np.nan)
    T = len(flat)
    for t in range(T):
        lo = int(np.clip(t - window // 2, 0, max(T - window, 0)))
        k = np.arange(lo, min(lo + window, T))
        for d in range(flat.shape[1]):
            ok = np.isfinite(flat[k, d])
            if ok.sum() >= 3:
                out[t, d] = np.polyfit((k[ok] - t) * dt_s, flat[k[ok], d], 2)[1]
    return out.reshape(np.shape(y))


def motion_curves(ego_x_m: np.ndarray, ego_y_m: np.ndarray, dt_s: float) -> dict[str, np.ndarray]:
    """Speed, accelerations, jerks, yaw rate and yaw acceleration ``[T]`` of an ego path (m)."""
    v = local_derivative(np.stack([ego_x_m, ego_y_m], -1), dt_s, 5)
    speed = np.linalg.norm(v, axis=-1)
    heading, h = np.zeros(len(speed)), 0.0  # along the road until the car moves
    for t, phi in enumerate(np.arctan2(v[:, 1], v[:, 0])):
        if speed[t] > MIN_HEADING_SPEED_MPS:  # the smaller turn to the velocity's line
            h += (phi - h + np.pi / 2) % np.pi - np.pi / 2
        heading[t] = h
    a = local_derivative(v, dt_s, 9)
    c, s = np.cos(heading), np.sin(heading)
    lon = c * a[:, 0] + s * a[:, 1]
    yaw_rate = local_derivative(heading, dt_s, 5)
    return {
        "speed_mps": speed,
        "lon_acceleration_mps2": lon,
        "lateral_acceleration_mps2": -s * a[:, 0] + c * a[:, 1],
        "lon_jerk_mps3": local_derivative(lon, dt_s, 15),
        "jerk_mps3": np.linalg.norm(local_derivative(a, dt_s, 15), axis=-1),
        "yaw_rate_radps": yaw_rate,
        "yaw_acceleration_radps2": local_derivative(yaw_rate, dt_s, 5),
    }


def lane_deviation_m(ego_y_m: np.ndarray) -> np.ndarray:
    """|y - centre| of the lane the ego car is in (lane 1 for y >= 0, lane 0 below)."""
    y = np.asarray(ego_y_m, float)
    return np.abs(y - np.where(y >= 0, drive.lane_y(1), drive.lane_y(0)))


def comfortable(curves: dict[str, np.ndarray], edge_steps: int = COMFORT_EDGE_STEPS) -> np.ndarray:
    """Per step ``[T]``: 1.0 where every ``COMFORT_BOUNDS`` quantity is within bounds, 0.0 where one is
    not, NaN where one is unknown or within ``edge_steps`` of either end."""
    ok, known = np.ones(len(curves["speed_mps"])), np.ones(len(curves["speed_mps"]), bool)
    for name, (lo, hi) in COMFORT_BOUNDS.items():
        x = curves[name]
        known &= np.isfinite(x)
        with np.errstate(invalid="ignore"):
            ok *= (x >= lo) & (x <= hi)
    known[:edge_steps] = False
    known[len(known) - edge_steps :] = False
    return np.where(known, ok, np.nan)


def _stat(fn: Any, x: np.ndarray) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(fn(x)) if len(x) else float("nan")


def video_driving(frames_uint8: np.ndarray, spec: Any, cameras: Sequence[CameraParams], dt_s: float) -> dict:
    """Per-step ``curves`` (arrays ``[T]``) and ``summary`` values of one Drive video."""
    curves = track_drive(frames_uint8, spec, cameras)
    x, y, hit = curves["ego_x_m"], curves["ego_y_m"], curves["collision"]
    with np.errstate(invalid="ignore"):
        curves["off_road"] = off_road = np.abs(y) > drive.ROAD_HALF_WIDTH_M
    curves |= {"progress_m": x - x[0], "lane_deviation_m": lane_deviation_m(y), **motion_curves(x, y, dt_s)}
    curves["comfortable"] = comfortable(curves)
    hits = np.flatnonzero(hit)
    summary = {
        "progress_m": curves["progress_m"][-1],
        "progress_measured_share": _stat(np.mean, np.isfinite(curves["step_progress_m"][1:])),
        "mean_speed_mps": _stat(np.mean, curves["speed_mps"]),
        "collision_steps": int(hit.sum()),
        "first_collision_step": int(hits[0]) if len(hits) else None,
        "off_road_steps": int(off_road.sum()),
        "ego_unseen_steps": int(np.isnan(y).sum()),
        "lane_deviation_mean_m": _stat(np.mean, curves["lane_deviation_m"]),
        "lane_deviation_max_m": _stat(np.max, curves["lane_deviation_m"]),
        "comfortable_share": _stat(np.mean, curves["comfortable"]),
        **{f"max_abs_{k}": _stat(np.max, np.abs(curves[k])) for k in COMFORT_BOUNDS},
    }
    return {"curves": curves, "summary": summary}


def _json(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json(v) for k, v in x.items()}
    if isinstance(x, (np.ndarray, list, tuple)):
        return [_json(v) for v in np.asarray(x).tolist()]
    if x is None or isinstance(x, (bool, int)):
        return x
    return float(x) if np.isfinite(x) else None


def driving_metrics(
    truth_frames: np.ndarray,
    other_frames: np.ndarray,
    spec: Any,
    cameras: Sequence[CameraParams],
    dt_s: float,
    driving_reading: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Driving metrics of ``other_frames[T, H, W, 3]`` and their differences from those of
    ``truth_frames`` (MuJoCo's video of the same start and actions), JSON-ready (NaN as ``None``):

    - ``bounds``: nuPlan's comfort bounds; ``truth``: the truth video's summary;
    - ``other``: the other video's ``curves`` and ``summary`` (see ``video_driving``);
    - ``difference``: ``curves`` (other minus truth: progress, y, lane deviation, speed) and ``summary``
      (final progress error, ratio and whether it is within ``PROGRESS_TOLERANCE``; mean |lateral|,
      |lane-deviation| and |speed| errors; shares of steps whose collision / off-road flags agree).

    ``cameras``: the truth camera of each frame (what is read from them: ``track_drive``).
    ``driving_reading``: ``video_driving`` of the truth video when the caller has it already (one
    truth video is compared with several others).
    """
    t, o = np.asarray(truth_frames), np.asarray(other_frames)
    if t.shape != o.shape or t.ndim != 4:
        raise ValueError(f"videos must both be uint8[T, H, W, 3] of one shape, got {t.shape} and {o.shape}")
    if len(cameras) != len(t):
        raise ValueError(f"got {len(cameras)} cameras for {len(t)} frames; pass one per frame")
    vt = video_driving(t, spec, cameras, dt_s) if driving_reading is None else driving_reading
    vo = video_driving(o, spec, cameras, dt_s)
    ct, co, st = vt["curves"], vo["curves"], vt["summary"]
    curves = {k: co[k] - ct[k] for k in ("progress_m", "ego_y_m", "lane_deviation_m", "speed_mps")}
    err, truth_progress = curves["progress_m"][-1], st["progress_m"]
    tol = max(PROGRESS_TOLERANCE[0], PROGRESS_TOLERANCE[1] * abs(truth_progress))
    summary = {
        "progress_error_m": err,
        "progress_ratio": vo["summary"]["progress_m"] / truth_progress if truth_progress > 0 else np.nan,
        "progress_agrees": bool(abs(err) <= tol),
        "lateral_error_mean_m": _stat(np.mean, np.abs(curves["ego_y_m"])),
        "lane_deviation_error_mean_m": _stat(np.mean, np.abs(curves["lane_deviation_m"])),
        "speed_error_mean_mps": _stat(np.mean, np.abs(curves["speed_mps"])),
        "collision_agreement": float(np.mean(co["collision"] == ct["collision"])),
        "collided_agrees": bool(co["collision"].any() == ct["collision"].any()),
        "off_road_agreement": float(np.mean(co["off_road"] == ct["off_road"])),
        "comfortable_share_error": vo["summary"]["comfortable_share"] - st["comfortable_share"],
    }
    diff = {"curves": curves, "summary": summary}
    return _json({"bounds": COMFORT_BOUNDS, "truth": st, "other": vo, "difference": diff})
