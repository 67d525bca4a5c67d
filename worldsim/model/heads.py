"""Reward and termination heads, apart from the frame generator.

They read a transition (frame, action, next frame) and the prompt embedding and predict the reward
and whether the episode ends there. Keeping them out of the denoiser means a generator can be
swapped or retrained without touching the task, and the task can be relearned for a new reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HeadsConfig:
    channels: int = 32
    hidden: int = 128


class RewardTerminationHeads(nn.Module):
    """``(frame_t, action_t, frame_t+1, prompt) -> (reward, termination logit)``."""

    def __init__(self, cfg: HeadsConfig, action_dim: int, prompt_dim: int) -> None:
        super().__init__()
        c = cfg.channels
        self.conv = nn.Sequential(
            nn.Conv2d(6, c, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.mlp = nn.Sequential(
            nn.Linear(2 * c * 16 + action_dim + prompt_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 2)
        )

    def forward(
        self, frame: torch.Tensor, action: torch.Tensor, next_frame: torch.Tensor, prompt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames are float ``[B,3,H,W]`` in [-1, 1]; returns ``reward[B]`` and ``termination_logit[B]``."""
        h = self.conv(torch.cat([frame, next_frame], dim=1))
        out = self.mlp(torch.cat([h, action, prompt], dim=1))
        return out[:, 0], out[:, 1]

    def loss(
        self, frame, action, next_frame, prompt, reward, terminated
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MSE on the reward and class-balanced BCE on termination (terminations are rare)."""
        r, logit = self(frame, action, next_frame, prompt)
        pos = terminated.float()
        pos_weight = ((1 - pos).sum() / pos.sum().clamp(min=1.0)).clamp(1.0, 100.0)
        return F.mse_loss(r, reward), F.binary_cross_entropy_with_logits(logit, pos, pos_weight=pos_weight)
