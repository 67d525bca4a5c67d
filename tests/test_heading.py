"""The ego car's heading: counted from the steering by fitted dynamics, carried in the odometer's trail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_odometer_dynamics import flat_arrays
from tests.test_odometry import MARKINGS, _road, tiny_drive_model
from worldsim.model.heading import HeadingDynamics, fit_heading
from worldsim.model.odometry import odometer_m
from worldsim.train.loop import heading_windows

HEADING = dict(
    odometer=True, odometer_markings=MARKINGS, odometer_trail=4, odometer_dynamics=True, heading=True
)


def _cars(episodes: int, steps: int, seed: int = 0):
    """``flat_ego`` (distance, heading at every frame) and the flat arrays of cars whose steering
    wheel lags its command (``w' = 0.5 w + 0.5 steer``) and turns the car by ``0.05 w`` per metre
    rolled, steps of 0.3-0.7 m: what ``heading_windows`` reads."""
    rng = np.random.default_rng(seed)
    ego, actions = [], []
    for _ in range(episodes):
        d, psi, wheel, step = [0.0], [0.0], 0.0, rng.uniform(0.3, 0.7)
        acts = np.stack([rng.uniform(-1, 1, steps), rng.uniform(0, 1, steps)], 1).astype(np.float32)
        for t in range(steps):
            wheel = 0.5 * wheel + 0.5 * acts[t, 0]  # action t leads from frame t to t+1
            d.append(d[-1] + step)
            psi.append(psi[-1] + 0.05 * wheel * step)
        ego.append(np.stack([d, psi], 1).astype(np.float32))
        actions.append(acts)
    return np.concatenate(ego), flat_arrays(actions)


def test_the_windows_are_aligned_as_the_generators():
    """A window ending at frame t holds the distances and headings up to t (NaN before the
    episode), the step and the heading change from t to t+1, and the actions up to t."""
    ego, flat = _cars(2, 5)
    trails, steps, acts, turns = heading_windows(ego, flat, trail=3, context=2)
    assert trails.shape == (2 * 5, 3, 2) and steps.shape == acts.shape[:1] == turns.shape == (10,)
    assert torch.isnan(trails[0, :2]).all() and trails[0, -1].tolist() == [0.0, 0.0]
    torch.testing.assert_close(trails[2], torch.from_numpy(ego[0:3]))
    assert steps[2].item() == pytest.approx(ego[3, 0] - ego[2, 0])
    assert turns[2].item() == pytest.approx(ego[3, 1] - ego[2, 1])
    torch.testing.assert_close(acts[2], torch.from_numpy(flat.actions[1:3]))
    assert torch.isnan(trails[5, :2]).all()  # episode 1 starts afresh


def test_fitted_heading_dynamics_predict_the_turn_far_better_than_repeating_the_last():
    """On cars whose wheel lags the steering the fitted network's turn error is a fraction of
    repeating the last turn's (which cannot know the steering), on windows it did not learn from."""
    ego, flat = _cars(60, 30)
    module = HeadingDynamics(context=2, action_dim=2)
    fitted = fit_heading(module, *heading_windows(ego, flat, 4, 2), iterations=600)
    assert fitted["rms_turn_error_rad"] < 0.3 * fitted["repeat_last_turn_rms_rad"], fitted
    assert not any(p.requires_grad for p in module.parameters())  # kept as fitted while the generator trains


class TurningDynamics(torch.nn.Module):
    """Dynamics that turn the car by ``turn`` rad every step, whatever it does (no mirror-symmetric
    network does that: the count's bookkeeping is what is tested)."""

    def __init__(self, turn: float) -> None:
        super().__init__()
        self.turn = turn
        self.device_of = torch.nn.Parameter(torch.zeros(()))  # where the count runs, as a network's

    def forward(self, trail: torch.Tensor, step_m: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.full_like(step_m, self.turn)


def _turning(model, turn: float) -> None:
    model.heading_dynamics = TurningDynamics(turn)


def test_a_heading_rides_in_the_trail_and_is_counted_from_the_start():
    """The trail is ``[B, M, 2]``: an episode's start points along the road (heading 0); each step
    adds the dynamics' turn, in a rollout as in the context's count, which needs the actions; the
    distance channel moves on as before."""
    model, captions = tiny_drive_model(**HEADING)
    _turning(model, 0.01)
    start = model.start_odometer(2)
    assert start.shape == (2, 4, 2) and start[:, -1].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert torch.isnan(start[:, :-1]).all()
    before, after = torch.from_numpy(_road(5))[None], torch.from_numpy(_road(9))[None]
    moved = model.advance_odometer(start[:1], before, after, torch.zeros(1, 2, 2))
    assert moved[0, -1, 0].item() == pytest.approx(4 / MARKINGS.px_per_m, abs=1e-4)  # the frames' step
    assert moved[0, -1, 1].item() == pytest.approx(0.01)
    frames = torch.from_numpy(np.stack([_road(r) for r in (0, 4, 8, 12, 16)]))[None]
    counted = model.context_odometer(frames, torch.zeros(1, 4, 2))
    assert counted.shape == (1, 4, 2)
    assert counted[0, :, 1].tolist() == pytest.approx([0.01, 0.02, 0.03, 0.04])
    with pytest.raises(ValueError, match="pass the actions"):
        model.context_odometer(frames)
    rolled = model.rollout(
        frames[:, -2:],
        torch.zeros(1, 1, 2),
        torch.zeros(1, 3, 2),
        captions,
        frame_index=5,
        odometer_m=counted,
    )
    assert rolled.shape == (1, 3, 64, 64, 3)
    with pytest.raises(ValueError, match="distance in m, heading in rad"):
        model.predict_next(
            frames[:, -2:], torch.zeros(1, 2, 2), model.encode_prompts(captions), frame_index=5,
            odometer_m=counted[..., 0],
        )  # fmt: skip


def test_the_count_over_a_context_and_a_rollout_step_read_the_windows_the_dynamics_learn_from():
    """With dynamics of random weights, the heading counted over a real context turns, step by
    step, as the dynamics predict on ``heading_windows`` of that count (the alignment they were
    fitted with), and one rollout step from a shorter count lands on the longer count's heading."""
    model, _ = tiny_drive_model(**HEADING)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.heading_dynamics.parameters():
            p.normal_(0.0, 0.3)
        for p in model.odometer_dynamics.parameters():  # a car that coasts: the frames' constant step
            p.zero_()
    t = 5  # the dashes read as one constant step from frame 1 to 4
    frames = torch.from_numpy(np.stack([_road(3 * i) for i in range(t)]))[None]
    actions = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, t - 1, 2)).astype(np.float32))
    ego = model._counted_heading(odometer_m(frames, MARKINGS), actions)[0].numpy()
    flat = flat_arrays([actions[0].numpy()])
    trails, steps, acts, turns = heading_windows(ego, flat, trail=4, context=2)
    with torch.no_grad():
        torch.testing.assert_close(model.heading_dynamics(trails, steps, acts), turns, atol=1e-6, rtol=1e-5)
    assert turns.abs().min() > 1e-4  # the dynamics do turn the car
    shorter = model.context_odometer(frames[:, : t - 1], actions[:, : t - 2])
    stepped = model.advance_odometer(shorter, frames[:, t - 2], frames[:, t - 1], actions[:, t - 3 : t - 1])
    assert stepped[0, -1, 1].item() == pytest.approx(float(ego[-1, 1]), abs=1e-6)


def test_the_heading_changes_the_frame_once_its_input_has_weights():
    """The heading's input starts at zero (fine-tuning adds it to a checkpoint); with weights, a
    car told another heading is drawn differently."""
    model, captions = tiny_drive_model(**HEADING)
    ctx = torch.from_numpy(np.stack([_road(5), _road(9)]))[None]
    acts, prompt = torch.zeros(1, 2, 2), model.encode_prompts(captions)
    trail = torch.tensor([[[float("nan")] * 2, [0.0, 0.0], [0.7, 0.0], [1.4, 0.0]]])
    turned = trail.clone()
    turned[0, -1, 1] = 0.2

    def make(odometer: torch.Tensor) -> torch.Tensor:
        noise = model.draw_sampling_noise(1, torch.Generator().manual_seed(0))
        return model.predict_next(ctx, acts, prompt, noise=noise, frame_index=2, odometer_m=odometer)

    with torch.no_grad():  # a network whose output depends on its conditioning (a fresh one's is zero)
        for p in model.unet.parameters():
            p.normal_(0.0, 0.2)
    assert torch.equal(make(trail), make(turned))
    with torch.no_grad():
        model.heading_in.weight.normal_(0.0, 1.0)
    assert not torch.equal(make(trail), make(turned))


def test_the_turn_is_mirror_symmetric_and_a_car_driving_straight_keeps_its_heading():
    """Mirrored left for right (heading, last turn and steering negated, speed and throttle kept) a
    car turns by the negated angle, exactly, whatever the weights; so a car that points along the
    road and is not steered does not turn, and its counted heading stays 0 over a minute."""
    module = HeadingDynamics(context=2, action_dim=2)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    b = 16
    trail = torch.randn(b, 4, 2) * torch.tensor([1.0, 0.1])
    step, acts = torch.rand(b), torch.rand(b, 2, 2) * 2 - 1
    mirrored_trail, mirrored_acts = trail * torch.tensor([1.0, -1.0]), acts * torch.tensor([-1.0, 1.0])
    with torch.no_grad():
        turn = module(trail, step, acts)
        assert turn.abs().min() > 1e-5
        torch.testing.assert_close(module(mirrored_trail, step, mirrored_acts), -turn)
    model, _ = tiny_drive_model(**HEADING)
    with torch.no_grad():
        for p in model.heading_dynamics.parameters():
            p.normal_(0.0, 0.5)
    trail = model.start_odometer(2)
    road = torch.from_numpy(_road(0))[None].expand(2, 64, 64, 3)
    straight = torch.tensor([[0.0, 0.3], [0.0, -0.5]])[:, None].expand(2, 2, 2)  # throttle, no steer
    for _ in range(600):
        trail = model.advance_odometer(trail, road, road, straight)
    assert trail[:, -1, 1].abs().max().item() == 0.0


def test_a_heading_needs_odometer_dynamics():
    with pytest.raises(ValueError, match="odometer_dynamics"):
        tiny_drive_model(odometer=True, odometer_markings=MARKINGS, odometer_trail=4, heading=True)
