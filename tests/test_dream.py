"""Dreaming: rollouts beside MuJoCo, text-to-video starts, and the collapse check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model import tiny_config

from policies import make_policy
from worldsim.dream import collapse_check, dream, dream_report, tracked_palette
from worldsim.metrics.objects import object_masks, palette_for
from worldsim.model import WorldModel
from worldsim.scenes import caption, parse_prompt

PROMPT = "balls: red agent ball, radius 0.18 m, x -0.50 m, z 1.20 m, vx 1.00 m/s; blue ball, x 0.40 m; goal, x 0.60 m"


@pytest.fixture(scope="module")
def model() -> WorldModel:
    cfg = tiny_config()
    cfg.vocab = ["<pad>", "<unk>", "<num>", "balls", "red", "agent", "ball", "blue", "goal", "x", "m"]
    torch.manual_seed(0)
    return WorldModel(cfg).eval()


@pytest.mark.parametrize("context", ["real", "generated"])
def test_dream_runs_beside_mujoco(model, context):
    spec = parse_prompt(PROMPT)
    d = dream(
        model,
        spec,
        caption(spec),
        6,
        policy=make_policy("balls", "scripted"),
        context=context,
        sampling_steps=1,
    )
    assert d.generated.shape == d.truth.shape == (7, 32, 32, 3)
    assert d.actions.shape == (6, 2) and np.isfinite(d.actions).all()
    if context == "real":
        np.testing.assert_array_equal(d.generated[0], d.truth[0])  # starts from MuJoCo's frame
    report = dream_report(d, spec)
    assert report["steps"] == 6 and "collapse" in report


def test_dream_rejects_bad_actions(model):
    spec = parse_prompt(PROMPT)
    with pytest.raises(ValueError, match="finite"):
        dream(model, spec, caption(spec), 3, actions=np.array([[0, 0], [np.nan, 0], [0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        dream(model, spec, caption(spec), 3, actions=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="policy or an actions"):
        dream(model, spec, caption(spec), 3)


def test_collapse_check_passes_truth_and_catches_a_vanishing_object(model):
    spec = parse_prompt(PROMPT)
    truth = dream(model, spec, caption(spec), 20, actions=np.zeros((20, 2)), sampling_steps=1).truth
    assert collapse_check(truth, spec, truth)["all_persist"]
    broken = truth.copy()
    masks = object_masks(broken, palette_for(spec))  # [T, N, H, W]
    backdrop = broken[0, 2, 16]  # a pixel of the backdrop
    broken[10:][masks[10:, 1]] = backdrop  # the blue ball vanishes half way
    result = collapse_check(broken, spec, truth)
    assert not result["all_persist"]
    assert result["objects"]["ball1"]["visible_fraction"] < 0.6
    assert result["objects"]["ball0"]["persists"]


def test_collapse_check_follows_the_goal_the_prompt_places(model):
    """The goal marker is scenery to the metrics, but the prompt places it: a video that paints it
    over with the backdrop fails the check, under the name ``goal``, and the balls still persist."""
    spec = parse_prompt(PROMPT)
    truth = dream(model, spec, caption(spec), 20, actions=np.zeros((20, 2)), sampling_steps=1).truth
    palette = tracked_palette(spec)
    assert palette.objects[-1] == "goal" and "goal" not in palette_for(spec).objects
    clean = collapse_check(truth, spec, truth)
    assert clean["all_persist"] and clean["objects"]["goal"]["frames_shown_by_truth"] == 21
    broken = truth.copy()
    goal = object_masks(broken, palette)[:, -1]  # [T, H, W]
    assert goal[0].sum() > 20
    broken[8:][goal[8:]] = broken[0, 2, 16]  # a pixel of the backdrop
    result = collapse_check(broken, spec, truth)
    assert not result["all_persist"] and not result["objects"]["goal"]["persists"]
    assert all(result["objects"][b]["persists"] for b in ("ball0", "ball1"))


def test_the_collapse_check_counts_what_is_left_on_the_scenery_apart_from_the_objects(model):
    """MuJoCo's frames are the scene's flat colours: no pixel is off its palette. Specks of a colour
    the scene does not have are counted, frame by frame, without failing any object."""
    spec = parse_prompt(PROMPT)
    truth = dream(model, spec, caption(spec), 10, actions=np.zeros((10, 2)), sampling_steps=1).truth
    clean = collapse_check(truth, spec, truth)
    assert clean["off_palette"] == {
        "share_mean": 0.0,
        "share_max": 0.0,
        "share_last": 0.0,
        "truth_share_max": 0.0,
    }
    specked = truth.copy()
    specked[5:, 10:14, 10:20] = (120, 20, 120)  # 40 pixels of a colour no Balls scene has
    result = collapse_check(specked, spec, truth)
    share = 40 / (truth.shape[1] * truth.shape[2])
    assert result["off_palette"]["share_last"] == pytest.approx(share)
    assert result["off_palette"]["share_mean"] == pytest.approx(share * 6 / 11)
    assert result["all_persist"] and result["off_palette"]["truth_share_max"] == 0.0


def test_a_drive_dream_counts_its_first_step_from_the_prompt_s_speed(monkeypatch):
    """``worldsim dream`` hands the generator's odometer dynamics the prompt's speed: with a law
    that coasts, every step is the prompt's, whatever the frames read."""
    from tests.test_odometry import MARKINGS, tiny_drive_model
    from worldsim.scenes import sample, start_step_m

    spec = sample("drive", np.random.default_rng(0))
    model, _ = tiny_drive_model(
        [caption(spec)], odometer=True, odometer_markings=MARKINGS, odometer_trail=4, odometer_dynamics=True
    )
    monkeypatch.setattr(model, "odometer_step", lambda before, after: torch.full((before.shape[0],), 9.0))
    seen, real = [], model.advance_odometer
    monkeypatch.setattr(model, "advance_odometer", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    dream(model, spec, caption(spec), 3, actions=np.zeros((3, 2), np.float32))
    step = start_step_m(spec)
    assert [t[0, -1].item() for t in seen] == pytest.approx([step, 2 * step, 3 * step], rel=1e-5)
