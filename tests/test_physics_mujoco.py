"""MuJoCo truth behaves as its spec says: restitution, free fall, state at the end of a step."""

import numpy as np
import pytest

from worldsim.physics import make_simulator
from worldsim.scenes import parse_prompt


def _drop(restitution: float):
    sim = make_simulator("balls", "mujoco")
    sim.reset(
        parse_prompt(f"balls: red agent ball, radius 0.15 m, restitution {restitution:.2f}, x 0 m, z 1.15 m")
    )
    return sim


@pytest.mark.parametrize("restitution", [0.3, 0.5, 0.7, 0.9])
def test_bounce_restitution_matches_the_spec(restitution):
    """Velocity ratio across the first floor impact, sampled at every physics step (2 ms)."""
    import dataclasses

    sim = _drop(restitution)
    sim.family = dataclasses.replace(sim.family, substeps=1)  # one physics step per call
    vz = []
    for _ in range(1500):
        sim.step(np.zeros(2))
        vz.append(sim.state()["vel_mps"][0, 1])
    vz = np.array(vz)
    up = int(np.argmax(vz > 0))
    measured = vz[up : up + 100].max() / -vz[:up].min()
    assert measured == pytest.approx(restitution, abs=0.01)


def test_free_fall_state_is_read_at_the_end_of_the_step():
    """After one 0.1 s step from rest, z fell by g t^2 / 2 (not by its value one substep earlier)."""
    sim = _drop(0.8)
    z0 = sim.state()["pos_m"][0, 1]
    sim.step(np.zeros(2))
    s = sim.state()
    assert float(s["time_s"]) == pytest.approx(0.1)
    # semi-implicit Euler over 50 steps of 2 ms: z drops g dt^2 n (n + 1) / 2
    expected = 9.81 * 0.002**2 * 50 * 51 / 2
    assert z0 - s["pos_m"][0, 1] == pytest.approx(expected, rel=1e-3)
    assert s["vel_mps"][0, 1] == pytest.approx(-9.81 * 0.1, rel=1e-3)


def test_agent_force_accelerates_the_agent_ball():
    sim = make_simulator("balls", "mujoco")
    spec = parse_prompt("balls: red agent ball, mass 2 kg, x 0 m, z 0.17 m; goal, x 0.6 m")
    sim.reset(spec)
    sim.step(np.array([1.0, 0.0]))
    vx = sim.state()["vel_mps"][0, 0]
    # 0.6 g of thrust against rolling: a rolling solid sphere accelerates at F / (m + I / r^2) = F / (1.4 m)
    assert vx == pytest.approx(0.6 * 9.81 / 1.4 * 0.1, rel=0.1)
