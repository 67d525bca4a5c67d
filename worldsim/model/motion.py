"""How far each flat colour moved between the context frames: velocities handed to a flow, not read.

A flow U-Net reads an object's speed off the context's pixels, and what it learns is shrunk towards
the mean: on Balls, where MuJoCo's next move is 0.97x the move just seen, the flow predicts 0.83x
(README, "Why the flow's balls fall behind"). In its own rollouts the shrinkage compounds step after step. The
move of a colour's centroid between two frames is the speed itself, to a tenth of a pixel on
MuJoCo's frames and exactly the generator's own whole-pixel moves on its frames; given as inputs,
"keep moving as just seen" is a copy, not a measurement the network must learn to make.

Each object of a scene is one flat colour, so pixels are grouped by colour alone (no palette, no
matching of regions): a colour's centroid in each context frame, its moves between consecutive
frames, painted on the pixels of that colour in the last frame. Colours are binned to 16 levels a
channel: a scene's colours vary by a grey level or two, and its objects differ by far more. A
colour within a few levels of a bin's edge (Push's pusher at 31, the 242 of Balls' blue and yellow)
may split across two bins where a generator drifts its shade, which gives the halves false moves;
keying pixels by the nearest colour of the scene's palette would not, and is not done here. Colours
covering more than ``max_share`` of the last frame are scenery (floor, walls, road), whose centroid
shifts when something passes in front: they get no move.
"""

from __future__ import annotations

import torch

LEVELS = 16
"""Bins per colour channel: 16 grey levels wide each."""

_SHIFT = 4  # 256 grey levels / LEVELS bins: a level's bin is its top four bits


def colour_keys(frames_uint8: torch.Tensor) -> torch.Tensor:
    """The colour bin of every pixel, ``int32[..., H, W]``, of frames ``uint8[..., H, W, 3]``."""
    bins = (frames_uint8 >> _SHIFT).int()
    return (bins[..., 0] * LEVELS + bins[..., 1]) * LEVELS + bins[..., 2]


def colour_moves(
    context_uint8: torch.Tensor, context_mask: torch.Tensor | None = None, max_share: float = 0.1
) -> torch.Tensor:
    """The move ``(u, v)`` in pixels of each colour's centroid between consecutive frames of
    ``context_uint8[B, K, H, W, 3]``, on the last frame's pixels: ``float[B, 2 (K - 1), H, W]``,
    channels ``u, v`` of frames 0 to 1, then 1 to 2, and so on (the last pair last).

    A pixel gets no move (zero) where its colour is missing from either frame of a pair, or covers
    more than ``max_share`` of the last frame; a pair with a padded frame (``context_mask[B, K]``
    False: before an episode began, or text-to-video's empty frames) has no moves.
    """
    if context_uint8.ndim != 5 or context_uint8.shape[-1] != 3 or context_uint8.dtype != torch.uint8:
        raise ValueError(
            f"colour_moves takes a context uint8[B, K, H, W, 3], got {context_uint8.dtype} "
            f"{tuple(context_uint8.shape)}"
        )
    b, k, h, w, _ = context_uint8.shape
    device = context_uint8.device
    keys = colour_keys(context_uint8)  # [B, K, H, W]
    # Number the colours that occur anywhere in the batch (tens in a scene, of LEVELS^3 bins), so the
    # per-colour sums below are a few thousand entries, not millions.
    seen = torch.bincount(keys.reshape(-1), minlength=LEVELS**3) > 0
    n = int(seen.sum())
    # each frame's colours numbered apart: frame f's colour i is f * n + i
    offsets = (torch.arange(b * k, device=device, dtype=torch.int32) * n).view(b, k, 1, 1)
    keys = (torch.cumsum(seen, 0, dtype=torch.int32) - 1).index_select(0, keys.reshape(-1)).view(b, k, h, w)
    flat = (keys + offsets).view(-1)
    v, u = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    size = b * k * n
    count = torch.bincount(flat, minlength=size).float().view(b, k, n)
    sums = [
        torch.bincount(flat, weights=c.reshape(1, h * w).expand(b * k, h * w).reshape(-1), minlength=size)
        for c in (u, v)
    ]
    centre = torch.stack(sums, -1).float().view(b, k, n, 2) / count.clamp_min(1.0)[..., None]
    present = count > 0
    small = count[:, -1:] <= max_share * h * w  # the size in the last frame decides
    ok = present[:, 1:] & present[:, :-1] & small  # [B, K-1, N]
    if context_mask is not None:
        real = context_mask.to(device).bool()
        ok = ok & (real[:, 1:] & real[:, :-1])[..., None]
    moves = (centre[:, 1:] - centre[:, :-1]) * ok[..., None]  # [B, K-1, N, 2]
    per_colour = moves.permute(0, 2, 1, 3).reshape(b * n, 2 * (k - 1))  # a row of moves per colour
    last = (torch.arange(b, device=device, dtype=torch.int32).view(b, 1, 1) * n + keys[:, -1]).view(-1)
    painted = per_colour.index_select(0, last).view(b, h, w, 2 * (k - 1))
    return painted.permute(0, 3, 1, 2)
