"""Writing frame sequences as mp4 (moviepy) and arranging frames side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_mp4(frames_uint8: np.ndarray | Sequence[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write ``frames_uint8[T, H, W, 3]`` to ``path`` as H.264 mp4, atomically.

    moviepy 2.x drops the last frame at some frame rates unless the clip's duration is set to
    exactly ``T / fps``, so it is set here.
    """
    from moviepy import ImageSequenceClip

    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames_uint8]
    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    clip = ImageSequenceClip(frames, fps=fps).with_duration(len(frames) / fps)
    try:
        clip.write_videofile(
            str(tmp),
            fps=fps,
            codec="libx264",
            audio=False,
            logger=None,
            ffmpeg_params=["-pix_fmt", "yuv420p"],
        )
        os.replace(tmp, path)
    finally:
        clip.close()
        tmp.unlink(missing_ok=True)
    return path


def upscale(frame_uint8: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling, so 64x64 frames stay crisp in a video player."""
    return frame_uint8.repeat(factor, axis=0).repeat(factor, axis=1)


def side_by_side(panels: Sequence[np.ndarray], gap_px: int = 2) -> np.ndarray:
    """Concatenate same-height frames ``[H, W, 3]`` left to right with a white gap."""
    h = panels[0].shape[0]
    gap = np.full((h, gap_px, 3), 255, np.uint8)
    out: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if i:
            out.append(gap)
        out.append(p)
    return np.concatenate(out, axis=1)


def grid(frames: Sequence[np.ndarray], columns: int, gap_px: int = 2) -> np.ndarray:
    """Tile same-size frames ``[H, W, 3]`` row by row, ``columns`` per row (blank cells pad the last)."""
    rows = []
    for lo in range(0, len(frames), columns):
        row = list(frames[lo : lo + columns])
        row += [np.full_like(frames[0], 255)] * (columns - len(row))
        rows.append(side_by_side(row, gap_px))
    gap = np.full((gap_px, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for r in rows for part in (r, gap)][:-1], axis=0)
