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

HOLE = 0.0
"""What a pixel an object moved away from (and nothing moved onto) holds before the change is drawn:
mid grey in [-1, 1], a value no scene draws, so the change can tell a hole from the scene behind."""


def _check(frames: torch.Tensor, flow_px: torch.Tensor) -> None:
    if frames.ndim != 4 or flow_px.shape != (frames.shape[0], 2, *frames.shape[2:]):
        raise ValueError(
            f"a warp takes frames [B, C, H, W] and a flow [B, 2, H, W], got {tuple(frames.shape)} "
            f"and {tuple(flow_px.shape)}"
        )


def region_mean_flow(
    flow_px: torch.Tensor, frames: torch.Tensor, tol: float = 0.05, reach: int = 24
) -> torch.Tensor:
    """Each pixel's flow replaced by the mean flow of its region: the pixels of its colour connected to
    it (4-neighbours, colours within ``tol``), found up to ``reach`` pixels away.

    A predicted field varies a little across an object; rounded per pixel, neighbours would land a
    pixel apart and crack it into rings (measured: balls shredded within 2 steps). With one mean per
    region, an object of one flat colour moves as one, by one whole-pixel step; the backdrop, one
    vast region, moves by the mean of a field that is zero nearly everywhere on it, which is none.
    """
    _check(frames, flow_px)
    b, _, h, w = frames.shape
    right = (frames[..., :, 1:] - frames[..., :, :-1]).abs().amax(1) < tol  # [B, H, W-1]: same colour
    down = (frames[..., 1:, :] - frames[..., :-1, :]).abs().amax(1) < tol  # [B, H-1, W]
    labels = torch.arange(h * w, device=frames.device).view(1, h, w).repeat(b, 1, 1)
    for _ in range(reach):  # each pass carries a region's largest label at least a pixel further
        labels[..., :, :-1] = torch.where(
            right, torch.maximum(labels[..., :, :-1], labels[..., :, 1:]), labels[..., :, :-1]
        )
        labels[..., :, 1:] = torch.where(
            right, torch.maximum(labels[..., :, 1:], labels[..., :, :-1]), labels[..., :, 1:]
        )
        labels[..., :-1, :] = torch.where(
            down, torch.maximum(labels[..., :-1, :], labels[..., 1:, :]), labels[..., :-1, :]
        )
        labels[..., 1:, :] = torch.where(
            down, torch.maximum(labels[..., 1:, :], labels[..., :-1, :]), labels[..., 1:, :]
        )
    region = (torch.arange(b, device=frames.device).view(b, 1, 1) * (h * w) + labels).view(-1)
    flows = flow_px.permute(0, 2, 3, 1).reshape(-1, 2)
    sums = torch.zeros_like(flows).index_add_(0, region, flows)
    counts = torch.zeros(len(flows), device=flows.device, dtype=flows.dtype).index_add_(
        0, region, torch.ones_like(flows[:, 0])
    )
    return (sums[region] / counts[region, None]).view(b, h, w, 2).permute(0, 3, 1, 2)


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
    """The generator's warp: ``frames`` splatted forward by ``flow_px`` averaged over each region."""
    return splat_forward(frames, region_mean_flow(flow_px, frames))
