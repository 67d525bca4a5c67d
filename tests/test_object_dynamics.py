"""Object dynamics: tracks read off the frames, a prompt's objects, a fit that learns a law of
motion, and a generator whose objects move by them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldsim.data.collect import collect
from worldsim.data.loader import load_dataset
from worldsim.metrics.objects import extract_objects, palette_for
from worldsim.model.object_dynamics import (
    ObjectDynamics,
    TrackSet,
    describe_objects,
    fit_object_dynamics,
    object_tracks,
)
from worldsim.model.unet import UNetConfig
from worldsim.model.world_model import WorldModel, WorldModelConfig
from worldsim.scenes import parse_prompt
from worldsim.scenes.colours import rgb_uint8

PROMPT = (
    "balls: green agent ball, radius 0.18 m, mass 1.50 kg, restitution 0.70, friction 0.50, x -0.40 m, "
    "z 1.00 m, vx 0.00 m/s, vz 0.00 m/s; red ball, radius 0.16 m, mass 0.80 kg, restitution 0.60, "
    "friction 0.40, x 0.50 m, z 0.60 m, vx 0.00 m/s, vz 0.00 m/s; goal, x 0.20 m"
)


@pytest.fixture(scope="module")
def balls(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("balls")
    return collect(
        "balls", episodes=3, out=out, num_envs=1, seed=5, width=32, height=32, max_steps=20, progress=False
    )


def test_tracks_are_where_the_metrics_colour_extractor_finds_the_objects(balls):
    data = load_dataset(balls)
    for i in range(len(data)):
        e = data.episode(i)
        truth = extract_objects(e.frames, palette_for(e.spec))
        d = describe_objects(e.spec, 3)
        centroid, count = object_tracks(torch.from_numpy(e.frames)[None], torch.from_numpy(d.colours)[None])
        n = len(e.spec.balls)
        seen = truth.visible[:, :n]
        assert seen.any()
        # an edge pixel of another shade counted or not: a sixth of a pixel on these 6-pixel balls
        # (within 0.09 px on the 64x64 frames of data/balls_val)
        np.testing.assert_allclose(centroid[0, :, :n].numpy()[seen], truth.centroid_px[:, :n][seen], atol=0.2)
        assert torch.isnan(centroid[0, :, n:]).all() and (count[0, :, n:] == 0).all()  # padding rows


def test_a_prompt_describes_its_objects_padded_and_other_families_are_refused():
    spec = parse_prompt(PROMPT, "balls")
    d = describe_objects(spec, 3)
    assert d.colours[:2].tolist() == [list(rgb_uint8("green")), list(rgb_uint8("red"))]
    np.testing.assert_allclose(d.properties[:2], [[0.18, 1.5, 0.7, 0.5], [0.16, 0.8, 0.6, 0.4]])
    assert d.present.tolist() == [True, True, False] and d.agent.tolist() == [True, False, False]
    assert (d.colours[2] < 0).all() and (d.properties[2] == 0).all()
    one = describe_objects(spec, 1)  # more objects than the dynamics read: the rest are the flow's
    assert one.colours.tolist() == [list(rgb_uint8("green"))] and one.present.tolist() == [True]
    push = parse_prompt("push: red box, size 0.08 m, mass 0.50 kg, x 0.10 m, y -0.20 m", "push")
    with pytest.raises(ValueError, match="no physical properties"):
        describe_objects(push, 3)


def _falling(episodes: int, steps: int, seed: int) -> TrackSet:
    """Two balls in pixels under a law the fit must find: each falls 1.5 px/step^2 faster and bounces
    off a floor at v = 28 with its own restitution (a property); the agent is pushed by the action."""
    rng = np.random.default_rng(seed)
    c = np.zeros((episodes, steps, 2, 2), np.float32)
    actions = rng.uniform(-1, 1, (episodes, steps, 2)).astype(np.float32)
    rest = rng.uniform(0.4, 0.9, (episodes, 2)).astype(np.float32)
    p = rng.uniform([4, 4], [28, 20], (episodes, 2, 2))
    v = rng.uniform(-1, 1, (episodes, 2, 2))
    for t in range(steps):
        c[:, t] = p
        v[..., 1] += 1.5
        v[:, 0, 0] += actions[:, t, 0]
        p = p + v
        below = p[..., 1] > 28
        p[..., 1] = np.where(below, 28 - (p[..., 1] - 28) * rest, p[..., 1])
        v[..., 1] = np.where(below, -v[..., 1] * rest, v[..., 1])
    props = np.zeros((episodes, 2, 4), np.float32)
    props[..., 2] = rest
    return TrackSet(
        torch.from_numpy(c),
        torch.full((episodes, steps, 2), 20.0),
        torch.from_numpy(actions),
        torch.from_numpy(props),
        torch.ones(episodes, 2, dtype=torch.bool),
        torch.tensor([[True, False]] * episodes),
        torch.full((episodes,), steps),
    )


def test_the_fit_learns_a_law_of_motion_that_carrying_the_last_move_on_misses():
    torch.manual_seed(0)
    module = ObjectDynamics(context=3, max_objects=2, properties=4, action_dim=2, width=64, frame_hw=(32, 32))
    tracks = _falling(200, 12, seed=1)
    fitted = fit_object_dynamics(
        module, tracks, one_step=1500, rollout=100, horizon=3, batch=128, held_out=0.2
    )
    assert fitted["held_out_episodes"] == 40 and fitted["carry_one_step_px"] > 1.4  # gravity alone
    assert fitted["one_step_px"] < 0.5 * fitted["carry_one_step_px"]
    assert not any(p.requires_grad for p in module.parameters())  # kept as fitted
    assert float(module.property_scale[2]) == pytest.approx(float(tracks.properties[..., 2].std()), rel=0.05)


def _generator(data, **over) -> WorldModel:
    from worldsim.model.prompt import PromptTokenizer

    captions = [data.episode(i).caption for i in range(len(data))] + [PROMPT]
    settings = {
        "context": 2,
        "height": 32,
        "width": 32,
        "cond_dim": 32,
        "flow_channels": [8, 8],
        "unet": UNetConfig(channels=[8, 8], blocks_per_level=1, groups=4),
        "object_dynamics": True,
        "object_max": 3,
        "object_properties": 4,
        "object_dynamics_width": 16,
        "vocab": PromptTokenizer.from_captions(captions).vocab,
    }
    cfg = WorldModelConfig(**{**settings, **over})
    cfg.prompt.dim, cfg.prompt.layers, cfg.prompt.heads, cfg.prompt.out_dim = 16, 1, 2, 16
    cfg.heads.channels, cfg.heads.hidden = 4, 16
    return WorldModel(cfg).eval()


def test_each_object_moves_by_its_dynamics_where_its_track_is_whole(balls):
    """Dynamics that move every object 3 px right: the warp moves each ball's region by that, the
    scenery stays, and where a context frame is padding the flow's field decides (zero here)."""
    data = load_dataset(balls)
    model = _generator(data, min_change_levels=255)  # no change passes: the frame is the warp
    last_layer = model.object_dynamics.net[-1]
    last_layer.weight.data.zero_()
    last_layer.bias.data.copy_(torch.tensor([3.0, 0.0]))
    model.flow_net.head.weight.data.zero_()  # the flow moves nothing
    model.flow_net.head.bias.data.zero_()
    e = data.episode(0)
    ctx = torch.from_numpy(e.frames[4:6])[None]
    actions = torch.zeros(1, 2, 2)
    prompt = model.encode_prompts([e.caption])
    colours = torch.from_numpy(describe_objects(e.spec, 3).colours)[None]
    before, _ = object_tracks(ctx[:, -1:], colours)
    made = model.predict_next(ctx, actions, prompt, generator=torch.Generator().manual_seed(0))
    after, _ = object_tracks(made[:, None], colours)
    n = len(e.spec.balls)
    moved = (after - before)[0, 0, :n]
    inside = before[0, 0, :n, 0] < 32 - 3 - 6  # balls far enough from the right wall to move whole
    assert inside.any()
    np.testing.assert_allclose(moved[inside].numpy(), [[3.0, 0.0]] * int(inside.sum()), atol=0.6)
    padded = model.predict_next(
        ctx,
        actions,
        prompt,
        context_mask=torch.tensor([[False, True]]),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(padded, ctx[:, -1])  # no track: the flow's zero field, nothing moves


def test_a_generator_with_object_dynamics_needs_the_prompts_description_and_a_flow(balls):
    data = load_dataset(balls)
    model = _generator(data)
    e = data.episode(0)
    whole = model.encode_prompts([e.caption])
    assert whole.shape[1] == 16 + 3 * (5 + 4)
    assert torch.equal(
        model.prompt_embedding(whole), model.prompt_encoder(*[t for t in model.tokenizer.encode([e.caption])])
    )
    ctx = torch.from_numpy(e.frames[4:6])[None]
    with pytest.raises(ValueError, match="encode_prompts' output whole"):
        model.predict_next(ctx, torch.zeros(1, 2, 2), model.prompt_embedding(whole))
    with pytest.raises(ValueError, match="need flow_channels"):
        _generator(data, flow_channels=[])
    cfg = WorldModelConfig(flow_channels=[8, 8], object_dynamics=True)
    with pytest.raises(ValueError, match="object_max"):
        WorldModel(cfg)


def test_from_one_real_frame_the_prompts_free_paths_give_the_dynamics_a_track(balls):
    """With ``object_start_path`` the frames before an episode's start hold each ball where its
    prompt's parabola had it, so a one-frame start's balls move by their dynamics (3 px right here)
    from the first step, where without it the flow's field (zero) leaves them still."""
    from worldsim import scenes
    from worldsim.checkpoints import with_sampling
    from worldsim.model.script_map import ScriptMapConfig

    data = load_dataset(balls)
    camera = ScriptMapConfig(**scenes.scene_camera("balls", 32, 32))
    model = _generator(data, min_change_levels=255, script_map_camera=camera, object_start_path=True)
    last_layer = model.object_dynamics.net[-1]
    last_layer.weight.data.zero_()
    last_layer.bias.data.copy_(torch.tensor([3.0, 0.0]))
    model.flow_net.head.weight.data.zero_()
    model.flow_net.head.bias.data.zero_()
    e = data.episode(0)
    first = torch.from_numpy(e.frames[0])[None, None].expand(1, 2, *e.frames.shape[1:]).clone()
    one_frame = torch.tensor([[False, True]])
    prompt = model.encode_prompts([e.caption])
    assert prompt.shape[1] == 16 + 3 * (5 + 4) + 3 * (2 - 1) * 2  # and each ball's step before the start
    colours = torch.from_numpy(describe_objects(e.spec, 3).colours)[None]
    before, _ = object_tracks(first[:, -1:], colours)
    made = model.predict_next(first, torch.zeros(1, 2, 2), prompt, one_frame, generator=torch.Generator())
    after, _ = object_tracks(made[:, None], colours)
    n = len(e.spec.balls)
    inside = before[0, 0, :n, 0] < 32 - 3 - 6
    assert inside.any()
    moved = (after - before)[0, 0, :n][inside].numpy()
    np.testing.assert_allclose(moved, [[3.0, 0.0]] * int(inside.sum()), atol=0.6)

    with_sampling(model, {"object_start_path": False})  # a sampling setting: the same weights without it
    with pytest.raises(ValueError, match="encode_prompts' output whole"):  # a prompt encoded with it
        model.predict_next(first, torch.zeros(1, 2, 2), prompt, one_frame)
    still = model.predict_next(first, torch.zeros(1, 2, 2), model.encode_prompts([e.caption]), one_frame)
    assert torch.equal(still, first[:, -1])  # no track: the flow's zero field
    with pytest.raises(ValueError, match="fixed camera"):
        _generator(data, object_start_path=True)
    with pytest.raises(ValueError, match="needs object_dynamics"):
        with_sampling(
            _generator(data, object_dynamics=False, script_map_camera=camera), {"object_start_path": True}
        )
    with pytest.raises(ValueError, match="true or false"):
        with_sampling(model, {"object_start_path": "yes"})
