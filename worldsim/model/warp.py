"""Moving pixels by a displacement field: how a generator with a flow carries objects forward whole.

A frame of a flat-colour scene changes mostly by objects moving. A generator that draws each pixel's
change as its mean prediction turns an object whose next position it is unsure of into a faint blend
of the places it may be, and over a rollout that blend dissolves into speckle (README, "Where Balls
loses objects"). Moving the last frame's pixels by a predicted displacement instead moves an unsure
object whole, to its mean position, and copies what stands still exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp_backward(frames: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """Each output pixel ``p`` takes the colour of ``frames`` at ``p - flow_px[p]``, rounded to the
    nearest pixel and clamped to the frame: ``frames[B, C, H, W]``, ``flow_px[B, 2, H, W]`` as (u, v)
    in pixels, u to the right and v down.

    Nearest, not bilinear: a bilinear warp blends the colours at an object's edge on every step, and
    over a long rollout the object blurs into the background; a nearest warp keeps flat colours flat.
    """
    if frames.ndim != 4 or flow_px.shape != (frames.shape[0], 2, *frames.shape[2:]):
        raise ValueError(
            f"warp_backward takes frames [B, C, H, W] and flow [B, 2, H, W], got {tuple(frames.shape)} "
            f"and {tuple(flow_px.shape)}"
        )
    b, _, h, w = frames.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=frames.device, dtype=flow_px.dtype),
        torch.arange(w, device=frames.device, dtype=flow_px.dtype),
        indexing="ij",
    )
    src_u = u[None] - flow_px[:, 0]
    src_v = v[None] - flow_px[:, 1]
    # grid_sample's normalised coordinates with align_corners=True: -1 and 1 are the outer pixel centres.
    grid = torch.stack([2 * src_u / max(w - 1, 1) - 1, 2 * src_v / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(
        frames, grid.to(frames.dtype), mode="nearest", padding_mode="border", align_corners=True
    )
