"""Mask metrics of Physics-IQ: where, when and how much the generated video's masks agree with the truth.

Physics-IQ (Motamed et al. 2025, "Do generative video models understand physical principles?",
github google-deepmind/physics-IQ-benchmark, ``physiq/calculate_and_write_metrics_to_csv.py``)
scores a generated video against the real one with three IoUs of binary per-pixel masks and the
MSE of the frames. Given masks ``bool[T, H, W]`` of the truth and of the generated video:

- spatial IoU ("where"): each video's masks collapsed over time, a pixel on if it is on in any
  frame; the IoU of the two maps. Right place at the wrong time still scores 1.
- spatiotemporal IoU ("where and when"): the IoU of each step's pair of masks, averaged over
  steps (``iou_per_step`` is the curve).
- weighted spatial IoU ("where and how much"): each video collapsed into the fraction of frames
  each pixel is on, then ``sum(min(a, b)) / sum(max(a, b))``. A pixel on twice as often in one
  video counts half. Physics-IQ divides the count by the number of frames as we do; with equal
  lengths the ratio is the same as with raw counts.
- MSE: per step, the mean over pixels and channels of the squared difference of the frames as
  floats in [0, 1] (uint8 / 255), as Physics-IQ computes it. Physics-IQ first shrinks its videos to
  a quarter of their size; ours are small already and are compared at full size.

Edge cases, as in Physics-IQ: two empty masks score 1.0 (nothing to find and nothing found); one
empty against one that is not scores 0.0. Every IoU is therefore in [0, 1] and never NaN.

Physics-IQ's masks are motion masks (pixels that change). Ours are object masks from the colour
extractor (``worldsim.metrics.objects.object_masks``), the union over objects or one object's:
an object at rest counts as much as a moving one, so an object that is lost or invented scores
even if it does not move.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.metrics.frames import check_videos
from worldsim.metrics.objects import Palette, object_masks

DATA_RANGE = 255.0
"""uint8 frames are divided by this before the MSE, so it is on Physics-IQ's [0, 1] scale."""


def _check_masks(truth_masks: np.ndarray, gen_masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, g = np.asarray(truth_masks), np.asarray(gen_masks)
    if t.shape != g.shape or t.ndim != 3:
        raise ValueError(f"masks must both be bool[T, H, W] of one shape, got {t.shape} and {g.shape}")
    if t.dtype != np.bool_ or g.dtype != np.bool_:
        raise ValueError(f"masks must be bool, got {t.dtype} and {g.dtype}; threshold them first (m > 0)")
    if t.shape[0] == 0:
        raise ValueError("masks have no frames (T = 0); the metrics need at least one")
    return t, g


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """``inter / union``, and 1.0 where the union is empty (both masks empty)."""
    inter, union = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    return np.divide(inter, union, out=np.ones_like(union), where=union > 0)


def iou_per_step(truth_masks: np.ndarray, gen_masks: np.ndarray) -> np.ndarray:
    """IoU of each step's masks, ``float64[T]``, of masks ``bool[T, H, W]`` (1.0 where both are empty)."""
    t, g = _check_masks(truth_masks, gen_masks)
    return _ratio((t & g).sum((1, 2)), (t | g).sum((1, 2)))


def spatiotemporal_iou(truth_masks: np.ndarray, gen_masks: np.ndarray) -> float:
    """Physics-IQ's "where and when": the mean over steps of ``iou_per_step``."""
    return float(iou_per_step(truth_masks, gen_masks).mean())


def spatial_iou(truth_masks: np.ndarray, gen_masks: np.ndarray) -> float:
    """Physics-IQ's "where": IoU of the masks ``bool[T, H, W]`` collapsed over time (on in any frame)."""
    t, g = _check_masks(truth_masks, gen_masks)
    a, b = t.any(0), g.any(0)
    return float(_ratio((a & b).sum(), (a | b).sum()))


def weighted_spatial_iou(truth_masks: np.ndarray, gen_masks: np.ndarray) -> float:
    """Physics-IQ's "where and how much": ``sum(min) / sum(max)`` of the fraction of frames each
    pixel is on, in each video of masks ``bool[T, H, W]``."""
    t, g = _check_masks(truth_masks, gen_masks)
    a, b = t.mean(0), g.mean(0)
    return float(_ratio(np.minimum(a, b).sum(), np.maximum(a, b).sum()))


def frame_mse(truth: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """MSE per step, ``float64[T]``, of videos ``uint8[T, H, W, 3]`` on the [0, 1] pixel scale
    (divide by 255 first, as Physics-IQ does): 0 for identical frames, 1 for black against white."""
    t, g = check_videos(truth, gen)
    diff = (t.astype(np.float64) - g) / DATA_RANGE
    return (diff**2).mean((1, 2, 3))


def mask_metrics(truth_frames: np.ndarray, gen_frames: np.ndarray, palette: Palette) -> dict[str, Any]:
    """The four Physics-IQ summaries of two videos ``uint8[T, H, W, 3]``, JSON-ready.

    Masks are the palette's object masks of each video, united over objects. Returns the spatial,
    spatiotemporal and weighted spatial IoUs and the mean MSE (``"mse"``, [0, 1] scale); the curves
    ``"iou_per_step"`` and ``"mse_per_step"``; and ``"spatial_iou_by_object"``, each object's own
    spatial IoU keyed by its name in ``palette.objects`` (1.0 for an object absent from both).
    """
    t, g = check_videos(truth_frames, gen_frames)
    if len(t) == 0:
        raise ValueError("videos have no frames (T = 0); the metrics need at least one")
    tm, gm = object_masks(t, palette), object_masks(g, palette)  # [T, N, H, W]
    tu, gu = tm.any(1), gm.any(1)
    mse = frame_mse(t, g)
    steps = iou_per_step(tu, gu)
    return {
        "steps": len(t),
        "spatial_iou": spatial_iou(tu, gu),
        "spatiotemporal_iou": float(steps.mean()),
        "weighted_spatial_iou": weighted_spatial_iou(tu, gu),
        "mse": float(mse.mean()),
        "iou_per_step": steps.tolist(),
        "mse_per_step": mse.tolist(),
        "spatial_iou_by_object": {
            name: spatial_iou(tm[:, k], gm[:, k]) for k, name in enumerate(palette.objects)
        },
    }
