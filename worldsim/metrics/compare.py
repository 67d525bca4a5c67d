"""One video against the truth video of the same start and actions: every per-step physics metric.

``read_truth`` reads MuJoCo's video of an episode once (objects, masks, positions, Drive's
driving curves); ``compare_video`` is the whole comparison of that reading with one source (a
generator, the frozen baseline, the PyBullet twin, a perturbed MuJoCo run): frames (PSNR, SSIM,
MSE), object masks (Physics-IQ IoUs), objects (centroid error in pixels, position and velocity
error in metres, objects vanished or appearing, per object too) and the laws read off the
source's own trajectories (Balls: fitted gravity, restitution, penetration; Push: motion without
contact; Drive: progress, collisions, leaving the road, lane deviation, comfort, and their
differences from the truth's). It sees frames, the scene spec and camera parameters only:
anything that makes frames can be scored, and nothing here imports the generator.

Objects are found by colour (``worldsim.metrics.objects``) in both videos, and lifted to metres on
the plane each object moves in through the truth camera, so a generated world is measured with the
same ruler as MuJoCo's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldsim.metrics import driving, laws, masks
from worldsim.metrics.frames import PSNR_CAP_DB, psnr, ssim
from worldsim.metrics.objects import (
    ObjectTracks,
    compare_tracks,
    extract_objects,
    lift_centroids,
    nanmean,
    object_masks,
    object_planes,
    palette_for,
)
from worldsim.physics.camera import CameraParams
from worldsim.scenes import balls, family_of

VALID_FRACTION_OF_SIZE = 0.25
"""An object's track is valid while its position error stays under this fraction of the smallest
object's size (a quarter of a ball's diameter: half its radius), and it has not vanished."""

FLOOR_Z_M = 0.0
"""Top of the Balls floor (``worldsim.scenes.balls``)."""

PUSH_MOVE_M = 0.01
"""A Push object moving more than this in one step (0.1 m/s) is moving, not jittering: the parsing
floor is a few millimetres."""

PUSHER_REACH_SLACK_M = 0.02
"""Slack on the pusher's reach: lifted positions are good to millimetres, the object's outline is not
a circle."""

FLIGHT_RMS_M = 0.01
"""A free flight is a parabola to within this rms (the parsing floor is 2-5 mm): an impact with a ball
between two samples, which no contact test at the samples sees, bends it by several centimetres."""

WALL_MARGIN_M = 0.05
"""A ball this close to a wall or the ceiling may be touching it: its flight is not free there."""


@dataclass(frozen=True)
class VideoComparison:
    """Per-step curves (``[T]``, NaN where undefined) and whole-video values of one comparison."""

    curves: dict[str, np.ndarray]
    values: dict[str, float]
    laws: dict[str, float]
    valid_steps: int
    by_object: dict[str, dict[str, float]]  # object name -> mean position / velocity / centroid error


DRIVE_LAWS = ("progress_m", "collision_steps", "off_road_steps", "lane_deviation_mean_m", "comfortable_share")
"""What ``drive_laws`` reports of a Drive video (from ``worldsim.metrics.driving.video_driving``)."""

DRIVE_DIFFERENCES = {
    "progress_error_m": "progress_error_m",
    "lateral_error_m": "lateral_error_mean_m",
    "lane_deviation_error_m": "lane_deviation_error_mean_m",
    "speed_error_mps": "speed_error_mean_mps",
    "collision_agreement": "collision_agreement",
    "off_road_agreement": "off_road_agreement",
    "comfortable_share_error": "comfortable_share_error",
}
"""Drive's differences from the truth video kept among a comparison's values (name: driving key)."""


@dataclass(frozen=True)
class TruthReading:
    """What every comparison of one episode reads off the truth video, read once: each source is
    compared with the same reading, and the truth's own laws come from it too."""

    frames: np.ndarray  # uint8[T, H, W, 3]
    spec: Any
    cameras: tuple[CameraParams, ...]  # one per frame (the Drive camera follows the ego car)
    dt_s: float
    tracks: ObjectTracks
    points_m: np.ndarray  # [T, N, 3], the tracks lifted to metres
    previous_m: np.ndarray  # [1, N, 3], the frame before the first lifted (NaN when not given)
    masks: np.ndarray  # bool[T, H, W], any object
    driving: dict[str, Any] | None  # ``driving.video_driving`` (Drive), else None

    def laws(self) -> dict[str, float]:
        """The laws of the truth video's own trajectories (``object_laws``; Drive: ``drive_laws``)."""
        if self.driving is not None:
            return drive_laws(self.driving["summary"])
        return object_laws(self.points_m, self.spec, self.dt_s)


def read_truth(
    truth_uint8: np.ndarray,
    spec: Any,
    cameras: Sequence[CameraParams],
    dt_s: float,
    previous_uint8: np.ndarray | None = None,
) -> TruthReading:
    """Read the truth video ``uint8[T, H, W, 3]`` for ``compare_video``. ``cameras``: the truth camera
    of each frame; ``previous_uint8``: the truth frame just before the first (the last context
    frame), so the first step has a velocity too; every video compared with this one shares it."""
    truth = np.asarray(truth_uint8)
    if truth.ndim != 4:
        raise ValueError(f"a video is uint8[T, H, W, 3], got shape {truth.shape}")
    if len(cameras) != len(truth):
        raise ValueError(f"got {len(cameras)} cameras for {len(truth)} frames; pass one per frame")
    palette, planes, cameras = palette_for(spec), object_planes(spec), tuple(cameras)
    tracks = extract_objects(truth, palette)
    if previous_uint8 is not None and len(cameras) > 0:
        prev = extract_objects(np.asarray(previous_uint8)[None], palette).centroid_px
        previous_m = lift_centroids(prev, [cameras[0]], planes)
    else:
        previous_m = np.full((1, len(planes), 3), np.nan)
    return TruthReading(
        frames=truth,
        spec=spec,
        cameras=cameras,
        dt_s=dt_s,
        tracks=tracks,
        points_m=lift_centroids(tracks.centroid_px, list(cameras), planes),
        previous_m=previous_m,
        masks=object_masks(truth, palette).any(1),
        driving=driving.video_driving(truth, spec, cameras, dt_s)
        if family_of(spec).name == "drive"
        else None,
    )


def drive_laws(summary: dict[str, Any]) -> dict[str, float]:
    """The ``DRIVE_LAWS`` of a Drive video's driving summary (``None`` read as NaN)."""
    return {k: float("nan") if summary[k] is None else float(summary[k]) for k in DRIVE_LAWS}


def object_laws(points_m: np.ndarray, spec: Any, dt_s: float) -> dict[str, float]:
    """The laws of Balls and Push read off lifted object positions ``[T, N, 3]`` (m)."""
    if family_of(spec).name == "push":
        return {"moved_without_contact_steps": float(push_moved_without_contact(points_m, spec).sum())}
    return balls_laws(points_m, spec, dt_s)


def balls_laws(points_m: np.ndarray, spec: Any, dt_s: float) -> dict[str, float]:
    """Gravity, restitution and penetration from Balls trajectories ``[T, N, 3]`` (m).

    Gravity and restitution are read from the passive balls only (ball 0 is pushed by the action),
    on flights away from the walls and the ceiling (a wall's friction changes a ball's vertical
    speed) and away from other balls: a ball's height is dropped at every step it is near a wall or
    touches another ball, which ends its flight there. Penetration counts every ball.
    """
    radii = np.array([o.size_m / 2 for o in family_of(spec).objects(spec)])
    x, z = points_m[..., 0], points_m[..., 2].copy()
    near_wall = (np.abs(x) > balls.HALF_WIDTH_M - radii - WALL_MARGIN_M) | (
        z > balls.HEIGHT_M - radii - WALL_MARGIN_M
    )
    gap = np.linalg.norm(points_m[:, :, None] - points_m[:, None], axis=-1) - (radii[:, None] + radii[None])
    touching = (gap < laws.COLLISION_MARGIN_M) & ~np.eye(len(radii), dtype=bool)  # NaN compares False
    z[near_wall | touching.any(-1)] = np.nan  # a gap ends a flight and is never bridged as a bounce
    passive = slice(1, None)
    g = laws.fit_gravity(z[:, passive], dt_s, FLOOR_Z_M, radii[passive], max_rms_m=FLIGHT_RMS_M)
    e = [laws.restitution(z[:, j], dt_s, FLOOR_Z_M, radii[j]).e for j in range(1, len(radii))]
    e = np.concatenate(e) if e else np.array([])
    pen = laws.penetration(points_m, radii, FLOOR_Z_M, tolerance_m=0.25 * radii.min())
    return {
        "gravity_mps2": float(g.g_mps2),
        "restitution": float(np.mean(e)) if len(e) else float("nan"),
        "penetration_steps": float((pen.pair_steps | pen.floor_steps).sum()),
    }


def push_moved_without_contact(points_m: np.ndarray, spec: Any, quiet_steps: int = 2) -> np.ndarray:
    """Steps ``bool[T]`` where the Push object moves more than ``PUSH_MOVE_M`` although the pusher has
    been out of reach for ``quiet_steps`` steps (a box that slides after a push stops within one):
    motion without a cause. ``points_m[T, 2, 3]``: object and pusher, in palette order."""
    obj, pusher = family_of(spec).objects(spec)
    # a box's corner reaches 1.42 half sides out; the pusher is a disc
    reach = 0.71 * obj.size_m + pusher.size_m / 2 + PUSHER_REACH_SLACK_M
    apart = np.linalg.norm(points_m[:, 0, :2] - points_m[:, 1, :2], axis=-1) > reach  # False where unseen
    quiet = apart.copy()
    for k in range(1, quiet_steps + 1):
        quiet[k:] &= apart[:-k]
        quiet[:k] = False
    step = np.linalg.norm(np.diff(points_m[:, 0, :2], axis=0), axis=-1)
    moved = np.concatenate([[False], step > PUSH_MOVE_M])
    return moved & quiet


def compare_video(truth: TruthReading, other_uint8: np.ndarray) -> VideoComparison:
    """Compare ``other_uint8[T, H, W, 3]`` with the truth video read by ``read_truth``, step by step."""
    other, spec, cameras, dt_s = np.asarray(other_uint8), truth.spec, truth.cameras, truth.dt_s
    if other.shape != truth.frames.shape:
        raise ValueError(
            f"videos must both be uint8[T, H, W, 3] of one shape, got {truth.frames.shape} and {other.shape}"
        )
    palette = palette_for(spec)
    tt, ot = truth.tracks, extract_objects(other, palette)
    errors = compare_tracks(tt, ot, cameras=list(cameras), planes=object_planes(spec))

    # velocities by finite differences of lifted positions, from the shared previous frame on
    other_m = errors.gen_m
    v_truth = np.diff(np.concatenate([truth.previous_m, truth.points_m]), axis=0) / dt_s
    v_other = np.diff(np.concatenate([truth.previous_m, other_m]), axis=0) / dt_s
    vel_err = np.linalg.norm(v_truth - v_other, axis=-1)  # NaN unless seen at both steps in both

    mt, mo = truth.masks, object_masks(other, palette).any(1)
    perm = laws.permanence(ot.visible, ot.count_px, tt.visible, tt.count_px)

    size = min(o.size_m for o in family_of(spec).objects(spec))
    bad = (errors.error_m > VALID_FRACTION_OF_SIZE * size) | errors.vanished | errors.ghost
    broken = np.flatnonzero(bad.any(1))
    valid = int(broken[0]) if len(broken) else len(other)

    curves = {
        "psnr_db": psnr(truth.frames, other, max_db=PSNR_CAP_DB),
        "ssim": ssim(truth.frames, other),
        "mse": masks.frame_mse(truth.frames, other),
        "iou": masks.iou_per_step(mt, mo),
        "centroid_error_px": errors.curve_px(),
        "position_error_m": nanmean(errors.error_m, axis=1),
        "velocity_error_mps": nanmean(vel_err, axis=1),
        "vanished": errors.vanished.sum(1).astype(float),
        "ghost": errors.ghost.sum(1).astype(float),
    }
    values = {
        "spatial_iou": masks.spatial_iou(mt, mo),
        "spatiotemporal_iou": masks.spatiotemporal_iou(mt, mo),
        "weighted_spatial_iou": masks.weighted_spatial_iou(mt, mo),
        "kept_fraction": float(perm.kept_fraction),
    }
    if truth.driving is not None:
        drive = driving.driving_metrics(truth.frames, other, spec, cameras, dt_s, truth.driving)
        diff = drive["difference"]["summary"]
        # errors as magnitudes: a mean over episodes must not let a shortfall cancel an overshoot
        values |= {
            k: np.nan if diff[d] is None else abs(float(diff[d])) for k, d in DRIVE_DIFFERENCES.items()
        }
        video = drive_laws(drive["other"]["summary"])
    else:  # the positions already lifted above, not found and lifted again
        video = object_laws(other_m, spec, dt_s)
    per_object = {  # means over steps, one per object
        "position_error_m": nanmean(errors.error_m.T, axis=1),
        "velocity_error_mps": nanmean(vel_err.T, axis=1),
        "centroid_error_px": nanmean(errors.error_px.T, axis=1),
    }
    by_object = {name: {m: float(v[j]) for m, v in per_object.items()} for j, name in enumerate(tt.objects)}
    return VideoComparison(curves, values, video, valid, by_object)


def parsing_floor_m(truth: TruthReading, true_points: np.ndarray) -> np.ndarray:
    """Per-step mean distance ``[T]`` (m) between objects found in MuJoCo's frames, lifted, and their
    true centres ``[T, N, 3]``: how exactly the measurement itself places an object."""
    return nanmean(np.linalg.norm(truth.points_m - true_points, axis=-1), axis=1)


def parsing_floor_iou(truth: TruthReading, segments: np.ndarray) -> np.ndarray:
    """Per-step IoU ``[T]`` of the objects the colour extractor finds in MuJoCo's frames with
    MuJoCo's own segmentation of them (``int32[T, H, W]``, object ids): how exactly the extractor,
    which is all a generated frame can be read with, draws the masks."""
    ids = np.array([o.object_id for o in family_of(truth.spec).objects(truth.spec)])
    seg = (np.asarray(segments)[:, None] == ids[None, :, None, None]).any(1)
    return masks.iou_per_step(seg, truth.masks)
