"""The checkpoints that ship with worldsim load and generate worlds that follow MuJoCo for a while.

Each shipped generator dreams 10 steps from MuJoCo's first frame of a few sampled worlds, under a
scripted-mixture policy acting on MuJoCo's state, and its objects must stay near MuJoCo's: the mean
centroid error over those steps is bounded loosely (a generator that lost or scattered its objects
is tens of pixels off) and every object MuJoCo shows is still drawn at the end.
"""

from __future__ import annotations

import numpy as np
import pytest

from policies import make_policy
from worldsim import scenes
from worldsim.checkpoints import SHIPPED_DIR, load_world_model
from worldsim.dream import dream
from worldsim.metrics.objects import centroid_errors, extract_objects, palette_for

FAMILIES = ("balls", "push", "drive")
STEPS = 10
WORLDS = 3
BOUND_PX = 6.0  # a tenth of the 64 px frame, per object, averaged over the 10 steps
BOUND_FIRST_PX = 1.5  # a text-to-video first frame's bodies, on average (README, "Text to video")


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_checkpoint_follows_mujoco_for_10_steps(family: str) -> None:
    if not (SHIPPED_DIR / family / "config.json").is_file():
        pytest.skip(f"no checkpoint of {family} ships in this copy")
    model = load_world_model(None, family)
    assert model.cfg.family == family
    errors = []
    for seed in range(WORLDS):
        rng = np.random.default_rng(seed)
        spec = scenes.sample(family, rng, "id")
        d = dream(model, spec, scenes.caption(spec), STEPS, policy=make_policy(family, "mixture", rng))
        assert d.generated.shape == d.truth.shape and d.generated.dtype == np.uint8
        palette = palette_for(spec)
        errors.append(np.nanmean(centroid_errors(d.truth[1:], d.generated[1:], palette).curve_px()))
        shown = extract_objects(d.truth[-1], palette).visible
        drawn = extract_objects(d.generated[-1], palette).visible
        assert (drawn | ~shown).all(), f"{family} seed {seed}: objects lost within {STEPS} steps"
    assert float(np.mean(errors)) < BOUND_PX, f"{family}: centroid errors {errors} px"


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_checkpoint_draws_the_prompts_first_frame(family: str) -> None:
    # text to video: from the prompt alone, every body MuJoCo's first frame shows is drawn, near where
    # MuJoCo draws it (the generator's own first frame drew none of Balls' balls: README)
    from worldsim.model.first_frame import first_frame_figures
    from worldsim.physics import make_simulator

    if not (SHIPPED_DIR / family / "config.json").is_file():
        pytest.skip(f"no checkpoint of {family} ships in this copy")
    model = load_world_model(None, family)
    assert model.cfg.first_frame_layout, (
        f"the shipped {family} generator draws no first frame over the layout"
    )
    rng = np.random.default_rng(0)
    sim = make_simulator(family, "mujoco", model.cfg.height, model.cfg.width)
    truth, captions = [], []
    for _ in range(WORLDS):
        spec = scenes.sample(family, rng, "id")
        sim.reset(spec)
        truth.append(sim.render())
        captions.append(scenes.caption(spec))
    context, mask = model.first_frames(captions)
    assert context.shape[:2] == mask.shape and bool(mask[:, -1].all())
    figures = first_frame_figures(context[:, -1].cpu().numpy(), np.stack(truth), captions, family)
    assert figures["bodies_found"] == 1.0, figures
    assert figures["centroid_px"] < BOUND_FIRST_PX, figures


def test_ship_stores_float16_and_loads_as_float32(tmp_path):
    import torch

    from worldsim.checkpoints import ship, with_sampling
    from worldsim.model import WorldModel, WorldModelConfig
    from worldsim.model.probe import ProbeConfig, StateProbe
    from worldsim.model.unet import UNetConfig
    from worldsim.train.checkpoint import load_checkpoint, save_checkpoint
    from worldsim.train.probe import load_probe, save_probe

    cfg = WorldModelConfig(family="push", context=2, cond_dim=16, unet=UNetConfig(channels=[8, 8], groups=4))
    cfg.prompt.dim, cfg.prompt.layers, cfg.prompt.heads, cfg.prompt.out_dim = 8, 1, 2, 8
    cfg.heads.channels, cfg.heads.hidden = 4, 8
    model = WorldModel(cfg)
    save_checkpoint(tmp_path / "run", model, cfg.to_dict(), family="push", step=7)
    probe = StateProbe(ProbeConfig(family="push", state_size=12, channels=8, hidden=8))
    save_probe(probe, tmp_path / "run")
    dest = ship(tmp_path / "run", "push", tmp_path / "shipped")
    loaded = load_world_model(dest, "push")
    assert next(loaded.parameters()).dtype == torch.float32
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-3, rtol=1e-3, msg=name)
    frames, colours = torch.randint(0, 255, (1, 2, 64, 64, 3), dtype=torch.uint8), torch.rand(1, 9)
    torch.testing.assert_close(
        load_probe(dest, "push")(frames, colours), probe(frames, colours), atol=2e-2, rtol=2e-2
    )
    size = (dest / "model.safetensors").stat().st_size
    assert size < 0.6 * (tmp_path / "run" / "model.safetensors").stat().st_size
    assert loaded.cfg.sampling_precision == "float32"  # the run's setting
    again = ship(tmp_path / "run", "push", tmp_path / "bf16", sampling={"sampling_precision": "bfloat16"})
    assert load_world_model(again, "push").cfg.sampling_precision == "bfloat16"
    with pytest.raises(ValueError, match="not sampling settings"):
        ship(tmp_path / "run", "push", tmp_path / "bad", sampling={"context": 2})
    for bad in ([[1, 2]], [[1, 2, 256]], [[True, 0, 0]], "grey"):
        with pytest.raises(ValueError, match="flow_still_colours"):
            ship(tmp_path / "run", "push", tmp_path / "bad", sampling={"flow_still_colours": bad})
    with pytest.raises(ValueError, match="needs flow_channels"):  # this generator has no flow to keep still
        ship(tmp_path / "run", "push", tmp_path / "bad", sampling={"flow_still_colours": [[1, 2, 3]]})
    with pytest.raises(ValueError, match="has no flow"):
        with_sampling(loaded, {"flow_still_colours": [[1, 2, 3]]})
    assert load_checkpoint(again).metadata["shipped_from"] == str(tmp_path / "run")
    twice = ship(again, "push", tmp_path / "twice")
    assert load_checkpoint(twice).metadata["shipped_from"] == str(tmp_path / "run")  # the run it came from
