"""Moving pixels by a displacement field: how a generator with a flow carries objects forward whole.

A frame of a flat-colour scene changes mostly by objects moving. A generator that draws each pixel's
change as its mean prediction turns an object whose next position it is unsure of into a faint blend
of the places it may be, and over a rollout that blend dissolves into speckle (README, "Where Balls
loses objects"). Moving the last frame's pixels by a predicted displacement instead moves an unsure
object whole, to its mean position, and copies what stands still exactly.

The field is *forward*: it says where each pixel of the last frame goes. A backward field (where
each pixel of the next frame comes from) lives on the next frame's pixels, so where an unsure object
may go the field's mean mixes "comes from the object" with "stays": measured on Balls, the warp then
copies the object into every place it may go, and balls grow into blobs (README). A forward field
lives on pixels the model sees, and its mean over an object's possible moves is one move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HOLE = 0.0
"""What a pixel an object moved away from (and nothing moved onto) holds before the change is drawn:
mid grey in [-1, 1], a value no scene draws, so the change can tell a hole from the scene behind."""


def _check(frames: torch.Tensor, flow_px: torch.Tensor) -> None:
    if frames.ndim != 4 or flow_px.shape != (frames.shape[0], 2, *frames.shape[2:]):
        raise ValueError(
            f"a warp takes frames [B, C, H, W] and a flow [B, 2, H, W], got {tuple(frames.shape)} "
            f"and {tuple(flow_px.shape)}"
        )


def smooth_flow(
    flow_px: torch.Tensor, frames: torch.Tensor, radius: int = 1, tol: float = 0.05
) -> torch.Tensor:
    """Each pixel's flow averaged over the pixels of its own colour within ``radius``.

    A predicted field varies a little across an object; rounded per pixel, neighbours of one object
    would land a pixel apart and crack it. Averaged over the object's own colour, the field is near
    uniform on it, and the averaging never crosses into a differently coloured neighbour.
    """
    _check(frames, flow_px)
    b, c, h, w = frames.shape
    k = 2 * radius + 1
    cols = F.unfold(frames, k, padding=radius).view(b, c, k * k, h * w)
    inside = F.unfold(torch.ones(1, 1, h, w, dtype=frames.dtype, device=frames.device), k, padding=radius)
    same = ((cols - frames.reshape(b, c, 1, h * w)).abs().amax(1) < tol) & (inside.view(1, k * k, h * w) > 0)
    flows = F.unfold(flow_px, k, padding=radius).view(b, 2, k * k, h * w)
    same = same[:, None].to(flow_px.dtype)
    return ((flows * same).sum(2) / same.sum(2).clamp_min(1.0)).view(b, 2, h, w)


def splat_forward(frames: torch.Tensor, flow_px: torch.Tensor, hole: float = HOLE) -> torch.Tensor:
    """Move every pixel of ``frames[B, C, H, W]`` by ``flow_px[B, 2, H, W]`` ((u, v) pixels, u to the
    right, v down), rounded to whole pixels. Pixels with a zero move stay; a moving pixel leaves
    ``hole`` behind unless another lands on it, and lands over whatever stands there (of two that
    land on one place, one wins); pixels moved out of the frame are gone.

    Whole pixels, not bilinear splats: blending an object's edge into the background on every step
    blurs it away over a long rollout; rounding keeps flat colours flat.
    """
    _check(frames, flow_px)
    b, c, h, w = frames.shape
    step = flow_px.round().long()
    moving = (step != 0).any(1)  # [B, H, W]
    v, u = torch.meshgrid(
        torch.arange(h, device=frames.device), torch.arange(w, device=frames.device), indexing="ij"
    )
    du, dv = u[None] + step[:, 0], v[None] + step[:, 1]
    lands = moving & (du >= 0) & (du < w) & (dv >= 0) & (dv < h)
    out = torch.where(moving[:, None], torch.full_like(frames, hole), frames)
    out = out.permute(0, 2, 3, 1).reshape(-1, c).clone()  # [B*H*W, C]
    dest = (torch.arange(b, device=frames.device).view(b, 1, 1) * h + dv) * w + du
    out[dest[lands]] = frames.permute(0, 2, 3, 1)[lands]
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def warp(frames: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """The generator's warp: ``frames`` splatted forward by ``flow_px`` smoothed within each colour."""
    return splat_forward(frames, smooth_flow(flow_px, frames))
