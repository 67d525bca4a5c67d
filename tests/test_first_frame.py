"""Text to video over the prompt's layout: the map puts each body where MuJoCo draws it, and a
first-frame net fitted to first frames draws the bodies the mean frame lacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim import scenes
from worldsim.model.first_frame import (
    FirstFrameNet,
    draw_first_frames,
    first_frame_figures,
    fit_first_frame,
    layout_maps,
)
from worldsim.model.object_dynamics import object_tracks
from worldsim.model.prompt import PromptEncoderConfig, PromptTokenizer
from worldsim.model.script_map import ScriptMapConfig
from worldsim.physics import make_simulator
from worldsim.scenes.colours import rgb_uint8


def _first_frames(family: str, count: int, seed: int, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """MuJoCo's first frames of ``count`` sampled worlds and their prompts."""
    rng = np.random.default_rng(seed)
    sim = make_simulator(family, "mujoco", size, size)
    frames, captions = [], []
    for _ in range(count):
        spec = scenes.sample(family, rng)
        sim.reset(spec)
        frames.append(sim.render())
        captions.append(scenes.caption(spec))
    return np.stack(frames), captions


def _camera(family: str) -> ScriptMapConfig:
    return ScriptMapConfig(**scenes.scene_camera(family, 64, 64))


@pytest.mark.parametrize("family", ["balls", "push"])
def test_the_layout_map_puts_each_body_where_mujoco_draws_it(family):
    frames, captions = _first_frames(family, 8, seed=0)
    layout = layout_maps(captions, family, _camera(family), 64, 64, torch.device("cpu"))
    cover = layout[:, :1]
    colour = layout[:, 1:] / cover.clamp_min(1e-6)  # a body's own colour wherever it covers a pixel
    painted = ((colour + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    painted = torch.where(cover.permute(0, 2, 3, 1) > 0.5, painted, torch.zeros_like(painted))
    errors, sizes = [], []
    for i, text in enumerate(captions):
        spec = scenes.parse_prompt(text)
        bodies = [o.colour for o in scenes.family_of(family).objects(spec)] + ["goal"]
        pair = torch.from_numpy(np.stack([frames[i], painted[i].numpy()]))[None]
        centres, counts = object_tracks(pair, torch.tensor([rgb_uint8(c) for c in bodies])[None])
        assert (counts[0, 1] > 0).all()  # every body the prompt places is on the map
        errors += (centres[0, 1] - centres[0, 0]).norm(dim=-1).tolist()
        sizes += (counts[0, 1] / counts[0, 0]).tolist()
    # MuJoCo's bodies and the map's agree to about a pixel (measured over these worlds: 0.34 px on
    # average on Balls, 0.08 px on Push, at most 1.16 px: the goal band where balls hide part of it),
    # and in pixel count within 0.85-1.38x (the map's disc is the ellipse in a sphere's box, a turned
    # Push box's is the box around it)
    assert np.mean(errors) < 0.6 and np.max(errors) < 1.5, errors
    assert 0.7 < min(sizes) and max(sizes) < 1.6, sizes


def test_a_scene_whose_camera_follows_the_car_has_no_layout():
    drive = scenes.sample("drive", np.random.default_rng(0))
    with pytest.raises(ValueError, match="no start layout"):
        scenes.layout_of(drive)


def test_a_fitted_first_frame_net_draws_the_bodies_the_mean_frame_lacks():
    torch.manual_seed(0)
    frames, captions = _first_frames("balls", 40, seed=1)
    mean = frames.mean(0).round().astype(np.uint8)
    tokenizer = PromptTokenizer.from_captions(captions)
    prompt = PromptEncoderConfig(vocab_size=len(tokenizer.vocab), dim=16, layers=1, heads=2, out_dim=16)
    net = FirstFrameNet([8, 16], prompt)
    camera = _camera("balls")
    fitted = fit_first_frame(
        net, tokenizer, mean, frames, captions, "balls", camera, steps=150, batch=16, held_out=0.2
    )
    assert fitted["held_out_episodes"] == 8
    # on worlds it was not fitted to: the mean frame shows no ball; the map painted over it shows
    # each where it is, among the mean's ghosts; the net keeps them there and clears the ghosts
    assert fitted["mean_frame_bodies_found"] == 0.0 and fitted["painted_map_bodies_found"] == 1.0
    assert fitted["bodies_found"] > 0.9 and fitted["centroid_px"] < 1.0, fitted
    assert fitted["error_levels"] < 0.7 * fitted["painted_map_error_levels"], fitted
    assert fitted["painted_map_error_levels"] < fitted["mean_frame_error_levels"], fitted

    # told the wrong prompts, the same net draws the bodies elsewhere: the figures see it
    def figures(prompts: list[str]) -> dict[str, float]:
        drawn = draw_first_frames(net, tokenizer, torch.from_numpy(mean), prompts, "balls", camera)
        return first_frame_figures(drawn.numpy(), frames, captions, "balls")

    wrong, right = figures(captions[::-1]), figures(captions)
    assert wrong["error_levels"] > right["error_levels"]
    assert not (wrong["centroid_px"] < 4 * right["centroid_px"]), (wrong, right)  # NaN (none found) is far
