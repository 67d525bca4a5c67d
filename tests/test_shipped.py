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
