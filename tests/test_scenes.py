"""Scene specs, samplers and the prompt grammar."""

import json

import numpy as np
import pytest
from conftest import FAMILIES
from hypothesis import given, settings
from hypothesis import strategies as st

from worldsim.scenes import (
    FAMILIES as REGISTRY,
)
from worldsim.scenes import (
    PromptError,
    caption,
    parse_prompt,
    sample,
    spec_from_dict,
    spec_to_dict,
)
from worldsim.scenes import balls as balls_scene
from worldsim.scenes import drive as drive_scene
from worldsim.scenes import push as push_scene


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(FAMILIES), split=st.sampled_from(["id", "ood"]))
def test_caption_round_trips_exactly(seed, family, split):
    spec = sample(family, np.random.default_rng(seed), split)
    text = caption(spec)
    assert text.startswith(f"{family}: ")
    assert parse_prompt(text) == spec
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec


@pytest.mark.parametrize("family", FAMILIES)
def test_samplers_are_seeded_and_varied(family):
    a = [sample(family, np.random.default_rng(s)) for s in range(20)]
    b = [sample(family, np.random.default_rng(s)) for s in range(20)]
    assert a == b
    assert len({caption(s) for s in a}) == 20


def _values(family, split, getter, n=200):
    rng = np.random.default_rng(1)
    return np.array([v for _ in range(n) for v in getter(sample(family, rng, split))])


@pytest.mark.parametrize(
    "family,getter",
    [
        ("balls", lambda s: [b.restitution for b in s.balls]),
        ("balls", lambda s: [b.radius_m for b in s.balls]),
        ("push", lambda s: [s.mass_kg]),
        ("push", lambda s: [s.friction]),
        ("drive", lambda s: [s.ego_speed_mps]),
        ("drive", lambda s: [s.friction]),
    ],
)
def test_ood_ranges_lie_outside_training_ranges(family, getter):
    iid, ood = _values(family, "id", getter), _values(family, "ood", getter)
    assert iid.max() < ood.min() or ood.max() < iid.min()


def test_moving_objects_are_at_least_8px_across_at_64px():
    """Small generators lose objects under ~8 px; every scene is framed to keep them larger."""
    from worldsim.physics.camera import camera_params

    side = camera_params(balls_scene.CAMERAS[0], 64, 64)
    px_per_m = side.K[0, 0] / abs(side.world_to_cam[2, 3])  # depth of the y = 0 plane
    assert 2 * balls_scene._ID["radius"][0] * px_per_m >= 8.0
    top = camera_params(push_scene.CAMERAS[0], 64, 64)
    px_per_m = top.K[0, 0] / push_scene.CAMERAS[0].pos_m[2]
    assert 2 * push_scene.PUSHER_RADIUS_M * px_per_m >= 8.0
    assert 2 * push_scene._ID["size"][0] * px_per_m >= 8.0
    cam = camera_params(drive_scene.CAMERAS[0], 64, 64)
    px_per_m = cam.K[0, 0] / drive_scene.CAMERAS[0].pos_m[2]
    assert 2 * drive_scene.PED_RADIUS_M * px_per_m >= 8.0
    assert 2 * drive_scene.CAR_HALF[1] * px_per_m >= 8.0


def test_partial_prompts_take_defaults():
    spec = parse_prompt("balls: red agent ball; blue ball, x 0.50 m")
    assert [b.colour for b in spec.balls] == ["red", "blue"]
    assert spec.balls[1].x_m == 0.5
    assert parse_prompt(caption(spec)) == spec
    push = parse_prompt("push: blue cylinder, mass 0.70 kg")
    assert push.shape == "cylinder" and push.mass_kg == 0.7
    car = parse_prompt("drive: red ego car, speed 9 m/s; magenta pedestrian, x 30 m")
    assert car.lead_colour is None and car.ped_x_m == 30.0


@pytest.mark.parametrize(
    "prompt,needle",
    [
        ("ballz: red agent ball", "Did you mean 'balls'"),
        ("a red ball bouncing", "must start with a scene family"),
        ("balls: red agent ball, radios 0.15 m", "Nearest: 'radius'"),
        ("balls: red agent ball, radius big", "needs a number"),
        ("balls: red agent ball, radius 0.15 kg", "is in m"),
        ("balls: red agent bal", "unknown subject"),
        ("balls: blue ball", "exactly one agent ball"),
        ("balls: red agent ball, radius 5 m", "outside the allowed range"),
        ("balls: red agent ball, x 0 m; red ball, x 0.5 m", "distinct"),
        ("balls: red agent ball, x 0 m, z 1 m; blue ball, x 0.1 m, z 1 m", "overlap"),
        ("push: red box; blue box", "exactly one box or cylinder"),
        ("drive: green lead car", "exactly one ego car"),
    ],
)
def test_bad_prompts_raise_with_help(prompt, needle):
    with pytest.raises(PromptError) as err:
        parse_prompt(prompt)
    assert needle in str(err.value)


def test_grammar_errors_show_the_grammar_and_an_example():
    with pytest.raises(PromptError) as err:
        parse_prompt("push: red box, weight 2 kg")
    msg = str(err.value)
    assert "prompt grammar" in msg and "example: push:" in msg and "mass [kg]" in msg


def test_prompt_of_another_family_is_rejected_when_a_family_is_required():
    with pytest.raises(PromptError, match="describes a 'push' scene"):
        parse_prompt("push: red box", family="balls")


def test_every_family_is_registered():
    assert set(REGISTRY) == set(FAMILIES)
