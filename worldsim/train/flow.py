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
    last_uint8: np.ndarray,
    next_uint8: np.ndarray,
    palettes: Sequence[Palette | None],
    moved_from: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The forward motion field ``float32[B, 2, H, W]`` (pixels, u then v) from ``last_uint8[B, H, W, 3]``
    to ``next_uint8[B, H, W, 3]``, and its weight ``float32[B, 1, H, W]``. ``palettes[b]`` is row b's
    scene palette, or None for a row with no motion to learn (a text-to-video row: its "last frame"
    is the empty frame), which gets zero motion at the scenery weight everywhere.

    An object seen in both frames moves by the change of its centroid, over its mask in the last
    frame (weight 1); every other pixel stays (weight ``SCENERY_WEIGHT``). Where two objects'
    regions overlap, the one later in the palette wins.

    ``moved_from`` (``uint8[B, H, W, 3]``): the move is measured from this frame's centroid to the
    next frame's instead, and still painted over the object's mask in ``last_uint8``. With MuJoCo's
    frame here and the generator's own frame as ``last_uint8``, the field asks the generator to move
    each object as MuJoCo moved it over the step, from wherever its rollout has put it (an object
    must be seen in all three frames).
    """
    last, nxt = np.asarray(last_uint8), np.asarray(next_uint8)
    origin = last if moved_from is None else np.asarray(moved_from)
    if last.shape != nxt.shape or origin.shape != last.shape or last.ndim != 4 or len(palettes) != len(last):
        raise ValueError(
            f"object_flow takes uint8[B, H, W, 3] batches of one shape and B palettes, got {last.shape}, "
            f"{nxt.shape}, {origin.shape} and {len(palettes)}"
        )
    b, h, w = last.shape[:3]
    flow = np.zeros((b, 2, h, w), np.float32)
    weight = np.full((b, 1, h, w), SCENERY_WEIGHT, np.float32)
    o = 0 if moved_from is None else 2  # which of the stacked frames the move is measured from
    for row, palette in enumerate(palettes):
        if palette is None or palette.n_objects == 0:
            continue
        frames = [last[row], nxt[row]] + ([] if moved_from is None else [origin[row]])
        masks = object_masks(np.stack(frames), palette)  # [2 or 3, N, H, W]
        centre, seen = _centroids(masks)
        for k in range(palette.n_objects):
            if seen[0, k] and seen[1, k] and seen[o, k]:
                region = masks[0, k]
                flow[row, :, region] = (centre[1, k] - centre[o, k]).astype(np.float32)
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


def rigid_context(context_uint8: np.ndarray, palettes: Sequence[Palette | None]) -> np.ndarray:
    """Context windows ``uint8[B, K, H, W, 3]`` as a generator with a flow would have made them: from
    the first frame on, each frame is the one before it warped (``worldsim.model.warp``, whole pixels
    per region) by each object's move to where the true next frame has it. Rows whose palette is None
    are left as they are.

    Why: MuJoCo draws a ball a fraction of a pixel further on by changing its outline, and a flow
    learned on MuJoCo's contexts may read speed partly from those outlines, which its own rollout,
    moving a ball whole, never changes (on Balls it keeps 0.9 of a ball's speed teacher-forced, 0.55
    in rollouts; learning from these contexts did not change that: README). Each object keeps its
    first outline and steps by whole pixels, staying within rounding of MuJoCo's path, so the move it
    is taught from such a context (``object_flow`` from the made last frame to the true next one) is
    what a rollout asks. The scenery comes from the true frames (what a rollout's change draws), the
    objects from the warp."""
    import torch

    from worldsim.model.warp import warp
    from worldsim.model.world_model import to_float, to_uint8

    context = np.asarray(context_uint8)
    if context.ndim != 5 or len(palettes) != len(context):
        raise ValueError(
            f"rigid_context takes uint8[B, K, H, W, 3] and B palettes, got {context.shape} and {len(palettes)}"
        )
    out = context.copy()
    rows = [i for i, p in enumerate(palettes) if p is not None and p.n_objects > 0]
    if not rows:
        return out
    row_palettes = [palettes[i] for i in rows]
    for t in range(1, context.shape[1]):
        field, _ = object_flow(out[rows, t - 1], context[rows, t], row_palettes)
        moved = warp(to_float(torch.from_numpy(out[rows, t - 1])), torch.from_numpy(field))
        made = to_uint8(moved).numpy()
        for j, (i, palette) in enumerate(zip(rows, row_palettes, strict=True)):
            # the scenery from the true frame: in a rollout the change repairs what the warp's hole
            # filling gets wrong (a wedge of a pole a ball uncovered), which three warps in a row
            # without a change would pile up; objects from the warp, and the warp's scenery where
            # the true frame has an object the made frame does not
            masks = object_masks(np.stack([made[j], context[i, t]]), palette).any(1)  # [2, H, W]
            out[i, t] = np.where((masks[0] | masks[1])[..., None], made[j], context[i, t])
    return out
