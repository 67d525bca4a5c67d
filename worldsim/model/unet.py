"""The denoising network: a small U-Net conditioned by FiLM on noise level, actions and prompt.

It works on a 2x pixel-unshuffled grid (64x64 frames become 32x32 with 4x the channels): half the
resolution costs a quarter of the compute, and a 2x2 block of pixels keeps every pixel's value, so
nothing is blurred away before the network sees it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Shape of the U-Net."""

    in_channels: int = 15  # noisy target (3) + context frames (3 K)
    out_channels: int = 3
    channels: list[int] = field(default_factory=lambda: [64, 96, 128])  # per level, after unshuffle
    blocks_per_level: int = 2
    attention: bool = True  # self-attention at the lowest resolution
    cond_dim: int = 256
    unshuffle: int = 2
    groups: int = 8


LOW_RESOLUTION_PIXELS = 256
"""Grids of at most this many pixels (16x16) are group-normed in the contiguous layout (``GroupNorm``)."""


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same result) that normalises a channels-last activation
    of a low-resolution grid in the contiguous layout and hands it back channels-last.

    PyTorch's channels-last group-norm kernel is several times slower than its contiguous one on
    small grids with few channels per group: at 64 worlds, 32 channels of 16x16 in bfloat16, 1.9 ms
    against 0.3 ms with both copies. At 32x32 and above the channels-last kernel is as fast and the
    copies would cost more, so it keeps it there. Whole U-Nets: 0.73-0.9x the time (README)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = x.shape[-1] * x.shape[-2] <= LOW_RESOLUTION_PIXELS
        if small and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            out = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return out.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class FiLMResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with the second norm's scale and shift set by the condition."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = GroupNorm(min(groups, c_out), c_out, affine=False)
        self.film = nn.Linear(cond_dim, 2 * c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Global attention over a low-resolution grid: lets distant objects (two colliding balls) interact."""

    def __init__(self, channels: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = GroupNorm(min(groups, channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)
        t, _ = self.attn(t, t, t, need_weights=False)
        return x + self.proj(t).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """``F(x, cond)``: ``x[B, in_channels, H, W]`` and ``cond[B, cond_dim]`` to ``[B, out_channels, H, W]``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        u, ch, g = cfg.unshuffle, cfg.channels, cfg.groups
        self.stem = nn.Conv2d(cfg.in_channels * u * u, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        c = ch[0]
        for level, c_level in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(FiLMResBlock(c, c_level, cfg.cond_dim, g))
                c = c_level
                skips.append(c)
            self.down.append(blocks)
            self.downsample.append(
                nn.Conv2d(c, c, 3, stride=2, padding=1) if level < len(ch) - 1 else nn.Identity()
            )
        self.mid = FiLMResBlock(c, c, cfg.cond_dim, g)
        self.attn = SelfAttention(c, g) if cfg.attention else nn.Identity()
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(FiLMResBlock(c + skips.pop(), ch[level], cfg.cond_dim, g))
                c = ch[level]
            self.up.append(blocks)
        self.head_norm = GroupNorm(min(g, c), c)
        self.head = nn.Conv2d(c, cfg.out_channels * u * u, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def stem_on_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The stem (a 3x3 convolution of the unshuffled grid) computed on the frame's own pixels,
        as the one convolution it is: kernel 3u, stride u, padding u, its weights rearranged from the
        stem's. The same sums without moving every input value into the unshuffled layout first,
        which cost more than the convolution (at 64 worlds the stem takes a third of the time, the U-Net
        about 0.85x: README)."""
        u, w = self.cfg.unshuffle, self.stem.weight
        if u == 1:
            return self.stem(x)
        o, c = w.shape[0], w.shape[1] // (u * u)
        # unshuffled channel c*u*u + i*u + j holds pixel (u*Y + i, u*X + j) of input channel c
        full = w.view(o, c, u, u, 3, 3).permute(0, 1, 4, 2, 5, 3).reshape(o, c, 3 * u, 3 * u)
        return F.conv2d(x, full, self.stem.bias, stride=u, padding=u)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        u = self.cfg.unshuffle
        # Channels-last activations let oneDNN run the convolutions without reordering (1.2-1.6x).
        h = self.stem_on_pixels(x).contiguous(memory_format=torch.channels_last)
        stack = []
        for blocks, downsample in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, cond)
                stack.append(h)
            h = downsample(h)
        h = self.attn(self.mid(h, cond))
        for i, blocks in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            for block in blocks:
                h = block(torch.cat([h, stack.pop()], dim=1), cond)
        out = self.head(F.silu(self.head_norm(h)))
        return F.pixel_shuffle(out, u) if u > 1 else out


def fourier_features(x: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of a scalar per sample (the noise level), ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None] * 100.0
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
