"""Scripted controllers do their task; the mixture policy gives varied actions."""

import gymnasium as gym
import numpy as np
import pytest
from conftest import FAMILIES, TRUTH_IDS

from policies import make_policy


def _episode(family, seed, kind="scripted", split="id", steps=None):
    env = gym.make(TRUTH_IDS[family], obs="state", split=split)
    _, info = env.reset(seed=seed)
    policy = make_policy(family, kind, np.random.default_rng(seed))
    policy.reset(info["state"])
    actions, infos = [], [info]
    for _ in range(steps or 10_000):
        a = policy.act(info["state"])
        _, _, terminated, truncated, info = env.step(a)
        actions.append(a)
        infos.append(info)
        if terminated or truncated:
            break
    env.close()
    return np.array(actions), infos


def test_balls_controller_brings_the_agent_to_the_goal():
    final = []
    for seed in range(5):
        _, infos = _episode("balls", seed, steps=100)
        s = infos[-1]["state"]
        final.append(abs(s["pos_m"][0, 0] - s["goal_x_m"]))
    assert np.median(final) < 0.1, final


def test_push_controller_reaches_the_goal_in_most_worlds():
    successes = [_episode("push", seed)[1][-1]["success"] for seed in range(8)]
    assert sum(successes) >= 6, successes


def test_drive_controller_keeps_lane_and_avoids_agents():
    for seed in range(4):
        _, infos = _episode("drive", seed, steps=150)
        assert not any(i.get("collision") or i.get("off_road") for i in infos[1:]), seed
        offsets = [abs(float(i["state"]["lane_offset_m"])) for i in infos]
        assert max(offsets) < 0.5


def test_drive_controller_brakes_for_a_crossing_pedestrian():
    from worldsim.scenes import parse_prompt

    spec = parse_prompt(
        "drive: red ego car, lane 0, speed 8 m/s; magenta pedestrian, x 30 m, start 0.5 s, speed 1.2 m/s"
    )
    env = gym.make(TRUTH_IDS["drive"], obs="state", spec=spec)
    _, info = env.reset(seed=0)
    policy = make_policy("drive", "scripted")
    speeds = []
    for _ in range(140):
        _, _, terminated, _, info = env.step(policy.act(info["state"]))
        assert not terminated
        speeds.append(float(info["state"]["ego_speed_mps"]))
    assert min(speeds) < 1.0  # it stopped (or nearly) for the pedestrian
    assert float(info["state"]["ego_pos_m"][0]) > 30.0  # and drove on once the road was clear


@pytest.mark.parametrize("family", FAMILIES)
def test_mixture_gives_varied_actions(family):
    actions, _ = _episode(family, 0, kind="mixture", steps=120)
    assert actions.shape[1] == 2 and np.all(np.abs(actions) <= 1.0)
    assert actions.std(axis=0).min() > 0.15
    # Consecutive actions are neither all equal nor all independent: the mixture holds and switches.
    deltas = np.abs(np.diff(actions, axis=0)).sum(1)
    assert (deltas < 1e-6).mean() < 0.9 and (deltas > 0.5).mean() < 0.9


def test_unknown_policy_kind_raises():
    with pytest.raises(ValueError, match="unknown policy kind"):
        make_policy("balls", "clever")
