"""What a generator's flow learns from: each object's centroid motion, painted where it is now.

The datasets hold frames, not motion fields; but every object of a worldsim scene is one flat colour
the colour extractor finds (``worldsim.metrics.objects``), so an object's displacement over a step is
the move of its centroid. Painted over the object's mask in the *last* frame, it is the forward field
that carries the object whole (``worldsim.model.warp``). Scenery is given no motion, at a low
weight: what an object uncovers is the change's job. (The mask is not dilated: scenery pixels around
an object moved with it would, once the field is smoothed within each colour, move part of the way
and land over the object.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from worldsim.metrics.objects import MIN_VISIBLE_PX, Palette, object_masks, palette_for

SCENERY_WEIGHT = 0.05
"""Weight of the zero motion asked of every pixel outside the objects' (dilated) next masks."""


def _centroids(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids ``[..., N, 2]`` (u, v) in pixels and visibility ``[..., N]`` of masks ``[..., N, H, W]``."""
    h, w = masks.shape[-2:]
    count = masks.sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (masks.sum(-2) * np.arange(w)).sum(-1) / count
        v = (masks.sum(-1) * np.arange(h)).sum(-1) / count
    return np.stack([u, v], -1), count >= MIN_VISIBLE_PX


def object_flow(
    last_uint8: np.ndarray, next_uint8: np.ndarray, palettes: Sequence[Palette | None]
) -> tuple[np.ndarray, np.ndarray]:
    """The forward motion field ``float32[B, 2, H, W]`` (pixels, u then v) from ``last_uint8[B, H, W, 3]``
    to ``next_uint8[B, H, W, 3]``, and its weight ``float32[B, 1, H, W]``. ``palettes[b]`` is row b's
    scene palette, or None for a row with no motion to learn (a text-to-video row: its "last frame"
    is the empty frame), which gets zero motion at the scenery weight everywhere.

    An object seen in both frames moves by the change of its centroid, over its mask in the last
    frame (weight 1); every other pixel stays (weight ``SCENERY_WEIGHT``). Where two objects'
    regions overlap, the one later in the palette wins.
    """
    last, nxt = np.asarray(last_uint8), np.asarray(next_uint8)
    if last.shape != nxt.shape or last.ndim != 4 or len(palettes) != len(last):
        raise ValueError(
            f"object_flow takes two uint8[B, H, W, 3] batches and B palettes, got {last.shape}, "
            f"{nxt.shape} and {len(palettes)}"
        )
    b, h, w = last.shape[:3]
    flow = np.zeros((b, 2, h, w), np.float32)
    weight = np.full((b, 1, h, w), SCENERY_WEIGHT, np.float32)
    for row, palette in enumerate(palettes):
        if palette is None or palette.n_objects == 0:
            continue
        masks = object_masks(np.stack([last[row], nxt[row]]), palette)  # [2, N, H, W]
        centre, seen = _centroids(masks)
        for k in range(palette.n_objects):
            if seen[0, k] and seen[1, k]:
                region = masks[0, k]
                flow[row, :, region] = (centre[1, k] - centre[0, k]).astype(np.float32)
                weight[row, 0, region] = 1.0
    return flow, weight


@functools.cache
def _palette_of_spec(spec_json: str) -> Palette:
    import json

    from worldsim.scenes import spec_from_dict

    return palette_for(spec_from_dict(json.loads(spec_json)))


def episode_palettes(
    dataset: Any, episodes: np.ndarray, rows_with_motion: np.ndarray
) -> list[Palette | None]:
    """The palette of each row's episode (``dataset.episode(e).spec``), None where
    ``rows_with_motion`` is False."""
    import json

    out: list[Palette | None] = []
    for e, real in zip(episodes, rows_with_motion, strict=True):
        spec = dataset.episode(int(e)).spec_dict
        out.append(_palette_of_spec(json.dumps(spec, sort_keys=True)) if real else None)
    return out
