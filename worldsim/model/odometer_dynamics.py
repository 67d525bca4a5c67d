"""How far a following camera moves in the next step: the odometer's own dynamics.

A generator told its speed by a trail of distances (``odometer_trail``) is, in a rollout, told the
speed of the frames it has made: each step's distance is read back off the dashes it drew. Drawn a
little short, a step is read as a slower car, which the generator then draws, and over a minute the
car rolls to a stop (README, "Where the generated car slows down"). The distance is the one part of
Drive's state that is a single number with simple dynamics (the car's speed under its throttle,
brake and rolling losses), so it can be carried as state instead: dynamics learn the next step from
the steps before it and the actions, and a rollout counts its distance with them. The generator then
draws the scroll it is told, and its own drawing errors are no longer fed back into its speed.
Nothing of the simulator's state enters a rollout: the inputs are the odometer's readings of the
context frames (the real ones at a rollout's start), the actions, and at an episode's first frame
the speed the prompt gives (``worldsim.scenes.start_step_m``).

Alignment is the generator's: for a window whose last context frame is ``t``, ``trail[B, M]`` holds
the distances at frames ``t-M+1 .. t`` (NaN before an episode's first frame) and ``actions[B, K, A]``
the actions ``t-K+1 .. t`` (zeros before the first), the last of them taken at frame ``t``; the
dynamics predict the distance from frame ``t`` to ``t+1``. It needs one known step (``t >= 1``);
callers read the first step off the frames, or count it from the prompt's speed.

Two forms. ``LinearOdometerDynamics`` (the default) is a rolling car's law: the step's change is
linear in each action's positive and negative parts (motor and brake), the step itself (losses that
grow with speed) and a constant, least squares on the dataset's true travel (the state ``ego_pos_m``).
``OdometerDynamics`` is a small network fitted by Adam to the frames' readings, the form of the
checkpoints made before the linear one: its one-step error was small, but a rollout integrates its
biases, and under the scripted driver's steady throttle it counted 458-509 m where MuJoCo's car
drove 373-430 (README, "The odometer's law").
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 64
FORMS = ("linear", "network")  # WorldModelConfig.odometer_dynamics_form
MOVING_M = 0.05  # a window teaches the linear law when the car moves at least this far in both its steps


def known_step(trail: torch.Tensor) -> torch.Tensor:
    """``bool[B]``: the trail holds at least one step (its last two distances are known)."""
    return torch.isfinite(trail[:, -1]) & torch.isfinite(trail[:, -2])


class OdometerDynamics(nn.Module):
    """The network form (checkpoints made before the linear one): the next step's distance (m) from
    the trail's steps and the last K actions. It predicts the
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


def held_out(n: int, holdout: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of ``n`` windows drawn from ``gen``: ``(held out, learned from)``, a share ``holdout``
    held out."""
    order = torch.randperm(n, generator=gen)
    n_val = max(1, int(holdout * n))
    if n - n_val <= 0:
        raise ValueError(f"dynamics need windows to learn from; got {n}")
    return order[:n_val], order[n_val:]


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
    val, train = held_out(len(targets), holdout, gen)
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


class LinearOdometerDynamics(nn.Module):
    """The next step's distance (m) by a rolling car's law, linear in what drives it.

    Drive's car rolls under motor torque (throttle above zero), wheel brakes (below it) and losses in
    the wheels: its speed changes by an amount linear in the throttle's and brake's parts, the speed
    itself and a constant, and MuJoCo's car does so exactly (measured at constant throttle: +27 mm a
    step per unit throttle, -72 per unit brake, -0.14 per m/s, at every speed from 2 to 10 m/s). A law
    of that form, fitted to the dataset, has no bias of its own to integrate: a network's small biases
    at a throttle the dataset rarely holds for long became tens of metres over a minute.

    The change of a step from frame ``t`` to ``t+1`` reads the positive and negative parts of each
    action taken at ``t`` and ``t-1`` (the step between two frames is the mean speed over it, so the
    actions of both steps it spans move it), the last step and a constant. The last step is taken as
    the mean of the trail's last known steps, each carried on to now by the same law under the
    actions between (up to ``K - 1`` of them, whose actions the window holds): a rollout's own
    steps follow the law and carry on to the last one exactly, while steps read off real frames
    (within a pixel's row, 0.06 m) are averaged.
    """

    def __init__(self, trail: int, context: int, action_dim: int) -> None:
        super().__init__()
        if trail < 2:
            raise ValueError(
                f"odometer dynamics read the steps of a trail of 2 or more distances, got {trail}"
            )
        self.carried = max(1, min(context - 1, trail - 1))
        self.change = nn.Linear(4 * action_dim + 2, 1, bias=False)
        nn.init.zeros_(self.change.weight)  # until fitted: a car that coasts
        self.requires_grad_(False)  # fitted by least squares, never by a gradient

    @staticmethod
    def features(step: torch.Tensor, now: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """``[B, 4A + 2]``: the actions at ``t`` and ``t-1`` (``[B, A]`` each) as positive and negative
        parts, the step ``[B]`` into frame ``t`` and 1."""
        return torch.cat(
            [now.clamp_min(0), (-now).clamp_min(0), before.clamp_min(0), (-before).clamp_min(0)]
            + [step[:, None], torch.ones_like(step)[:, None]],
            dim=1,
        )

    def _on(self, step: torch.Tensor, now: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """The step after ``step`` under the actions ``now`` and ``before``. The car's own part of
        the change (its step's and the constant's) is a loss and never pushes it: fitted where the
        car rolls, the two sum to a pull at every speed but a slow one (Drive: below 3.6 m/s), where
        a car stopped for a pedestrian would otherwise creep on, 3 m in 7 s in one world. The step
        is never negative: a brake stops the car, it does not reverse it."""
        x = self.features(step, now, before)
        w = self.change.weight[0]
        driven = x[:, :-2] @ w[:-2]
        own = (x[:, -2:] @ w[-2:]).clamp_max(0.0)
        return (step + driven + own).clamp_min(0.0)

    def forward(self, trail: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``trail[B, M]`` (m, NaN where unknown; the last step must be known) and ``actions[B, K, A]``
        to the next step ``float[B]`` (m)."""
        trail, actions = trail.float(), actions.float()
        steps = trail[:, 1:] - trail[:, :-1]
        # actions[:, -1] is taken at frame t; one more zero row reads as no action before the window
        acts = torch.cat([torch.zeros_like(actions[:, :1]), actions], dim=1)
        total = torch.zeros_like(steps[:, 0])
        count = torch.zeros_like(total)
        for back in range(min(self.carried, steps.shape[1])):
            step = steps[:, -1 - back]  # from frame t-1-back to t-back
            known = torch.isfinite(step)
            step = torch.nan_to_num(step)
            for i in range(back, 0, -1):  # on to the step into frame t-i+1, by the actions at t-i, t-i-1
                step = self._on(step, acts[:, -1 - i], acts[:, -2 - i])
            total = total + torch.where(known, step, 0.0)
            count = count + known.float()
        last = total / count.clamp_min(1.0)
        return self._on(last, acts[:, -1], acts[:, -2])


def fit_linear_dynamics(
    module: LinearOdometerDynamics,
    trails: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor,
    seed: int = 0,
    holdout: float = 0.1,
) -> dict[str, float]:
    """Fit ``module``'s law to windows of a car's true travel (``trails[N, M]``, ``actions[N, K, A]``,
    the next step ``targets[N]``, as ``train.loop.dynamics_windows`` makes them) by least squares on
    the rows where the car rolls (both steps at least ``MOVING_M``: at rest the brakes' friction
    holds it, which the clamp at zero keeps), holding out a share of the windows; its RMS error (m)
    on them next to that of repeating the last step. Exact and under a second: the law is linear."""
    val, train = held_out(len(targets), holdout, torch.Generator().manual_seed(seed))
    trails, actions, targets = trails.double(), actions.double(), targets.double()
    last = trails[:, -1] - trails[:, -2]
    before = actions[:, -2] if actions.shape[1] > 1 else torch.zeros_like(actions[:, -1])
    x = module.features(last, actions[:, -1], before)
    rolls = (last[train] >= MOVING_M) & (targets[train] >= MOVING_M)
    rows = train[rolls]
    if len(rows) <= x.shape[1]:
        raise ValueError(
            f"odometer dynamics learn a rolling car's law from windows where it moves; got {len(rows)} "
            f"such windows of {len(targets)}, fewer than its {x.shape[1]} coefficients"
        )
    solution = torch.linalg.lstsq(x[rows], (targets - last)[rows, None]).solution
    with torch.no_grad():
        module.change.weight.copy_(solution.T.float())
        module.requires_grad_(False)
        predicted = module(trails[val].float(), actions[val].float()).double()
    return {
        "windows": len(targets),
        "rolling_windows_fitted": len(rows),
        "rms_step_error_m": float((predicted - targets[val]).square().mean().sqrt()),
        "repeat_last_step_rms_m": float((last[val] - targets[val]).square().mean().sqrt()),
        "mean_step_m": float(targets.mean()),
        "law": {
            name: float(w)
            for name, w in zip(_law_names(actions.shape[2]), module.change.weight[0].tolist(), strict=True)
        },
    }


def _law_names(action_dim: int) -> list[str]:
    """The names of ``LinearOdometerDynamics.features``' columns, for the fit's figures."""
    parts = [
        f"{part}{i}_{when}"
        for when, part in (("t", "pos"), ("t", "neg"), ("t-1", "pos"), ("t-1", "neg"))
        for i in range(action_dim)
    ]
    return parts + ["step", "constant"]


def make_odometer_dynamics(form: str, trail: int, context: int, action_dim: int) -> nn.Module:
    """The odometer dynamics of a form (``FORMS``)."""
    if form == "linear":
        return LinearOdometerDynamics(trail, context, action_dim)
    if form == "network":
        return OdometerDynamics(trail, context, action_dim)
    raise ValueError(f"odometer_dynamics_form must be one of {FORMS}, got {form!r}")
