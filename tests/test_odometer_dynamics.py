"""The odometer's dynamics: a rollout's distance counted from its steps and actions, not its frames."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_odometry import MARKINGS, _road, tiny_drive_model
from worldsim.model.odometer_dynamics import OdometerDynamics, fit_dynamics
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
