"""The state probe: the physical state read back from frames, so state-based policies can act in a
generated world.

A generated world has pixels only. The probe is a small convolutional regressor trained on *truth*
frames (MuJoCo's, from a dataset) to the truth env's state vector (``worldsim.physics.state``). It
reads the two most recent frames, because velocities are part of the state and one frame does not
show them, and the colours of the scene's objects in state order, because pixels do not say which
ball is the agent (slot 0 of the Balls state): the prompt does. Its error on held-out truth frames
is its floor: on generated frames it can be no better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from worldsim.model.world_model import to_float

COLOUR_SLOTS = 3  # objects whose colour the probe is told, in state order (Balls has up to 3 balls)


def object_colours(spec: object, slots: int = COLOUR_SLOTS) -> np.ndarray:
    """RGB in [0, 1] of the first ``slots`` objects of ``spec`` in state order, zeros for absent ones:
    ``float32[slots * 3]``."""
    from worldsim.scenes import family_of
    from worldsim.scenes.colours import rgb_uint8

    out = np.zeros((slots, 3), np.float32)
    for j, info in enumerate(family_of(spec).objects(spec)[:slots]):
        out[j] = np.asarray(rgb_uint8(info.colour), np.float32) / 255.0
    return out.ravel()


@dataclass
class ProbeConfig:
    """Shape of a probe and the statistics it was trained with; saved as its ``config.json``."""

    family: str = "balls"
    state_size: int = 16
    width: int = 64
    height: int = 64
    frames: int = 2  # most recent frames read: velocities need two
    colour_slots: int = COLOUR_SLOTS
    channels: int = 32
    hidden: int = 256
    mean: list[float] = field(default_factory=list)  # per state component, to standardise targets
    std: list[float] = field(default_factory=list)
    floor: dict = field(default_factory=dict)  # its error on held-out truth frames (set by training)
    kind: str = "state_probe"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> ProbeConfig:
        if d.get("kind") != "state_probe":
            raise ValueError(f"not a state probe config (kind={d.get('kind')!r})")
        return ProbeConfig(**d)


class StateProbe(nn.Module):
    """``frames uint8[B, F, H, W, 3]`` (oldest first) and ``object_colours`` ``[B, 3 slots]`` to the
    state vector ``float[B, state_size]``."""

    def __init__(self, cfg: ProbeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        layers: list[nn.Module] = []
        c_in = (3 + cfg.colour_slots) * cfg.frames  # RGB and one "is this object's colour" map per slot
        for c_out in (c, 2 * c, 2 * c, 4 * c):  # 64 -> 4 positions a side
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers, nn.Flatten())
        cells = (cfg.height // 16) * (cfg.width // 16)
        self.mlp = nn.Sequential(
            nn.Linear(c_in * cells + 3 * cfg.colour_slots, cfg.hidden),
            nn.SiLU(),
            nn.Linear(cfg.hidden, cfg.state_size),
        )
        n = cfg.state_size
        self.register_buffer("mean", torch.tensor(cfg.mean or [0.0] * n, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(cfg.std or [1.0] * n, dtype=torch.float32))

    def standardised(self, frames_uint8: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        """The network's output: the state in standard units (what the training loss compares)."""
        if frames_uint8.ndim != 5 or frames_uint8.shape[1] != self.cfg.frames:
            raise ValueError(
                f"the probe reads frames [B, {self.cfg.frames}, H, W, 3], got {tuple(frames_uint8.shape)}"
            )
        x = to_float(frames_uint8.to(self.mean.device))  # [B, F, 3, H, W] in [-1, 1]
        colours = colours.to(self.mean.device).float()
        # Each slot's colour as a map of where it is drawn: finding "the agent ball" becomes finding
        # a blob in one channel, rather than binding colour to position deep in the network.
        rgb = colours.view(-1, 1, self.cfg.colour_slots, 3, 1, 1) * 2.0 - 1.0
        dist2 = ((x[:, :, None] - rgb) ** 2).sum(3)  # [B, F, slots, H, W]
        maps = (
            torch.exp(-dist2 / 0.02)
            * (colours.view(-1, 1, self.cfg.colour_slots, 3).sum(-1) > 0)[..., None, None]
        )
        x = torch.cat([x, maps], dim=2).flatten(1, 2)
        return self.mlp(torch.cat([self.conv(x), colours], dim=1))

    def forward(self, frames_uint8: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        return self.standardised(frames_uint8, colours) * self.std + self.mean
