"""A map of the agents a prompt scripts, drawn where they will be in the frame being made.

Drive's lead car and pedestrian move on a script the prompt fixes (the lead car at its speed from
its gap, the pedestrian waiting at the kerb at ``x`` and crossing from its start time), and they
come into view at a distance no K frames show: the road looks the same everywhere. Told the distance
and the clock as numbers (``odometer``, ``clock_frames``), a generator must still form "the prompt's
``x`` minus the distance is 9.7 m" to a fifth of a metre through its conditioning, and in 3,000 steps
it did not (it draws pedestrians 20-40 m early, README "A map of what the prompt scripts"). The
script map hands it the answer as pixels: each scripted agent's body, projected through the
scene's camera from where the script puts it at the frame's time and where the camera is (the
odometer's distance plus the last step's, the frame being one step on), painted in its colour. The
U-Net reads it beside the context, so drawing the agent is copying a shape it is shown, not timing
an event. Nothing of the truth enters: the map is the prompt, the clock and the generator's own
odometer. Push's prompt fixes one thing its frames can hide, the goal marker: its map is the goal's
disc, for a generator that would otherwise forget a marker covered for K frames.

Tensors and numbers only: the camera comes in a ``ScriptMapConfig``, the agents from a caller's
script (``Script``: a function of time giving objects with the fields of
``worldsim.scenes.base.Footprint``, which ``worldsim.scenes.script_of`` makes from a spec).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

SCRIPT_MAP_CHANNELS = 4  # coverage, then the agents' colour (in the frames' [-1, 1]) times coverage

Script = Callable[[float], Sequence[Any]]  # time (s) -> footprints (``worldsim.scenes.base.Footprint``)


@dataclass
class ScriptMapConfig:
    """The camera the map is drawn through (a scene's, in its pixels) and the frames' rate."""

    rotation: list[list[float]]  # world to camera rows: right, down, forward
    position_m: list[float]  # the camera's position when it has travelled nothing
    intrinsics: list[list[float]]  # K, pixels
    follows: bool  # the camera moves along x with the car (the odometer's distance)
    control_hz: float  # frames per second: frame i is at i / control_hz seconds

    def to_dict(self) -> dict:
        return asdict(self)


def project_boxes(footprints: np.ndarray, camera_x_m: np.ndarray, cfg: ScriptMapConfig) -> np.ndarray:
    """Pixel boxes ``[B, N, 4]`` (u0, u1, v0, v1) of footprint rows ``[B, N, 6]`` (x, y, bottom, top,
    half_x, half_y, metres) seen by the camera moved ``camera_x_m[B]`` along x: the box around the
    body's eight projected corners (its silhouette, for a camera looking straight down)."""
    signs = np.array([[sx, sy] for sx in (1, -1) for sy in (1, -1)] * 2, dtype=float)
    corners = np.empty((*footprints.shape[:2], 8, 3))
    corners[..., :2] = footprints[..., None, :2] + signs * footprints[..., None, 4:6]
    corners[..., :4, 2] = footprints[..., None, 2]
    corners[..., 4:, 2] = footprints[..., None, 3]
    pos = np.asarray(cfg.position_m, float) + np.zeros((len(camera_x_m), 3))
    if cfg.follows:
        pos[:, 0] += camera_x_m
    cam = (corners - pos[:, None, None, :]) @ np.asarray(cfg.rotation, float).T
    uvw = cam @ np.asarray(cfg.intrinsics, float).T
    uv = uvw[..., :2] / np.maximum(uvw[..., 2:3], 1e-6)
    return np.stack([uv[..., 0].min(-1), uv[..., 0].max(-1), uv[..., 1].min(-1), uv[..., 1].max(-1)], -1)


def coverage(boxes: torch.Tensor, round_: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """How much of each pixel each box covers, ``[B, N, H, W]`` in [0, 1]: by area for a box, and for
    an ellipse (``round_``) by the distance to its edge, one pixel wide. (An upright cylinder seen
    from above near the frame's edge is the hull of its two end discs, not the ellipse in their box:
    the pedestrian's mask overlaps MuJoCo's by 0.75-0.9 as it enters, 0.9-1.0 once in view, and its
    centroid is right; the U-Net draws the shape, the map says where.)"""
    u = torch.arange(width, dtype=torch.float32, device=boxes.device)
    v = torch.arange(height, dtype=torch.float32, device=boxes.device)
    u0, u1, v0, v1 = (boxes[..., i, None, None] for i in range(4))
    rect = (torch.minimum(u + 1, u1) - torch.maximum(u, u0)).clamp(0, 1) * (
        torch.minimum(v[:, None] + 1, v1) - torch.maximum(v[:, None], v0)
    ).clamp(0, 1)
    cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
    ru, rv = ((u1 - u0) / 2).clamp_min(1e-3), ((v1 - v0) / 2).clamp_min(1e-3)
    dist = torch.sqrt(((u + 0.5 - cu) / ru) ** 2 + ((v[:, None] + 0.5 - cv) / rv) ** 2)
    ellipse = ((1 - dist) * torch.minimum(ru, rv) + 0.5).clamp(0, 1)
    return torch.where(round_[..., None, None], ellipse, rect)


def paint(
    scripts: Sequence[Script],
    frame_index: torch.Tensor,
    camera_x_m: torch.Tensor,
    cfg: ScriptMapConfig,
    height: int,
    width: int,
) -> torch.Tensor:
    """The script map ``float[B, 4, H, W]`` of frame ``frame_index[B]`` with each world's camera
    ``camera_x_m[B]`` along the road: coverage, and the agents' colours times it (where two overlap,
    the one later in the script is on top)."""
    b = len(scripts)
    times = frame_index.detach().cpu().double().numpy() / cfg.control_hz
    per_world = [list(script(float(t))) for script, t in zip(scripts, times, strict=True)]
    n = max((len(f) for f in per_world), default=0)
    device = camera_x_m.device
    out = torch.zeros(b, SCRIPT_MAP_CHANNELS, height, width, device=device)
    if n == 0:
        return out
    geometry = np.zeros((b, n, 6))
    colour = np.zeros((b, n, 3), np.float32)
    round_ = np.zeros((b, n), bool)
    present = np.zeros((b, n), bool)
    for i, feet in enumerate(per_world):
        for j, f in enumerate(feet):
            geometry[i, j] = (f.x_m, f.y_m, f.bottom_m, f.top_m, f.half_x_m, f.half_y_m)
            colour[i, j] = np.asarray(f.rgb, np.float32) / 127.5 - 1.0
            round_[i, j], present[i, j] = f.round, True
    boxes = project_boxes(geometry, camera_x_m.detach().cpu().double().numpy(), cfg)
    cover = coverage(
        torch.from_numpy(boxes).float().to(device), torch.from_numpy(round_).to(device), height, width
    )
    cover = cover * torch.from_numpy(present).to(device)[..., None, None]
    rgb = torch.zeros(b, 3, height, width, device=device)
    for j in range(n):  # later agents over earlier ones
        c = cover[:, j, None]
        rgb = rgb * (1 - c) + torch.from_numpy(colour[:, j]).to(device)[..., None, None] * c
    out[:, 0] = cover.amax(1)
    out[:, 1:] = rgb
    return out
