"""Frame metrics: PSNR and SSIM per step between two videos, and the frozen-frame baseline.

Both metrics compare videos ``uint8[T, H, W, 3]`` step by step and return one value per step.
SSIM is the standard one of Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, data range 255, computed per colour channel over the "valid" windows (no
padding) and averaged over windows and channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DATA_RANGE = 255.0
PSNR_CAP_DB = 100.0
"""``frame_metrics`` reports identical frames (infinite PSNR) as this, so summaries stay finite."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
_CHUNK_FRAMES = 256  # bounds SSIM's working memory on long videos


def check_videos(truth: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two videos ``uint8[T, H, W, 3]`` of one shape, as arrays; a ``ValueError`` otherwise."""
    t, g = np.asarray(truth), np.asarray(gen)
    if t.shape != g.shape or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"videos must both be [T, H, W, 3] of one shape, got {t.shape} and {g.shape}")
    if t.dtype != np.uint8 or g.dtype != np.uint8:
        raise ValueError(f"videos must be uint8, got {t.dtype} and {g.dtype}")
    return t, g


def psnr(truth: np.ndarray, gen: np.ndarray, max_db: float | None = None) -> np.ndarray:
    """PSNR (dB, data range 255) per step, ``float64[T]``, of videos ``uint8[T, H, W, 3]``.

    Identical frames give ``inf``, or ``max_db`` if given (values above it are clipped to it).
    """
    t, g = check_videos(truth, gen)
    mse = ((t.astype(np.float64) - g) ** 2).mean((1, 2, 3))
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(DATA_RANGE**2 / mse)
    return out if max_db is None else np.minimum(out, max_db)


def _gaussian_window() -> np.ndarray:
    x = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim(truth: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """Mean SSIM per step, ``float64[T]``, of videos ``uint8[T, H, W, 3]`` (at least 11x11 pixels).

    1.0 for identical frames.
    """
    t, g = check_videos(truth, gen)
    if min(t.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {t.shape[1:3]}"
        )
    win = _gaussian_window()
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2

    def blur(a: np.ndarray) -> np.ndarray:  # separable Gaussian over [..., H, W], valid windows only
        a = sliding_window_view(a, SSIM_WINDOW, axis=-1) @ win
        return sliding_window_view(a, SSIM_WINDOW, axis=-2) @ win

    out = []
    for start in range(0, len(t), _CHUNK_FRAMES):
        x = np.moveaxis(t[start : start + _CHUNK_FRAMES], -1, 1).astype(np.float64)  # [n, C, H, W]
        y = np.moveaxis(g[start : start + _CHUNK_FRAMES], -1, 1).astype(np.float64)
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(s.mean((1, 2, 3)))
    return np.concatenate(out) if out else np.zeros(0)


def frozen_video(context_last_frame: np.ndarray, steps: int) -> np.ndarray:
    """The "repeat the last frame" baseline: ``uint8[steps, H, W, 3]``, every frame a copy of
    ``context_last_frame`` (``uint8[H, W, 3]``)."""
    f = np.asarray(context_last_frame)
    if f.ndim != 3 or f.shape[-1] != 3:
        raise ValueError(f"the last context frame must be [H, W, 3], got {list(f.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return np.repeat(f[None], steps, axis=0)


def frame_metrics(truth: np.ndarray, gen: np.ndarray, horizons: Sequence[int] = (30, 100)) -> dict[str, Any]:
    """PSNR and SSIM curves and their means over the first ``h`` steps of each horizon (and all
    steps), JSON-ready. PSNR is capped at ``PSNR_CAP_DB``; a horizon longer than the videos gives
    ``None``."""
    p, s = psnr(truth, gen, max_db=PSNR_CAP_DB), ssim(truth, gen)
    out: dict[str, Any] = {"psnr_db": p.tolist(), "ssim": s.tolist(), "steps": len(p)}
    for h in (*horizons, None):
        key = "all" if h is None else f"h{h}"
        if len(p) == 0 or (h is not None and h > len(p)):
            out[key] = {"psnr_db": None, "ssim": None}
        else:
            out[key] = {"psnr_db": float(p[:h].mean()), "ssim": float(s[:h].mean())}
    return out
