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


@pytest.mark.parametrize("family", ["balls", "push", "drive"])
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
        placed = ["goal"] if family != "drive" else []  # Drive's pedestrian waits out of view
        bodies = [o.colour for o in scenes.family_of(family).objects(spec)] + placed
        pair = torch.from_numpy(np.stack([frames[i], painted[i].numpy()]))[None]
        centres, counts = object_tracks(pair, torch.tensor([rgb_uint8(c) for c in bodies])[None])
        shown = counts[0, 0] > 0
        assert shown.any() and (counts[0, 1] > 0)[shown].all()  # every body MuJoCo shows is on the map
        assert (counts[0, 1] == 0)[~shown].all()  # and nothing it does not show
        centres, counts = centres[:, :, shown], counts[:, :, shown]
        errors += (centres[0, 1] - centres[0, 0]).norm(dim=-1).tolist()
        sizes += (counts[0, 1] / counts[0, 0]).tolist()
    # MuJoCo's bodies and the map's agree to a fraction of a pixel (measured over these worlds: 0.14 px
    # on average on Balls, 0.08 px on Push, at most 0.49 px; Drive's ego car 0.5 px in every world),
    # and in pixel count within 0.82-1.30x (a turned Push box's is the box around it)
    assert np.mean(errors) < 0.6 and np.max(errors) < 1.0, errors
    assert 0.7 < min(sizes) and max(sizes) < 1.5, sizes


def test_drives_layout_is_the_road_its_first_frame_shows():
    # the following camera has not moved at the reset, and the road is the same in every world: the
    # map painted over grass is MuJoCo's first frame but for a few pixels at the bodies' edges
    from worldsim.model.first_frame import painted, snap_to_palette
    from worldsim.model.pixels import to_float, to_uint8

    frames, captions = _first_frames("drive", 6, seed=0)
    layout = layout_maps(captions, "drive", _camera("drive"), 64, 64, torch.device("cpu"))
    grass = to_float(torch.tensor(rgb_uint8("grass"), dtype=torch.uint8).expand(64, 64, 3))[None]
    drawn = snap_to_palette(to_uint8(painted(grass.expand(6, -1, -1, -1), layout)), captions, "drive")
    differ = (drawn.numpy().astype(int) - frames).__abs__().max(-1) > 6
    assert differ.mean() < 0.05, differ.mean(axis=(1, 2))  # measured: 3.2 % in every world


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
    # each where it is, and snapped to the scene's colours it loses the mean's ghosts; the net keeps
    # the balls there and draws closer to MuJoCo (measured: 0.10 levels against the snapped map's
    # 0.29 and the mean frame's 14.3; centroids 0.09 px)
    assert fitted["mean_frame_bodies_found"] == 0.0 and fitted["painted_map_bodies_found"] == 1.0
    assert fitted["bodies_found"] > 0.9 and fitted["centroid_px"] < 1.0, fitted
    assert fitted["error_levels"] < fitted["painted_map_error_levels"], fitted
    assert fitted["painted_map_error_levels"] < 0.2 * fitted["mean_frame_error_levels"], fitted

    # told the wrong prompts, the same net draws the bodies elsewhere: the figures see it
    def figures(prompts: list[str]) -> dict[str, float]:
        drawn = draw_first_frames(net, tokenizer, torch.from_numpy(mean), prompts, "balls", camera)
        return first_frame_figures(drawn.numpy(), frames, captions, "balls")

    wrong, right = figures(captions[::-1]), figures(captions)
    assert wrong["error_levels"] > right["error_levels"]
    assert not (wrong["centroid_px"] < 4 * right["centroid_px"]), (wrong, right)  # NaN (none found) is far


def test_the_net_draws_the_same_frame_whatever_the_padding():
    # the net reads prompts only up to the batch's longest one (about 50 of the tokenizer's 128):
    # padding is masked, so the frame is the one the whole padded prompt gives
    torch.manual_seed(0)
    _, captions = _first_frames("push", 4, seed=2)
    tokenizer = PromptTokenizer.from_captions(captions)
    prompt = PromptEncoderConfig(vocab_size=len(tokenizer.vocab), dim=16, heads=2, out_dim=16)
    net = FirstFrameNet([8, 16], prompt)
    for p in net.unet.parameters():  # a drawn net whose every weight (head and FiLM too) is live
        torch.nn.init.normal_(p, std=0.1)
    ids, values = tokenizer.encode(captions)
    assert int((ids != 0).sum(1).max()) < ids.shape[1] // 2
    mean, layout = torch.zeros(4, 3, 64, 64), torch.zeros(4, 4, 64, 64)
    with torch.no_grad():
        whole = net.prompt_encoder(ids, values)
        drawn = net(mean, layout, ids, values)
        by_whole = net.unet(torch.cat([mean, layout], 1), whole)
        by_other = net.unet(torch.cat([mean, layout], 1), whole.flip(0))
    torch.testing.assert_close(drawn, by_whole, atol=1e-5, rtol=1e-5)
    assert (by_whole - by_other).abs().max() > 1e-2  # and the prompt does reach the frame


def test_a_drawn_frame_is_snapped_to_the_scenes_flat_colours():
    # MuJoCo draws flat colours; a net draws edges as blends. A blend of the orange pole and the grey
    # backdrop is nearest the yellow ball's colour alone, but it is orange or grey; a colour a few
    # levels off is that colour; the scene's own colours stay
    from worldsim.metrics.objects import palette_for
    from worldsim.model.first_frame import snap_to_palette

    spec = scenes.parse_prompt(
        "balls: yellow agent ball, radius 0.2 m, mass 1 kg, restitution 0.7, friction 0.5, x 0.5 m, z 1 m; goal, x -0.5 m"
    )
    palette = np.asarray(palette_for(spec).rgb, np.int16)
    names = list(palette_for(spec).colours)
    orange, backdrop, yellow = (palette[names.index(n)] for n in ("goal", "backdrop", "yellow"))
    blend = (0.6 * orange + 0.4 * backdrop).round()
    assert np.abs(blend - yellow).max() < np.abs(blend - orange).max()  # the single nearest is yellow
    pixels = np.stack([blend, (0.3 * orange + 0.7 * backdrop).round(), backdrop + [5, -4, 3], *palette])
    frame = torch.from_numpy(pixels.clip(0, 255).astype(np.uint8)).view(1, 1, -1, 3)
    snapped = snap_to_palette(frame, [scenes.caption(spec)], "balls")[0, 0].numpy()
    assert (snapped[0] == orange).all() and (snapped[1] == backdrop).all() and (snapped[2] == backdrop).all()
    assert (snapped[3:] == palette).all()


def test_drives_layout_shows_the_agents_a_prompt_puts_in_the_first_view():
    # sampled worlds start the lead car 14-30 m ahead and the pedestrian 25-55 m down the road, out of
    # the first frame; a prompt may put them within it, and the map shows them where MuJoCo does
    text = (
        "drive: red ego car, lane 0, speed 6 m/s; green lead car, gap 8 m, speed 5 m/s; "
        "yellow pedestrian, x 6 m, start 3 s, speed 1.2 m/s, side 1; road, friction 0.9"
    )
    spec = scenes.parse_prompt(text)
    sim = make_simulator("drive", "mujoco", 64, 64)
    sim.reset(spec)
    frame = sim.render()
    sim.close()
    layout = layout_maps([text], "drive", _camera("drive"), 64, 64, torch.device("cpu"))
    cover = layout[0, 0] > 0.5
    colour = ((layout[0, 1:] / layout[0, :1].clamp_min(1e-6) + 1) * 127.5).round().permute(1, 2, 0)
    painted = torch.where(cover[..., None], colour, torch.zeros_like(colour)).to(torch.uint8)
    colours = torch.tensor([rgb_uint8(c) for c in ("red", "green", "yellow")])[None]
    centres, counts = object_tracks(torch.from_numpy(np.stack([frame, painted.numpy()]))[None], colours)
    assert (counts[0, 0] > 0).all() and (counts[0, 1] > 0).all(), counts  # all three in view, all drawn
    assert (centres[0, 1] - centres[0, 0]).norm(dim=-1).max() < 1.0, centres
