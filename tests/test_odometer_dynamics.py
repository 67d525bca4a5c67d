"""The odometer's dynamics: a rollout's distance counted from its steps and actions, not its frames."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_odometry import MARKINGS, _road, tiny_drive_model
from worldsim.model.odometer_dynamics import (
    LinearOdometerDynamics,
    OdometerDynamics,
    fit_dynamics,
    fit_linear_dynamics,
)
from worldsim.model.world_model import WorldModel, WorldModelConfig
from worldsim.train.loop import dynamics_windows


def flat_arrays(actions: list[np.ndarray]) -> SimpleNamespace:
    """The flat arrays of a sampler (what the window builders read) for episodes of these actions
    ``float32[T, A]`` each, the frames of each one more than its actions."""
    steps = np.array([len(a) for a in actions], np.int64)
    return SimpleNamespace(
        frame_start=np.concatenate([[0], np.cumsum(steps + 1)[:-1]]).astype(np.int64),
        action_start=np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64),
        steps=steps,
        actions=np.concatenate(actions),
    )


def _cars(episodes: int, steps: int, seed: int = 0):
    """The distance at every frame and the flat arrays of a car whose step follows ``s' = 0.9 s +
    0.2 throttle`` (a first-order lag, as a car's speed under rolling losses), throttle random per
    step: what ``dynamics_windows`` reads."""
    rng = np.random.default_rng(seed)
    odometer, actions = [], []
    for _ in range(episodes):
        s, d = rng.uniform(0.2, 0.8), [0.0]
        acts = np.stack([rng.uniform(-1, 1, steps), rng.uniform(0, 1, steps)], 1).astype(np.float32)
        for t in range(steps):
            s = 0.9 * s + 0.2 * acts[t, 1]  # action t leads from frame t to t+1
            d.append(d[-1] + s)
        odometer.append(np.array(d, np.float32))
        actions.append(acts)
    return np.concatenate(odometer), flat_arrays(actions)


def test_the_windows_are_aligned_as_the_generators():
    """A window ending at frame t holds the distances up to t (NaN before the episode), the actions
    up to t (zeros before it, the last the one taken at t) and the step from t to t+1."""
    odometer, flat = _cars(2, 5)
    trails, acts, targets = dynamics_windows(odometer, flat, trail=3, context=2)
    assert trails.shape == (2 * 4, 3) and acts.shape == (2 * 4, 2, 2) and targets.shape == (8,)
    first = odometer[:6]  # episode 0, frames 0..5; its first window ends at frame 1
    assert torch.isnan(trails[0, 0]) and trails[0, 1:].tolist() == pytest.approx(first[:2].tolist())
    torch.testing.assert_close(acts[0], torch.from_numpy(flat.actions[:2]))
    assert targets[0].item() == pytest.approx(first[2] - first[1])
    assert trails[4, 1:].tolist() == pytest.approx(odometer[6:8].tolist())  # episode 1 starts afresh


def test_fitted_dynamics_predict_the_next_step_far_better_than_repeating_the_last():
    """On a car whose speed lags its throttle the fitted network's step error is a fraction of
    repeating the last step's (which cannot know the throttle), on windows it did not learn from."""
    odometer, flat = _cars(60, 30)
    module = OdometerDynamics(trail=4, context=2, action_dim=2)
    fitted = fit_dynamics(module, *dynamics_windows(odometer, flat, 4, 2), iterations=500)
    assert fitted["rms_step_error_m"] < 0.25 * fitted["repeat_last_step_rms_m"], fitted
    assert not any(p.requires_grad for p in module.parameters())  # kept as fitted while the generator trains


def test_a_rollout_counts_its_distance_by_the_dynamics_once_it_has_a_step():
    """With ``odometer_dynamics`` the distance moves on by the dynamics' step wherever the trail holds
    a step, whatever the frames show, by the frames' step before that; the actions are required, and
    a rollout hands them on."""
    model, captions = tiny_drive_model(
        odometer=True, odometer_markings=MARKINGS, odometer_trail=4, odometer_dynamics=True
    )
    with torch.no_grad():  # a head that predicts the last step again: a car that coasts
        for p in model.odometer_dynamics.parameters():
            p.zero_()
    before, after = torch.from_numpy(_road(5))[None], torch.from_numpy(_road(9))[None]
    acts = torch.zeros(1, 2, 2)
    nan = float("nan")
    coasting = model.advance_odometer(torch.tensor([[nan, 0.0, 0.5, 1.0]]), before, after, acts)
    assert coasting[0].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5])  # not the frames' 4 rows
    start = model.advance_odometer(model.start_odometer(1), before, after, acts)
    assert start[0, -1].item() == pytest.approx(4 / MARKINGS.px_per_m, abs=1e-4)  # the first step: frames
    with pytest.raises(ValueError, match="pass actions"):
        model.advance_odometer(coasting, before, after)
    frames = torch.stack([before, after], dim=1)
    trail = torch.tensor([[nan, 0.0, 0.5, 1.0]])
    rolled = model.rollout(
        frames, acts[:, :1], torch.zeros(1, 3, 2), captions, frame_index=2, odometer_m=trail
    )
    assert rolled.shape == (1, 3, 64, 64, 3)


def test_odometer_dynamics_need_a_trail():
    with pytest.raises(ValueError, match="odometer_trail"):
        tiny_drive_model(odometer=True, odometer_markings=MARKINGS, odometer_dynamics=True)


# A rolling car's law with Drive's proportions (m a step, per step): throttle +0.014 now and a step
# before, brake -0.035, losses of 0.003 of the step and a constant 0.0005.
LAW = {
    "pos1_t": 0.014,
    "neg1_t": -0.035,
    "pos1_t-1": 0.014,
    "neg1_t-1": -0.035,
    "step": -0.003,
    "constant": -0.0005,
}


def _rolling_cars(episodes: int, steps: int, seed: int = 0):
    """Distances and flat arrays of cars that follow ``LAW`` exactly (steering does nothing), throttle
    and brake smooth random, never stopping: what ``dynamics_windows`` reads."""
    rng = np.random.default_rng(seed)
    odometer, actions = [], []
    for _ in range(episodes):
        s, d = rng.uniform(0.8, 1.2), [0.0]
        pedal = np.clip(np.cumsum(rng.normal(0, 0.15, steps)), -0.2, 1.0)
        acts = np.stack([rng.uniform(-1, 1, steps), pedal], 1).astype(np.float32)
        for t in range(steps):
            before = acts[t - 1, 1] if t else 0.0
            s += (
                LAW["pos1_t"] * max(acts[t, 1], 0)
                + LAW["neg1_t"] * max(-acts[t, 1], 0)
                + LAW["pos1_t-1"] * max(before, 0)
                + LAW["neg1_t-1"] * max(-before, 0)
                + LAW["step"] * s
                + LAW["constant"]
            )
            assert s > 0.1  # rolling all the time: the law holds in every window
            d.append(d[-1] + s)
        odometer.append(np.array(d, np.float32))
        actions.append(acts)
    return np.concatenate(odometer), flat_arrays(actions)


def test_the_linear_law_is_recovered_exactly_from_cars_that_follow_one():
    """Least squares finds a rolling car's law from its travel: the coefficients to a few parts in a
    thousand of the largest, and held-out steps a small fraction as wrong as repeating the last one."""
    odometer, flat = _rolling_cars(40, 40)
    module = LinearOdometerDynamics(trail=4, context=3, action_dim=2)
    fitted = fit_linear_dynamics(module, *dynamics_windows(odometer, flat, 4, 3))
    for name, value in LAW.items():
        assert fitted["law"][name] == pytest.approx(value, abs=1e-4), (name, fitted["law"])
    assert fitted["law"]["pos0_t"] == pytest.approx(0.0, abs=1e-4)  # steering does nothing here
    assert fitted["rms_step_error_m"] < 0.05 * fitted["repeat_last_step_rms_m"], fitted
    assert not any(p.requires_grad for p in module.parameters())


def test_a_rollouts_own_steps_carry_on_to_the_last_and_read_steps_are_averaged():
    """Steps the law made itself carry on to the last step exactly, so the next step is the law's
    step after the last; steps read off frames with an error of a row each are averaged, and the
    next step is nearer the truth than the law applied to the last read step alone."""
    odometer, flat = _rolling_cars(40, 40)
    module = LinearOdometerDynamics(trail=4, context=3, action_dim=2)
    trails, actions, targets = dynamics_windows(odometer, flat, 4, 3)
    fit_linear_dynamics(module, trails, actions, targets)
    last_only = LinearOdometerDynamics(trail=2, context=3, action_dim=2)  # one step: nothing to average
    last_only.change.weight.copy_(module.change.weight)
    full = torch.isfinite(trails).all(1)
    trails, actions, targets = trails[full], actions[full], targets[full]
    torch.testing.assert_close(module(trails, actions), last_only(trails[:, -2:], actions), atol=2e-5, rtol=0)
    rows = torch.from_numpy(np.random.default_rng(1).choice([-0.03, 0.03], trails.shape).astype(np.float32))
    noisy = trails + rows  # each distance off by up to a row of pixels: each step by up to two
    averaged = (module(noisy, actions) - targets).square().mean().sqrt()
    alone = (last_only(noisy[:, -2:], actions) - targets).square().mean().sqrt()
    assert averaged < 0.8 * alone, (averaged, alone)


def test_a_brake_stops_the_car_and_its_own_losses_never_push_it():
    """A hard brake takes a slow car to a standstill, not backwards; the car's own part of the law
    (step and constant, as fitted on Drive: a pull above 0.36 m a step, a push below) slows a
    cruising car and leaves a stopped one stopped."""
    module = LinearOdometerDynamics(trail=3, context=2, action_dim=2)
    module.change.weight.copy_(
        torch.tensor([[0.0, 0.014, 0.0, -0.035, 0.0, 0.014, 0.0, -0.035, -0.003, 0.0011]])
    )
    hard, idle = torch.tensor([[[0.0, -1.0], [0.0, -1.0]]]), torch.zeros(1, 2, 2)
    assert module(torch.tensor([[0.0, 0.05, 0.1]]), hard).item() == 0.0
    assert module(torch.tensor([[0.0, 0.6, 1.2]]), idle).item() == pytest.approx(0.6 - 0.003 * 0.6 + 0.0011)
    assert module(torch.tensor([[3.0, 3.0, 3.0]]), idle).item() == 0.0


def test_an_episodes_first_step_is_counted_on_from_the_prompts_speed():
    """Where the trail holds no step yet, a finite ``start_step_m`` is the step before the first frame
    and the dynamics count the first step on from it (a law that coasts: the same step), not the
    frames' 4 rows; NaN, or none given, reads the frames; the shape is checked."""
    model, _ = tiny_drive_model(
        odometer=True, odometer_markings=MARKINGS, odometer_trail=4, odometer_dynamics=True
    )
    before, after = torch.from_numpy(_road(5))[None], torch.from_numpy(_road(9))[None]
    frames_step = 4 / MARKINGS.px_per_m
    acts = torch.zeros(1, 2, 2)
    start = model.start_odometer(1)
    counted = model.advance_odometer(start, before, after, acts, torch.tensor([0.7]))
    assert counted[0, -1].item() == pytest.approx(0.7)
    for step in (torch.tensor([float("nan")]), None):
        read = model.advance_odometer(start, before, after, acts, step)
        assert read[0, -1].item() == pytest.approx(frames_step, abs=1e-4)
    on = model.advance_odometer(counted, before, after, acts, torch.tensor([5.0]))  # a step is known
    assert on[0, -1].item() == pytest.approx(1.4)
    with pytest.raises(ValueError, match="start_step_m"):
        model.advance_odometer(start, before, after, acts, torch.tensor([0.7, 0.7]))


def test_odometer_dynamics_come_in_two_forms_and_older_checkpoints_read_as_the_network():
    """A config written before the form was (no ``odometer_dynamics_form``) is the network's; new
    generators count by the linear law; an unknown form is refused by name."""
    from worldsim.scenes import sample, start_step_m

    assert WorldModelConfig.from_dict({"odometer_dynamics": True}).odometer_dynamics_form == "network"
    assert WorldModelConfig().odometer_dynamics_form == "linear"
    linear, _ = tiny_drive_model(
        odometer=True, odometer_markings=MARKINGS, odometer_trail=4, odometer_dynamics=True
    )
    assert isinstance(linear.odometer_dynamics, LinearOdometerDynamics)
    network, _ = tiny_drive_model(
        odometer=True,
        odometer_markings=MARKINGS,
        odometer_trail=4,
        odometer_dynamics=True,
        odometer_dynamics_form="network",
    )
    assert isinstance(network.odometer_dynamics, OdometerDynamics)
    with pytest.raises(ValueError, match="odometer_dynamics_form"):
        tiny_drive_model(
            odometer=True,
            odometer_markings=MARKINGS,
            odometer_trail=4,
            odometer_dynamics=True,
            odometer_dynamics_form="spline",
        )
    drive = sample("drive", np.random.default_rng(0))
    assert start_step_m(drive) == pytest.approx(drive.ego_speed_mps / 10.0)
    assert np.isnan(start_step_m(sample("balls", np.random.default_rng(0))))
    assert isinstance(linear, WorldModel)
