"""Physics-consistency metrics: they judge arrays (frames, masks, states, camera parameters) only.

Nothing here imports ``worldsim.model``: any generator's output, even one that is not ours, can be
scored. ``objects`` finds objects by colour and compares their centroids with the truth (in pixels
and, lifted through the camera, in metres); ``frames`` has PSNR, SSIM and the frozen-frame baseline.
"""

from __future__ import annotations

from worldsim.metrics.frames import PSNR_CAP_DB, frame_metrics, frozen_video, psnr, ssim
from worldsim.metrics.objects import (
    DEFAULT_HORIZONS,
    MIN_VISIBLE_PX,
    CentroidErrors,
    ObjectTracks,
    Palette,
    Plane,
    centroid_errors,
    classify,
    colour_tolerance,
    compare_tracks,
    default_penalty_px,
    extract_objects,
    lift_centroids,
    object_masks,
    object_planes,
    palette_for,
    pixel_to_plane,
    true_points_m,
)

__all__ = [
    "DEFAULT_HORIZONS",
    "MIN_VISIBLE_PX",
    "PSNR_CAP_DB",
    "CentroidErrors",
    "ObjectTracks",
    "Palette",
    "Plane",
    "centroid_errors",
    "classify",
    "colour_tolerance",
    "compare_tracks",
    "default_penalty_px",
    "extract_objects",
    "frame_metrics",
    "frozen_video",
    "lift_centroids",
    "object_masks",
    "object_planes",
    "palette_for",
    "pixel_to_plane",
    "psnr",
    "ssim",
    "true_points_m",
]
