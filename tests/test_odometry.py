"""The odometer: how far Drive's following camera has travelled, read off the road's dashes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from worldsim.model.odometry import OdometerConfig, marking_phase, odometer_m, step_m
from worldsim.scenes.drive import road_markings

MARKINGS = OdometerConfig(**road_markings(64, 64))


def _road(offset_px: int, height: int = 64, width: int = 64) -> np.ndarray:
    """A frame of bare road with the centre line's dashes, the pattern moved ``offset_px`` rows down."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = MARKINGS.ground_rgb
    period, dash = MARKINGS.period_px, MARKINGS.dash_px
    for row in range(height):
        if (row - offset_px) % period < dash:
            frame[row, 31:33] = MARKINGS.marking_rgb
    return frame


def test_the_odometer_follows_the_car_down_the_road():
    """On MuJoCo's frames of a Drive episode the odometer stays within 0.25 m of the car's true
    travel at every frame; read with the wrong period it does not."""
    from policies import make_policy
    from worldsim import scenes
    from worldsim.physics import make_simulator

    rng = np.random.default_rng(4)
    spec = scenes.sample("drive", rng)
    policy = make_policy("drive", "mixture", rng)
    sim = make_simulator("drive", "mujoco", 64, 64)
    sim.reset(spec)
    policy.reset(sim.state())
    frames, xs = [sim.render()], [sim.state()["ego_pos_m"][0]]
    for _ in range(120):
        sim.step(policy.act(sim.state()))
        frames.append(sim.render())
        xs.append(sim.state()["ego_pos_m"][0])
    sim.close()
    travelled = np.asarray(xs) - xs[0]
    assert travelled[-1] > 20.0  # the car went far enough for the dashes to pass several times
    read = odometer_m(torch.from_numpy(np.stack(frames)), MARKINGS).numpy()
    assert np.abs(read - travelled).max() < 0.25
    wrong = odometer_m(torch.from_numpy(np.stack(frames)), replace(MARKINGS, period_px=40.0)).numpy()
    assert np.abs(wrong - travelled).max() > 1.0


def test_a_step_is_the_nearest_move_and_nothing_without_an_edge_next_to_road():
    before = torch.from_numpy(_road(5))
    for shift in (0, 3, 7):
        got = step_m(before, torch.from_numpy(_road(5 + shift)), MARKINGS)
        assert float(got) == pytest.approx(shift / MARKINGS.px_per_m, abs=1e-4)
    # a pattern moved by nearly a period reads as the short move back
    back = step_m(before, torch.from_numpy(_road(5 + round(MARKINGS.period_px) - 2)), MARKINGS)
    assert float(back) < 0
    bare = np.zeros_like(_road(0))
    bare[:] = MARKINGS.ground_rgb
    assert not marking_phase(torch.from_numpy(bare), MARKINGS)[1]
    assert float(step_m(before, torch.from_numpy(bare), MARKINGS)) == 0.0
    # a car over the centre line hides the dashes' ends: the edges beside it are not read
    hidden = _road(5 + 4)
    hidden[:] = np.where((hidden == MARKINGS.marking_rgb).all(-1, keepdims=True), hidden, MARKINGS.ground_rgb)
    occluded = hidden.copy()
    occluded[18:40, 28:36] = (25, 76, 242)  # a blue car across rows of the band
    got = step_m(before, torch.from_numpy(occluded), MARKINGS)  # fewer edges: their rounding differs
    assert float(got) == pytest.approx(4 / MARKINGS.px_per_m, abs=0.3 / MARKINGS.px_per_m)
    with pytest.raises(ValueError, match="uint8"):
        marking_phase(torch.zeros(64, 64, 3), MARKINGS)


def tiny_drive_model(captions: list[str] | None = None, **kw):
    """A small Drive generator (64x64, context 2) whose vocabulary reads ``captions``."""
    from worldsim.model.prompt import PromptTokenizer
    from worldsim.model.unet import UNetConfig
    from worldsim.model.world_model import WorldModel, WorldModelConfig

    captions = captions or ["drive: red ego car, lane 0.00, speed 8.00 m/s; magenta pedestrian, x 40.00 m"]
    cfg = WorldModelConfig(
        family="drive",
        width=64,
        height=64,
        context=2,
        cond_dim=32,
        vocab=PromptTokenizer.from_captions(captions).vocab,
        unet=UNetConfig(channels=[16, 16], blocks_per_level=1, unshuffle=4, attention=False, groups=4),
        sampling_context_noise=0.0,
        **kw,
    )
    cfg.prompt.dim, cfg.prompt.layers, cfg.prompt.heads, cfg.prompt.out_dim = 16, 1, 2, 16
    cfg.heads.channels, cfg.heads.hidden = 4, 16
    torch.manual_seed(0)
    return WorldModel(cfg).eval(), captions


def test_a_generator_told_the_distance_starts_as_it_was_and_its_rollout_counts_its_own_frames():
    """Its odometer input starts at zero (fine-tuning adds it to a checkpoint as the clock is
    added); once it has weights the distance changes the frame; a rollout hands each step the
    distance of the frames made before it, counted by ``odometer_step``; and the distance is required."""
    model, captions = tiny_drive_model(odometer=True, odometer_markings=MARKINGS)
    ctx = torch.from_numpy(np.stack([_road(5), _road(9)]))[None]
    acts, prompt = torch.zeros(1, 2, 2), model.encode_prompts(captions)

    def made(distance: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return model.predict_next(ctx, acts, prompt, generator=gen, frame_index=2, odometer_m=distance)

    with torch.no_grad():  # a network whose output depends on its conditioning (a fresh one's is zero)
        for p in model.unet.parameters():
            p.normal_(0.0, 0.2)
    assert torch.equal(made(0.0), made(60.0))  # zero weights: the distance changes nothing yet
    with torch.no_grad():
        model.odometer_in.weight.normal_(0.0, 1.0)
    assert not torch.equal(made(0.0), made(60.0))
    with pytest.raises(ValueError, match="odometer"):
        model.predict_next(ctx, acts, prompt, frame_index=2)
    with pytest.raises(ValueError, match="finite"):
        made(float("nan"))
    assert float(model.context_odometer(ctx)) == pytest.approx(4 / MARKINGS.px_per_m, abs=1e-4)

    told, calls = [], []
    real_predict, real_step = model.predict_next, model.odometer_step

    def spy_predict(*a, **kw):
        told.append(float(kw["odometer_m"]))
        return real_predict(*a, **kw)

    def spy_step(before, after):
        calls.append((before.clone(), after.clone()))
        return real_step(before, after) + 0.5  # as if the frames made scrolled half a metre each

    model.predict_next, model.odometer_step = spy_predict, spy_step
    made = model.rollout(ctx, acts[:, :1], torch.zeros(1, 3, 2), captions, frame_index=2, odometer_m=10.0)
    assert told == pytest.approx([10.0, 10.5, 11.0], abs=1e-3)
    # each step is counted from the frame before it to the frame made
    assert [(b.tolist(), a.tolist()) for b, a in calls] == [
        (ctx[:, -1].tolist(), made[:, 0].tolist()),
        (made[:, 0].tolist(), made[:, 1].tolist()),
        (made[:, 1].tolist(), made[:, 2].tolist()),
    ]
    plain, _ = tiny_drive_model()
    assert float(plain.odometer_step(ctx[:, 0], ctx[:, 1])) == 0.0  # no odometer: nothing counted
    with pytest.raises(ValueError, match="odometer_markings"):
        tiny_drive_model(odometer=True)


def test_training_reads_each_episodes_distance_from_its_own_first_frame():
    """``flat_odometer`` starts every episode of the flat arrays at zero, and ``odometer_at`` gives a
    text-to-video row (t = -1) zero."""
    from types import SimpleNamespace

    from worldsim.train.loop import flat_odometer, odometer_at

    frames = np.stack([_road(0), _road(4), _road(9), _road(20), _road(23)])  # episodes of 2 and 1 steps
    flat = SimpleNamespace(frames=frames, frame_start=np.array([0, 3]), steps=np.array([2, 1]))
    got = flat_odometer(flat, MARKINGS) * MARKINGS.px_per_m
    assert got == pytest.approx([0, 4, 9, 0, 3], abs=0.3)  # the drawn dashes round to whole rows
    at = odometer_at(flat_odometer(flat, MARKINGS), flat, np.array([0, 1, 1]), np.array([2, 1, -1]))
    assert at * MARKINGS.px_per_m == pytest.approx([9, 3, 0], abs=0.3)
    # a trail: the last 3 frames of each row, NaN before its episode's first (a text-to-video row: 0 last)
    trail = odometer_at(flat_odometer(flat, MARKINGS), flat, np.array([0, 1, 1]), np.array([2, 1, -1]), 3)
    assert trail.shape == (3, 3)
    assert trail[0] * MARKINGS.px_per_m == pytest.approx([0, 4, 9], abs=0.3)
    assert np.isnan(trail[1, 0]) and trail[1, 1:] * MARKINGS.px_per_m == pytest.approx([0, 3], abs=0.3)
    assert np.isnan(trail[2, :2]).all() and trail[2, 2] == 0.0


def test_the_windows_where_the_pedestrian_comes_into_view_are_found():
    """``entering_windows`` gives the window whose target is the first frame showing the pedestrian
    (its last context frame does not), for a world where it comes into view a few steps in."""
    from types import SimpleNamespace

    from worldsim.metrics.objects import extract_objects, palette_for
    from worldsim.physics import make_simulator
    from worldsim.scenes.drive import parse
    from worldsim.train.loop import entering_windows

    spec = parse(
        "red ego car, lane 0.00, speed 8.00 m/s; magenta pedestrian, x 16.00 m, start 9.00 s, "
        "speed 1.40 m/s, side 1.00; road, friction 0.90"
    )
    sim = make_simulator("drive", "mujoco", 64, 64)
    sim.reset(spec)
    frames = [sim.render()]
    for _ in range(20):
        sim.step(np.array([0.0, 0.3], np.float32))
        frames.append(sim.render())
    sim.close()
    frames = np.stack(frames)
    seen = extract_objects(frames, palette_for(spec)).visible[:, 1]
    first = int(np.flatnonzero(seen)[0])
    assert 2 < first < 15 and seen[first:].all()

    class OneEpisode:
        def __len__(self) -> int:
            return 1

        def episode(self, i: int) -> SimpleNamespace:
            return SimpleNamespace(frames=frames, spec=spec)

    got_episodes, got_t = entering_windows(OneEpisode())
    assert got_episodes.tolist() == [0] and got_t.tolist() == [first - 1]


def test_a_trail_of_distances_tells_the_generator_its_speed_and_moves_on_with_each_frame():
    """With ``odometer_trail=M`` the generator reads the mean step over the last M distances (its
    input starts at zero, as the odometer's); a distance alone is a trail that holds nothing before
    it; each frame made shifts the trail on by the step read between the frames; and the trail a
    rollout starts from real frames holds their distances."""
    from worldsim.model.world_model import speed_features

    model, captions = tiny_drive_model(odometer=True, odometer_markings=MARKINGS, odometer_trail=4)
    ctx = torch.from_numpy(np.stack([_road(5), _road(9)]))[None]
    acts, prompt = torch.zeros(1, 2, 2), model.encode_prompts(captions)
    nan = float("nan")
    slow, fast = torch.tensor([[nan, 0.0, 0.5, 1.0]]), torch.tensor([[nan, -1.0, 0.0, 1.0]])
    gap = torch.tensor([[1.0, nan, 2.0, 3.0]])  # a frame not read counts in the span
    feats = speed_features(torch.cat([slow, fast, torch.tensor([[nan, nan, nan, 2.0]]), gap]))
    torch.testing.assert_close(feats, torch.tensor([[0.5, 2 / 3], [1.0, 2 / 3], [0.0, 0.0], [2 / 3, 1.0]]))

    def made(trail) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return model.predict_next(ctx, acts, prompt, generator=gen, frame_index=2, odometer_m=trail)

    with torch.no_grad():
        for p in model.unet.parameters():
            p.normal_(0.0, 0.2)
    assert torch.equal(made(slow), made(fast))  # zero weights: the speed changes nothing yet
    with torch.no_grad():
        model.speed_in.weight.normal_(0.0, 1.0)
    assert not torch.equal(made(slow), made(fast))  # the same distance, another speed
    assert torch.equal(made(torch.tensor([1.0])), made(torch.tensor([[nan, nan, nan, 1.0]])))
    with pytest.raises(ValueError, match="trail"):
        made(torch.zeros(1, 3))
    start = model.start_odometer(2)
    assert start.shape == (2, 4) and start[:, -1].tolist() == [0.0, 0.0] and start[:, :3].isnan().all()
    before, after = torch.from_numpy(_road(5))[None], torch.from_numpy(_road(9))[None]
    moved = model.advance_odometer(slow, before, after)
    assert moved.tolist()[0][:3] == [0.0, 0.5, 1.0]
    assert moved[0, 3].item() == pytest.approx(1.0 + 4 / MARKINGS.px_per_m, abs=1e-4)
    trail = model.context_odometer(ctx)  # two real frames: the first at 0, nothing before it
    assert trail[0, :2].isnan().all() and trail[0, 2].item() == 0.0
    assert trail[0, 3].item() == pytest.approx(4 / MARKINGS.px_per_m, abs=1e-4)
    told, real = [], model.predict_next

    def spy(*a, **kw):
        told.append(kw["odometer_m"].clone())
        return real(*a, **kw)

    model.predict_next = spy
    model.rollout(ctx, acts[:, :1], torch.zeros(1, 2, 2), captions, frame_index=2, odometer_m=slow)
    torch.testing.assert_close(told[0], slow, equal_nan=True)
    assert told[1][0, :3].tolist() == [0.0, 0.5, 1.0]
