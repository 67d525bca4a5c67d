"""The ego car's heading, counted from the steering: what Drive's frames do not show.

Drive's camera follows the car along the road, so the car's position across it is drawn in the
frame, but its heading is not: at 64x64, and rendered without multisampling, four frames show a
sideways speed of a quarter of a pixel a step as whole-pixel edges. Across the road is where most of
Drive's remaining error lies (README, "Across the road"). The heading is set by the steering over
the whole episode, not by the last K actions, so a generator that reads K frames and K actions cannot
know it; a longer context did not supply it either.

A generator with ``heading`` is told it. The heading rides in the odometer's trail as a second
channel (``odometer_m[B, M, 2]``: distance in m, heading in rad relative to the road, 0 at an
episode's first frame, when every Drive car starts straight), so every caller that keeps the odometer
keeps the heading with it. It is counted as the odometer's dynamics count the distance: a small
network learns the next heading change from the last heading, the last change, the step the car is
taking (its speed) and the last K actions, fitted to the dataset's yaw before the generator trains.
Training tells the generator the dataset's yaw; a rollout counts it from its start.

Alignment is the odometer dynamics': for a window whose last context frame is ``t``, the trail holds
the frames ``t-M+1 .. t``, ``actions[B, K, A]`` end with the one taken at frame ``t``, ``step_m`` is
the distance from frame ``t`` to ``t+1``, and the network predicts the heading at ``t+1`` minus that
at ``t``.
"""

from __future__ import annotations

import torch
from torch import nn

from worldsim.model.odometer_dynamics import fit_module

HIDDEN = 64
HEADING_SCALE_RAD = 0.1
"""A heading's typical size (Drive's data: 0.14 rad standard deviation); inputs and features are
divided by it."""
TURN_SCALE_RAD = 0.02
"""A step's typical heading change (Drive's data: 0.018 rad standard deviation)."""
LATERAL_SCALE_M = 0.05
"""A step's typical sideways move (m): the car's step times the sine of its heading."""
HEADING_FEATURES = 3


def heading_parts(trail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From an ego trail ``[B, M, 2]``: the last heading ``[B]``, the last heading change and the
    last distance step (0 where unknown) and whether they are known, ``bool[B]``."""
    distance, heading = trail[..., 0].float(), trail[..., 1].float()
    last = heading[:, -1]
    known = torch.isfinite(heading[:, -2]) & torch.isfinite(distance[:, -2])
    turn = torch.where(known, heading[:, -1] - heading[:, -2].nan_to_num(), 0.0)
    step = torch.where(known, distance[:, -1] - distance[:, -2].nan_to_num(), 0.0)
    return last, turn, step, known


def heading_features(trail: torch.Tensor) -> torch.Tensor:
    """``[B, HEADING_FEATURES]``: the heading at the last frame, its last change and the sideways
    move it made of the last step, each over its typical size (0 for what the trail does not hold)."""
    last, turn, step, _ = heading_parts(trail)
    lateral = step * torch.sin(last)
    return torch.stack([last / HEADING_SCALE_RAD, turn / TURN_SCALE_RAD, lateral / LATERAL_SCALE_M], dim=1)


STEER = 0
"""Which of Drive's actions is the steering: ``(steer, throttle)``, positive steer turning left."""


class HeadingDynamics(nn.Module):
    """The next heading change (rad) from the last heading and change, the step being taken and the
    last K actions. Steering turns a car by an angle proportional to the distance it rolls, so the
    step times each action enters too: the product a small network would otherwise have to form.

    The prediction is odd in the mirror image of the world: a car mirrored left for right (its
    heading, last turn and steering negated, its speed and throttle kept) turns by the negated angle,
    exactly, as a symmetric car on a straight road does. A network fitted freely learns a small bias
    instead: a car told to drive straight turned by 0.0004 rad a step, and over a minute its counted
    heading reached 0.26 rad while MuJoCo's car pointed along the road (Drive's default worlds 0, 3
    and 4). Averaging the network over the world and its mirror image makes that bias 0."""

    def __init__(self, context: int, action_dim: int) -> None:
        super().__init__()
        n_in = 4 + 2 * context * action_dim
        self.net = nn.Sequential(
            nn.Linear(n_in, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, 1)
        )
        mirror = torch.ones(context, action_dim)
        mirror[:, STEER] = -1.0
        self.register_buffer("mirror", mirror.flatten(), persistent=False)

    def forward(self, trail: torch.Tensor, step_m: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``trail[B, M, 2]`` (the last heading must be known), ``step_m[B]`` (the distance to the next
        frame) and ``actions[B, K, A]`` to the heading change ``float[B]``."""
        last, turn, _, known = heading_parts(trail)
        step, acts = step_m.float(), actions.float().flatten(1)

        def turn_of(sign: float, acts: torch.Tensor) -> torch.Tensor:
            x = torch.cat(
                [
                    torch.stack(
                        [sign * last / HEADING_SCALE_RAD, sign * turn / TURN_SCALE_RAD, known.float(), step],
                        1,
                    ),
                    acts,
                    step[:, None] * acts,
                ],
                dim=1,
            )
            return self.net(x)[:, 0]

        odd = 0.5 * (turn_of(1.0, acts) - turn_of(-1.0, acts * self.mirror))
        return TURN_SCALE_RAD * odd


def fit_heading(
    module: HeadingDynamics,
    trails: torch.Tensor,
    steps_m: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    iterations: int = 3000,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``module`` to the windows (``train.loop.heading_windows``) and return its RMS error (rad) on
    a held-out share of them next to that of repeating the last heading change."""
    val, predicted = fit_module(module, (trails, steps_m, actions), targets, iterations, seed=seed)
    rms = (predicted - targets[val]).square().mean().sqrt()
    _, turn, _, _ = heading_parts(trails[val])
    repeat = (turn - targets[val]).square().mean().sqrt()
    return {
        "windows": len(targets),
        "rms_turn_error_rad": float(rms),
        "repeat_last_turn_rms_rad": float(repeat),
        "turn_std_rad": float(targets.std()),
    }
