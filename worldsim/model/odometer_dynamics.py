"""How far a following camera moves in the next step: the odometer's own dynamics.

A generator told its speed by a trail of distances (``odometer_trail``) is, in a rollout, told the
speed of the frames it has made: each step's distance is read back off the dashes it drew. Drawn a
little short, a step is read as a slower car, which the generator then draws, and over a minute the
car rolls to a stop (README, "Where the generated car slows down"). The distance is the one part of
Drive's state that is a single number with simple dynamics (the car's speed under its throttle,
brake and rolling losses), so it can be carried as state instead: a small network learns the next
step from the steps before it and the actions, on the dataset's odometer readings, and a rollout
counts its distance with it. The generator then draws the scroll it is told, and its own drawing
errors are no longer fed back into its speed. Nothing of the simulator's state enters: the inputs are
the odometer's readings of the context frames (the real ones at a rollout's start) and the actions.

Alignment is the generator's: for a window whose last context frame is ``t``, ``trail[B, M]`` holds
the distances at frames ``t-M+1 .. t`` (NaN before an episode's first frame) and ``actions[B, K, A]``
the actions ``t-K+1 .. t`` (zeros before the first), the last of them taken at frame ``t``; the
network predicts the distance from frame ``t`` to ``t+1``. It needs one known step (``t >= 1``);
callers read the first step off the frames.
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 64


def known_step(trail: torch.Tensor) -> torch.Tensor:
    """``bool[B]``: the trail holds at least one step (its last two distances are known)."""
    return torch.isfinite(trail[:, -1]) & torch.isfinite(trail[:, -2])


class OdometerDynamics(nn.Module):
    """The next step's distance (m) from the trail's steps and the last K actions. It predicts the
    change from the last step, the quantity a car's dynamics make small and smooth. Each action
    enters as its positive and its negative part: Drive's throttle drives the wheels above zero and
    brakes them below it, a kink at zero a smooth network otherwise rounds off (fitted to raw actions,
    it slowed a cruising car, throttle 0.03, by 0.015 m a step per step, where the dataset's cars
    slow by 0.002)."""

    def __init__(self, trail: int, context: int, action_dim: int) -> None:
        super().__init__()
        if trail < 2:
            raise ValueError(
                f"odometer dynamics read the steps of a trail of 2 or more distances, got {trail}"
            )
        self.steps = trail - 1
        n_in = 1 + 2 * self.steps + 2 * context * action_dim
        self.net = nn.Sequential(
            nn.Linear(n_in, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, 1)
        )

    def forward(self, trail: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``trail[B, M]`` (m, NaN where unknown; the last step must be known) and ``actions[B, K, A]``
        to the next step ``float[B]`` (m, never negative: the car does not reverse)."""
        trail, actions = trail.float(), actions.float()
        steps = trail[:, 1:] - trail[:, :-1]
        known = torch.isfinite(steps)
        last = torch.nan_to_num(steps[:, -1:])
        earlier = torch.where(known, steps, last) - last  # unknown steps read as the last one
        acts = actions.flatten(1)
        x = torch.cat([last, earlier, known.float(), acts.clamp_min(0.0), (-acts).clamp_min(0.0)], dim=1)
        return (last[:, 0] + self.net(x)[:, 0]).clamp_min(0.0)


def fit_module(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    iterations: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
    holdout: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``module(*inputs)`` to ``targets`` by Adam on the squared error, holding out a share of the
    rows; leaves it frozen and returns the held-out rows' indices and its predictions for them."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(targets), generator=gen)
    n_val = max(1, int(holdout * len(targets)))
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise ValueError(f"dynamics need windows to learn from; got {len(targets)}")
    module.requires_grad_(True)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    for it in range(iterations):
        pick = train[torch.randint(0, len(train), (min(batch_size, len(train)),), generator=gen)]
        loss = (module(*(x[pick] for x in inputs)) - targets[pick]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it == int(0.8 * iterations):  # a short cool-down: the last fifth at a tenth of the rate
            for group in opt.param_groups:
                group["lr"] = lr / 10
    module.requires_grad_(False)
    with torch.no_grad():
        return val, module(*(x[val] for x in inputs))


def fit_dynamics(
    module: OdometerDynamics,
    trails: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    iterations: int = 3000,
    batch_size: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
    holdout: float = 0.1,
) -> dict[str, float]:
    """Fit ``module`` to the windows (``train.loop.dynamics_windows``) by Adam on the squared step error, and
    return its RMS error (m) on a held-out share of them next to that of repeating the last step.
    Seconds on a CPU: the network is a few thousand weights and the inputs are numbers."""
    val, predicted = fit_module(module, (trails, actions), targets, iterations, batch_size, lr, seed, holdout)
    rms = (predicted - targets[val]).square().mean().sqrt()
    last = trails[val, -1] - trails[val, -2]
    repeat = (last - targets[val]).square().mean().sqrt()
    return {
        "windows": len(targets),
        "rms_step_error_m": float(rms),
        "repeat_last_step_rms_m": float(repeat),
        "mean_step_m": float(targets.mean()),
    }
