"""Physics-IQ mask metrics on hand-made masks with known answers, and on flat-colour object frames."""

import json

import numpy as np
import pytest

from worldsim.metrics.masks import (
    frame_mse,
    iou_per_step,
    mask_metrics,
    spatial_iou,
    spatiotemporal_iou,
    weighted_spatial_iou,
)
from worldsim.metrics.objects import palette_for
from worldsim.scenes import sample
from worldsim.scenes.colours import rgb_uint8

IOUS = (spatial_iou, spatiotemporal_iou, weighted_spatial_iou)


def _square(t: int, row: int, col: int, size: int = 4, hw: int = 8) -> np.ndarray:
    """Masks ``bool[t, hw, hw]`` with a ``size`` x ``size`` square at (row, col) in every frame."""
    m = np.zeros((t, hw, hw), bool)
    m[:, row : row + size, col : col + size] = True
    return m


def test_identical_masks_and_frames_score_one_and_zero():
    rng = np.random.default_rng(0)
    m = rng.random((5, 8, 8)) < 0.3
    for f in IOUS:
        assert f(m, m.copy()) == 1.0
    np.testing.assert_array_equal(iou_per_step(m, m), 1.0)
    frames = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(frame_mse(frames, frames.copy()), 0.0)


def test_disjoint_masks_score_zero():
    a, b = _square(3, 0, 0), _square(3, 4, 4)
    for f in IOUS:
        assert f(a, b) == 0.0


def test_half_overlapping_squares_score_one_third():
    """4x4 squares shifted by 2 columns: 8 shared pixels of 24."""
    a, b = _square(3, 0, 0), _square(3, 0, 2)
    for f in IOUS:
        assert f(a, b) == pytest.approx(1 / 3)
    np.testing.assert_allclose(iou_per_step(a, b), 1 / 3)


def test_right_place_wrong_time_keeps_spatial_iou_but_not_spatiotemporal():
    """Truth on at steps 0-1, generated at 1-2: steps score 0, 1, 0 and 1 (both empty)."""
    truth, gen = _square(4, 2, 2), _square(4, 2, 2)
    truth[2:] = False
    gen[[0, 3]] = False
    assert spatial_iou(truth, gen) == 1.0
    np.testing.assert_array_equal(iou_per_step(truth, gen), [0.0, 1.0, 0.0, 1.0])
    assert spatiotemporal_iou(truth, gen) == 0.5
    assert weighted_spatial_iou(truth, gen) == 1.0  # on equally often: 2 steps of 4 each


def test_on_twice_as_often_lowers_only_weighted_spatial_iou():
    truth, gen = _square(4, 2, 2), _square(4, 2, 2)
    truth[2:] = False
    assert spatial_iou(truth, gen) == 1.0
    assert weighted_spatial_iou(truth, gen) == 0.5
    assert spatiotemporal_iou(truth, gen) == 0.5


def test_empty_masks_score_one_against_empty_and_zero_against_anything():
    empty, full = np.zeros((3, 8, 8), bool), _square(3, 0, 0)
    for f in IOUS:
        assert f(empty, empty.copy()) == 1.0
        assert f(empty, full) == 0.0 and f(full, empty) == 0.0
    one_frame = full.copy()
    one_frame[1:] = False
    np.testing.assert_array_equal(iou_per_step(empty, one_frame), [0.0, 1.0, 1.0])


def test_mse_is_on_the_unit_scale():
    truth = np.zeros((3, 4, 4, 3), np.uint8)
    gen = truth.copy()
    gen[1] = 255
    gen[2, :2] = 51  # half the pixels off by 0.2
    np.testing.assert_allclose(frame_mse(truth, gen), [0.0, 1.0, 0.5 * 0.2**2])


def test_bad_inputs_raise_with_the_shapes():
    m = np.zeros((3, 8, 8), bool)
    for f in (*IOUS, iou_per_step):
        with pytest.raises(ValueError, match="one shape"):
            f(m, np.zeros((4, 8, 8), bool))
        with pytest.raises(ValueError, match="bool"):
            f(m, m.astype(np.uint8))
        with pytest.raises(ValueError, match="no frames"):
            f(m[:0], m[:0])
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="one shape"):
        frame_mse(frames, frames[:2])
    with pytest.raises(ValueError, match="uint8"):
        frame_mse(frames, frames.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# object masks from a real palette

SIZE, STEPS, SIDE = 32, 8, 8


@pytest.fixture(scope="module")
def two_balls():
    """A Balls palette with two objects, and frames ``uint8[8, 32, 32, 3]`` on the backdrop: ball0 a
    static 8x8 square at the top left, ball1 an 8x8 square moving 2 px right per step lower down."""
    spec = next(
        s for s in (sample("balls", np.random.default_rng(i)) for i in range(50)) if len(s.balls) == 2
    )
    palette = palette_for(spec)
    assert palette.n_objects == 2
    colour = {name: palette.rgb[palette.owner.index(k)] for k, name in enumerate(palette.objects)}
    frames = np.empty((STEPS, SIZE, SIZE, 3), np.uint8)
    frames[:] = rgb_uint8("backdrop")
    frames[:, 2 : 2 + SIDE, 2 : 2 + SIDE] = colour["ball0"]
    for t in range(STEPS):
        frames[t, 16 : 16 + SIDE, 4 + 2 * t : 4 + 2 * t + SIDE] = colour["ball1"]
    return palette, frames, colour


def test_mask_metrics_of_a_copy_are_perfect(two_balls):
    palette, frames, _ = two_balls
    out = mask_metrics(frames, frames.copy(), palette)
    assert out["spatial_iou"] == out["spatiotemporal_iou"] == out["weighted_spatial_iou"] == 1.0
    assert out["mse"] == 0.0 and out["steps"] == STEPS
    assert out["iou_per_step"] == [1.0] * STEPS
    assert out["spatial_iou_by_object"] == {"ball0": 1.0, "ball1": 1.0}
    json.dumps(out, allow_nan=False)


def test_mask_metrics_of_a_ball_vanishing_half_way(two_balls):
    """ball1 is painted over from step 4: its footprint spans 22 columns in the truth and 14 in the
    generated video; at steps 4-7 only ball0's 64 px of 128 are shared."""
    palette, frames, colour = two_balls
    gen = frames.copy()
    gen[4:, 16 : 16 + SIDE] = rgb_uint8("backdrop")
    out = mask_metrics(frames, gen, palette)
    assert out["spatial_iou_by_object"]["ball0"] == 1.0
    assert out["spatial_iou_by_object"]["ball1"] == pytest.approx(14 / 22)
    assert out["spatial_iou"] == pytest.approx((64 + 8 * 14) / (64 + 8 * 22))
    np.testing.assert_allclose(out["iou_per_step"], [1.0] * 4 + [0.5] * 4)
    assert out["spatiotemporal_iou"] == pytest.approx(0.75)
    # fractions of frames summed over pixels: ball0 64 in both; ball1 64 in the truth, 32 generated
    assert out["weighted_spatial_iou"] == pytest.approx((64 + 32) / (64 + 64))
    d2 = ((np.asarray(colour["ball1"], float) - rgb_uint8("backdrop")) / 255) ** 2
    expected = d2.sum() * SIDE * SIDE / (SIZE * SIZE * 3)
    np.testing.assert_allclose(out["mse_per_step"], [0.0] * 4 + [expected] * 4)
    assert out["mse"] == pytest.approx(expected / 2)
    json.dumps(out, allow_nan=False)
