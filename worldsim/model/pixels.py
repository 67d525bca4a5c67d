"""Frames between disk and network: ``uint8[..., H, W, 3]`` and ``float[..., 3, H, W]`` in [-1, 1]."""

from __future__ import annotations

import torch


def to_float(frames_uint8: torch.Tensor) -> torch.Tensor:
    """``uint8[..., H, W, 3]`` to ``float[..., 3, H, W]`` in [-1, 1]."""
    return frames_uint8.permute(*range(frames_uint8.ndim - 3), -1, -3, -2).float() / 127.5 - 1.0


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """``float[..., 3, H, W]`` in [-1, 1] to ``uint8[..., H, W, 3]``, rounded as a frame on disk is."""
    x = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(*range(x.ndim - 3), -2, -1, -3)
