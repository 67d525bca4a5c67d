"""The colour extractor, centroid errors and frame metrics, measured on MuJoCo truth frames.

Measured parsing floors at 64x64 (mean / max over the visible objects of these rollouts that do not
touch the image border, centroid vs the projected true centre; ``-s`` prints them):
balls 0.10 / 0.24 px (3.5 / 8.1 mm), push 0.15 / 0.31 px (2.6 / 5.4 mm), drive 0.35 / 0.54 px
(63 / 99 mm: one pixel is 0.19 m there). The rest is mostly perspective: the camera sees the top
and some sides of a box or a cylinder, a silhouette not centred on the projected centre, and the
Drive cars and pedestrian are the tallest objects, seen farthest off-axis.
"""

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import permutations

import numpy as np
import pytest
from conftest import FAMILIES

from worldsim.metrics import (
    PSNR_CAP_DB,
    Plane,
    centroid_errors,
    classify,
    colour_tolerance,
    compare_tracks,
    default_penalty_px,
    extract_objects,
    frame_metrics,
    frozen_video,
    lift_centroids,
    object_masks,
    object_planes,
    palette_for,
    pixel_to_plane,
    psnr,
    ssim,
    true_points_m,
)
from worldsim.physics import make_simulator
from worldsim.scenes import family_of, parse_prompt, sample
from worldsim.scenes.colours import rgb_uint8

SIZE = 64
STEPS = 12

# Drive worlds whose lead car and pedestrian come into the follow camera's view within STEPS.
DRIVE_PROMPTS = (
    "drive: red ego car, lane 0, speed 6.00 m/s; green lead car, gap 7.00 m, speed 6.00 m/s; "
    "magenta pedestrian, x 8.00 m, start 0.00 s, side 1",
    "drive: blue ego car, lane 1, speed 8.00 m/s; yellow lead car, gap 9.00 m, speed 8.00 m/s; "
    "magenta pedestrian, x 12.00 m, start 0.50 s, side -1",
    "drive: red ego car, lane 1, speed 5.00 m/s; magenta pedestrian, x 6.00 m, start 0.00 s, side -1",
)


@dataclass
class Rollout:
    spec: object
    frames: np.ndarray  # uint8[T, H, W, 3]
    segments: np.ndarray  # int[T, H, W]
    points_m: np.ndarray  # [T, N, 3] true object centres
    cameras: list  # CameraParams per step


def _specs(family: str) -> list:
    if family == "drive":
        return [parse_prompt(p) for p in DRIVE_PROMPTS]
    return [sample(family, np.random.default_rng(seed)) for seed in range(3)]


def _rollout(sim, spec, rng: np.random.Generator | None, steps: int) -> Rollout:
    """Random actions from ``rng``, or none (zero) if it is ``None``."""
    sim.reset(spec)
    frames, segments, points, cameras = [], [], [], []
    for t in range(steps):
        if t:
            action = np.zeros(2) if rng is None else rng.uniform(-1, 1, 2)
            if spec.family == "drive":
                action[0] *= 0.3  # gentle steering keeps the car on the road
            sim.step(action)
        frames.append(sim.render())
        segments.append(sim.segment())
        points.append(true_points_m(spec, sim.state()))
        cameras.append(sim.camera())
    return Rollout(spec, np.stack(frames), np.stack(segments), np.stack(points), cameras)


@pytest.fixture(scope="module")
def rollouts() -> dict[str, list[Rollout]]:
    out = {}
    for family in FAMILIES:
        sim = make_simulator(family, "mujoco", SIZE, SIZE)
        rng = np.random.default_rng(7)
        out[family] = [_rollout(sim, spec, rng, STEPS) for spec in _specs(family)]
        sim.close()
    return out


@pytest.fixture(scope="module")
def moving_balls() -> Rollout:
    """One ball rolling right across the arena, away from where it started, for 2 s (no actions)."""
    spec = parse_prompt("balls: red agent ball, x -0.80 m, z 0.30 m, vx 0.80 m/s, friction 0.10")
    sim = make_simulator("balls", "mujoco", SIZE, SIZE)
    out = _rollout(sim, spec, None, 20)
    sim.close()
    return out


def _inside(tracks, margin: int = 1) -> np.ndarray:
    """Visible objects whose mask stays ``margin`` px away from every image border."""
    b = tracks.bbox_px
    with np.errstate(invalid="ignore"):
        return (
            tracks.visible
            & (b[..., 0] >= margin)
            & (b[..., 1] >= margin)
            & (b[..., 2] <= SIZE - margin)
            & (b[..., 3] <= SIZE - margin)
        )


# ---------------------------------------------------------------------------------------------
# palette and classification


@pytest.mark.parametrize("family", FAMILIES)
def test_palette_holds_every_material_colour_the_scene_draws(family):
    for seed in range(20):
        spec = sample(family, np.random.default_rng(seed))
        palette = palette_for(spec)
        drawn = re.findall(r'<material name="[^"]+" rgba="([^"]+)"', family_of(family).to_mjcf(spec))
        assert len(drawn) >= 5
        for rgba in drawn:
            rgb = tuple(round(float(v) * 255) for v in rgba.split()[:3])
            assert rgb in palette.rgb, f"{family} draws {rgb}, missing from palette {palette.colours}"
        assert len(palette.objects) == len(family_of(family).objects(spec))


@pytest.mark.parametrize("family", FAMILIES)
def test_no_edge_blend_of_two_colours_reads_as_a_third_object(family):
    """MuJoCo's 4x multisampling blends the two colours on either side of an edge, in quarters."""
    for seed in range(40):
        palette = palette_for(sample(family, np.random.default_rng(seed)))
        rgb = np.asarray(palette.rgb, float)
        for i, j in permutations(range(len(rgb)), 2):
            blends = np.array([a * rgb[i] + (1 - a) * rgb[j] for a in (0.25, 0.5, 0.75)])
            owner = classify(np.round(blends).astype(np.uint8)[None], palette)[0]
            allowed = {-1, palette.owner[i], palette.owner[j]}
            assert set(owner.tolist()) <= allowed, (palette.colours[i], palette.colours[j], owner)


@pytest.mark.parametrize("family", FAMILIES)
def test_slightly_off_colours_still_classify(family):
    """Object colours shifted by 0.85 x the documented tolerance, in any direction, keep their owner
    (the margin covers the lookup grid's rounding)."""
    spec = _specs(family)[0]
    palette = palette_for(spec)
    tol = colour_tolerance(palette)
    assert tol >= 30.0  # the drive tyres vs the road are the closest pair: 60 levels apart
    rng = np.random.default_rng(0)
    for c, owner in zip(palette.rgb, palette.owner, strict=True):
        if owner < 0:
            continue
        d = rng.normal(size=(200, 3))
        d *= 0.85 * tol / np.linalg.norm(d, axis=1, keepdims=True)
        shifted = np.asarray(c) + d
        ok = np.all((shifted >= 0) & (shifted <= 255), axis=1)  # clipping would shorten the shift
        got = classify(np.round(shifted[ok]).astype(np.uint8)[None], palette)[0]
        assert (got == owner).all(), (palette.colours, c)


# ---------------------------------------------------------------------------------------------
# parsing floor: the extractor on truth frames vs the true state

FLOOR_PX = {"balls": (0.2, 0.5), "push": (0.25, 0.5), "drive": (0.45, 0.75)}  # (mean, max) bounds
FLOOR_M = {"balls": (0.007, 0.015), "push": (0.005, 0.01), "drive": (0.08, 0.13)}


@pytest.mark.parametrize("family", FAMILIES)
def test_parsing_floor_centroids_match_projected_true_centres(family, rollouts):
    px, m = [], []
    for r in rollouts[family]:
        palette = palette_for(r.spec)
        tracks = extract_objects(r.frames, palette)
        uv = np.stack([cam.project(p) for cam, p in zip(r.cameras, r.points_m, strict=True)])
        ok = _inside(tracks)
        px.append(np.linalg.norm(tracks.centroid_px - uv, axis=-1)[ok])
        lifted = lift_centroids(tracks.centroid_px, r.cameras, object_planes(r.spec))
        m.append(np.linalg.norm(lifted - r.points_m, axis=-1)[ok])
    px, m = np.concatenate(px), np.concatenate(m)
    print(
        f"\nparsing floor {family}: {px.size} objects, {px.mean():.3f} / {px.max():.3f} px, "
        f"{1000 * m.mean():.1f} / {1000 * m.max():.1f} mm (mean / max)"
    )
    assert px.size >= 20
    assert px.mean() < FLOOR_PX[family][0] and px.max() < FLOOR_PX[family][1]
    assert m.mean() < FLOOR_M[family][0] and m.max() < FLOOR_M[family][1]


def test_drive_rollouts_see_every_object(rollouts):
    """The drive floor above covers the lead car and the pedestrian too, not only the ego car."""
    seen = set()
    for r in rollouts["drive"]:
        tracks = extract_objects(r.frames, palette_for(r.spec))
        seen |= {name for k, name in enumerate(tracks.objects) if _inside(tracks)[:, k].any()}
    assert seen == {"ego", "lead", "ped"}


@pytest.mark.parametrize("family", FAMILIES)
def test_colour_masks_agree_with_segmentation(family, rollouts):
    """IoU > 0.9 for every object with at least 20 px; the masks never find an object elsewhere.

    Smaller slivers (an object entering the view) lose a larger share to the 2x2 opening: a
    pedestrian of 18 px cut by the image border scores 0.89.
    """
    ious = []
    for r in rollouts[family]:
        palette = palette_for(r.spec)
        masks = object_masks(r.frames, palette)
        for k, oid in enumerate(palette.object_ids):
            seg = r.segments == oid
            near = (
                seg | np.roll(seg, 1, -1) | np.roll(seg, -1, -1) | np.roll(seg, 1, -2) | np.roll(seg, -1, -2)
            )
            assert not (masks[:, k] & ~near).any(), f"{palette.objects[k]} found away from its segment"
            for t in np.flatnonzero(seg.sum((1, 2)) >= 20):
                ious.append((masks[t, k] & seg[t]).sum() / (masks[t, k] | seg[t]).sum())
    print(f"\nmask IoU {family}: min {min(ious):.3f}, mean {np.mean(ious):.3f} over {len(ious)}")
    assert len(ious) >= 20 and min(ious) > 0.9


# ---------------------------------------------------------------------------------------------
# perfect and broken copies


def test_perfect_copy_scores_zero_error_infinite_psnr_and_unit_ssim(rollouts):
    r = rollouts["balls"][0]
    palette = palette_for(r.spec)
    errors = centroid_errors(
        r.frames, r.frames.copy(), palette, cameras=r.cameras, planes=object_planes(r.spec)
    )
    assert errors.matched.any()
    assert np.nanmax(errors.error_px) == 0.0 and np.nanmax(errors.error_m) == 0.0
    assert not errors.vanished.any() and not errors.ghost.any()
    assert np.isinf(psnr(r.frames, r.frames)).all()
    assert (ssim(r.frames, r.frames) == 1.0).all()
    fm = frame_metrics(r.frames, r.frames, horizons=(5, 100))
    assert fm["h5"] == {"psnr_db": PSNR_CAP_DB, "ssim": 1.0} and fm["h100"]["psnr_db"] is None
    json.dumps(fm, allow_nan=False)


def _paint_over(r: Rollout, object_id: int, colour: str) -> np.ndarray:
    """The truth frames with one object (and its blended edge pixels) painted in a scenery colour."""
    seg = r.segments == object_id
    grown = seg | np.roll(seg, 1, -1) | np.roll(seg, -1, -1) | np.roll(seg, 1, -2) | np.roll(seg, -1, -2)
    out = r.frames.copy()
    out[grown] = rgb_uint8(colour)
    return out


def test_vanished_and_ghost_objects_cost_the_penalty_and_are_counted(rollouts):
    r = next(r for r in rollouts["balls"] if len(r.spec.balls) >= 2)
    palette = palette_for(r.spec)
    painted = _paint_over(r, palette.object_ids[1], "backdrop")
    penalty = default_penalty_px(SIZE, SIZE)
    assert penalty == pytest.approx(0.5 * np.hypot(SIZE, SIZE))

    errors = centroid_errors(r.frames, painted, palette)
    truth_visible = extract_objects(r.frames, palette).visible[:, 1]
    assert truth_visible.all()
    np.testing.assert_array_equal(errors.vanished[:, 1], truth_visible)
    np.testing.assert_array_equal(errors.error_px[:, 1], penalty)
    assert not errors.ghost.any() and errors.vanished[:, [0, *range(2, palette.n_objects)]].sum() == 0
    np.testing.assert_array_equal(errors.error_px[:, 0], 0.0)  # the other balls are untouched
    summary = errors.summary(horizons=(5,))
    assert summary["h5"]["vanished"] == 5 and summary["all"]["vanished"] == STEPS
    expected = penalty / palette.n_objects  # one of N objects carries the penalty at every step
    assert summary["all"]["error_px"] == pytest.approx(expected)
    json.dumps({"summary": summary, "curves": errors.curves()}, allow_nan=False)

    ghosts = centroid_errors(painted, r.frames, palette)
    np.testing.assert_array_equal(ghosts.ghost[:, 1], truth_visible)
    assert not ghosts.vanished.any() and ghosts.summary()["all"]["ghost"] == STEPS


def test_objects_invisible_in_both_videos_are_skipped(rollouts):
    r = next(r for r in rollouts["balls"] if len(r.spec.balls) >= 2)
    palette = palette_for(r.spec)
    painted = _paint_over(r, palette.object_ids[1], "backdrop")
    errors = centroid_errors(painted, painted.copy(), palette)
    assert np.isnan(errors.error_px[:, 1]).all() and not errors.vanished.any() and not errors.ghost.any()
    assert errors.summary()["all"]["error_px"] == 0.0  # the NaNs do not dilute or poison the mean


def _shift_right_3px(frames: np.ndarray) -> np.ndarray:
    """Frames moved 3 px to the right, the left border column repeated into the gap."""
    return np.concatenate([np.repeat(frames[:, :, :1], 3, axis=2), frames[:, :, :-3]], axis=2)


def _stay_whole_when_shifted(tracks) -> np.ndarray:
    """Visible objects clear of the left border (repeated) and 3 px clear of the right one."""
    with np.errstate(invalid="ignore"):
        return tracks.visible & (tracks.bbox_px[..., 0] >= 1) & (tracks.bbox_px[..., 2] <= SIZE - 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_frames_shifted_by_3_px_give_3_px_error(family, rollouts):
    r = rollouts[family][0]
    palette = palette_for(r.spec)
    shifted = _shift_right_3px(r.frames)
    truth = extract_objects(r.frames, palette)
    errors = compare_tracks(truth, extract_objects(shifted, palette))
    keep = _stay_whole_when_shifted(truth)
    assert keep.sum() >= STEPS
    np.testing.assert_allclose(errors.error_px[keep], 3.0, atol=1e-9)


def test_shift_in_metres_matches_the_pixel_scale(rollouts):
    """Balls at y = 0 are 3.4 m from a 36-degree camera: 3 px at 64 px is 0.105 m."""
    r = rollouts["balls"][0]
    palette = palette_for(r.spec)
    shifted = _shift_right_3px(r.frames)
    truth = extract_objects(r.frames, palette)
    errors = compare_tracks(
        truth, extract_objects(shifted, palette), cameras=r.cameras[0], planes=object_planes(r.spec)
    )
    metres_per_px = 2 * 3.4 * np.tan(np.deg2rad(36.0) / 2) / SIZE
    np.testing.assert_allclose(errors.error_m[_stay_whole_when_shifted(truth)], 3 * metres_per_px, rtol=1e-6)


def test_frozen_video_error_grows_with_time(moving_balls):
    r = moving_balls
    frozen = frozen_video(r.frames[0], len(r.frames))
    assert frozen.shape == r.frames.shape and (frozen == r.frames[0]).all()
    curve = centroid_errors(r.frames, frozen, palette_for(r.spec)).curve_px()
    assert curve[0] == 0.0
    assert (np.diff(curve) > 0).all()  # the ball gets farther from where the frozen frame has it
    assert curve[-1] > 20.0  # rolled about 0.9 m in 2 s, 29 px at 33 mm per pixel
    p = psnr(r.frames, frozen)
    assert np.isinf(p[0]) and p[1] > p[-1]


def test_noisy_copy_keeps_centroids_but_lowers_psnr_and_ssim(rollouts):
    for family in FAMILIES:
        for r in rollouts[family]:
            rng = np.random.default_rng(1)
            noisy = np.clip(r.frames + rng.normal(0, 10, r.frames.shape), 0, 255).round().astype(np.uint8)
            palette = palette_for(r.spec)
            errors = centroid_errors(r.frames, noisy, palette)
            assert not errors.vanished.any() and not errors.ghost.any(), family
            assert np.nanmax(errors.error_px) < 0.5, (family, np.nanmax(errors.error_px))
            p, s = psnr(r.frames, noisy), ssim(r.frames, noisy)
            assert (p > 26).all() and (p < 30).all()  # 20 log10(255 / 10) = 28.1 dB before clipping
            assert (s < 0.99).all()


# ---------------------------------------------------------------------------------------------
# lifting, SSIM, shapes, speed


@pytest.mark.parametrize("family", FAMILIES)
def test_pixel_to_plane_inverts_projection(family, rollouts):
    r = rollouts[family][-1]
    rng = np.random.default_rng(3)
    for cam, plane in [(r.cameras[0], object_planes(r.spec)[0]), (r.cameras[-1], object_planes(r.spec)[-1])]:
        uv = rng.uniform(0, SIZE, (50, 2))
        points = pixel_to_plane(uv, cam, plane)
        np.testing.assert_allclose(points @ np.asarray(plane.normal), plane.offset_m, atol=1e-9)
        np.testing.assert_allclose(cam.project(points), uv, atol=1e-9)


def test_pixel_to_plane_is_nan_when_the_plane_is_behind_or_parallel(rollouts):
    cam = rollouts["push"][0].cameras[0]  # looks straight down from z = 2 m
    centre = np.array([[SIZE / 2, SIZE / 2]])
    assert np.isnan(pixel_to_plane(centre, cam, Plane.horizontal(3.0))).all()
    assert np.isnan(pixel_to_plane(centre, cam, Plane((1.0, 0.0, 0.0), 0.5))).all()
    assert np.isnan(pixel_to_plane(np.array([[np.nan, 1.0]]), cam, Plane.horizontal(0.0))).all()


def test_ssim_equals_a_direct_window_by_window_sum():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 14, 13, 3), dtype=np.uint8)
    y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.uint8)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = []
    for t in range(2):
        values = []
        for c in range(3):
            a, b = x[t, ..., c].astype(float), y[t, ..., c].astype(float)
            for i in range(14 - 10):
                for j in range(13 - 10):
                    pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
                    ma, mb = (w * pa).sum(), (w * pb).sum()
                    va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
                    cov = (w * (pa - ma) * (pb - mb)).sum()
                    values.append(
                        (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
                    )
        expected.append(np.mean(values))
    np.testing.assert_allclose(ssim(x, y), expected, rtol=1e-9)
    # two flat frames: only the luminance term is left
    a, b = np.full((1, 16, 16, 3), 100, np.uint8), np.full((1, 16, 16, 3), 150, np.uint8)
    assert ssim(a, b)[0] == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))


def test_single_frame_and_video_give_the_same_objects(rollouts):
    r = rollouts["push"][0]
    palette = palette_for(r.spec)
    video, frame = extract_objects(r.frames, palette), extract_objects(r.frames[3], palette)
    assert frame.centroid_px.shape == (palette.n_objects, 2) and frame.bbox_px.shape == (palette.n_objects, 4)
    np.testing.assert_array_equal(frame.centroid_px, video.centroid_px[3])
    np.testing.assert_array_equal(frame.count_px, video.count_px[3])


def test_bad_inputs_raise_with_the_shapes():
    palette = palette_for(sample("balls", np.random.default_rng(0)))
    with pytest.raises(ValueError, match="uint8"):
        extract_objects(np.zeros((8, 8, 3), np.float32), palette)
    with pytest.raises(ValueError, match="one shape"):
        centroid_errors(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8), palette)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="cameras"):
        lift_centroids(np.zeros((3, 1, 2)), [None, None], [Plane.horizontal(0.0)])


def test_extraction_of_a_600_frame_video_is_fast(moving_balls):
    video = np.concatenate([moving_balls.frames] * 30)  # 600 frames
    palette = palette_for(moving_balls.spec)
    extract_objects(video[:1], palette)  # builds the palette's lookup table once
    start = time.perf_counter()
    tracks = extract_objects(video, palette)
    elapsed = time.perf_counter() - start
    print(f"\nextraction of 600 frames {SIZE}x{SIZE}: {elapsed:.3f} s")
    assert tracks.visible.shape == (600, 1) and elapsed < 1.5


def test_metrics_import_nothing_from_the_model():
    code = "import sys, worldsim.metrics; print([m for m in sys.modules if m.startswith('worldsim.model')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
