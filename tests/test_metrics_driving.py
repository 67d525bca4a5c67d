"""Driving metrics read from Drive frames: they track MuJoCo's true state, and catch broken videos.

A few Drive worlds run in MuJoCo for 40 steps at 64x64: three under the data-collection mixture
policy (seeds chosen so that between them the ego car changes lanes across the centre line, a
pedestrian covers the dashes and a lead car comes into view), and three scripted ones that drive
into a slow lead car, into a crossing pedestrian and off the road. The frame estimates must track
the true state within the tolerances below (what was measured is noted next to each); then broken
videos made from the truth (frozen, ego car painted off road, markings erased) must be flagged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies import make_policy
from policies.scripted import DriveController
from worldsim import scenes
from worldsim.evaluate import simulate
from worldsim.metrics import driving
from worldsim.metrics.objects import object_masks, palette_for
from worldsim.scenes import drive, parse_prompt
from worldsim.scenes.colours import rgb_uint8

STEPS, SIZE, DT = 40, (64, 64), 0.1

Y_TOL_M = 0.12  # ego lateral position, any step (measured max 0.083 m; a pixel is 0.186 m)
X_TOL_M = 0.3  # ego x from cumulative progress, any step (measured max 0.16 m after 40 steps)
STEP_RMS_TOL_M = 0.09  # progress per step, rms (measured 0.03-0.07 m: dash edges fall on whole rows)
SPEED_TOL_MPS = 0.3  # mean |speed error| against the state's speed (measured 0.13-0.19 m/s)
AGENT_TOL_M = 0.25  # lead car and pedestrian positions where seen (measured max 0.19 m)
MIXTURE_SEEDS = (1, 5, 7)


class _Veer(DriveController):
    """Lane keeping towards an offset of 3 m from lane 1: the car settles 1.3 m beyond the road edge."""

    def reset(self, state: dict) -> None:
        super().reset(state)
        self.target_offset_m = 3.0


def _run(spec, **kw) -> dict:
    frames, states, cameras, _, _ = simulate(spec, "mujoco", STEPS, SIZE, **kw)
    return {"spec": spec, "frames": frames, "states": states, "cameras": cameras}


@pytest.fixture(scope="module")
def worlds() -> dict[str, dict]:
    out = {}
    for seed in MIXTURE_SEEDS:
        rng = np.random.default_rng(seed)
        spec = scenes.sample("drive", rng)
        out[f"mixture{seed}"] = _run(spec, policy=make_policy("drive", "mixture", rng))
    lead = parse_prompt(
        "drive: red ego car, lane 0, speed 8.00 m/s; green lead car, gap 9.00 m, speed 2.00 m/s"
    )
    out["lead_crash"] = _run(lead, actions=np.tile([0.0, 1.0], (STEPS, 1)))
    ped = parse_prompt(
        "drive: red ego car, lane 0, speed 7.00 m/s; "
        "magenta pedestrian, x 20.00 m, start 0.50 s, speed 2.00 m/s, side -1"
    )
    out["ped_crash"] = _run(ped, actions=np.tile([0.0, 0.3], (STEPS, 1)))
    out["off_road"] = _run(parse_prompt("drive: blue ego car, lane 1, speed 7.00 m/s"), policy=_Veer())
    return out


NAMES = [f"mixture{s}" for s in MIXTURE_SEEDS] + ["lead_crash", "ped_crash", "off_road"]


def _track(w: dict) -> dict[str, np.ndarray]:
    return driving.track_drive(w["frames"], w["spec"], w["cameras"])


# ---------------------------------------------------------------------------------------------
# frame estimates against MuJoCo's state


@pytest.mark.parametrize("name", NAMES)
def test_ego_position_tracks_the_true_state(worlds, name):
    w = worlds[name]
    tr, pos = _track(w), w["states"]["ego_pos_m"]
    assert np.all(np.isfinite(tr["ego_y_m"]))
    assert np.max(np.abs(tr["ego_y_m"] - pos[:, 1])) < Y_TOL_M
    assert np.max(np.abs(tr["ego_x_m"] - pos[:, 0])) < X_TOL_M
    step_err = tr["step_progress_m"][1:] - np.diff(pos[:, 0])
    assert np.sqrt(np.nanmean(step_err**2)) < STEP_RMS_TOL_M
    assert np.isfinite(tr["step_progress_m"][1:]).mean() > 0.9


@pytest.mark.parametrize("name", [n for n in NAMES if "crash" not in n])
def test_speed_tracks_the_true_state(worlds, name):
    """(Not across a crash: the speed drops within a step there, and the local fits spread the drop
    over +-2 steps; 4.5 m/s error at the impact frame.)"""
    w = worlds[name]
    tr = _track(w)
    speed = driving.motion_curves(tr["ego_x_m"], tr["ego_y_m"], DT)["speed_mps"]
    assert np.mean(np.abs(speed - np.abs(w["states"]["ego_speed_mps"]))) < SPEED_TOL_MPS


def test_progress_is_unmeasured_while_no_dash_edge_is_in_view(worlds):
    """mixture7's pedestrian and lane change cover the centre line's dashes for a few steps: those
    steps are NaN, not zero, and the cumulative progress still ends within tolerance."""
    w = worlds["mixture7"]
    tr = _track(w)
    assert 1 <= np.isnan(tr["step_progress_m"][1:]).sum() <= 4
    assert abs(tr["ego_x_m"][-1] - w["states"]["ego_pos_m"][-1, 0]) < X_TOL_M


def test_agent_positions_track_the_true_state(worlds):
    seen = 0
    for name in NAMES:
        w = worlds[name]
        tr, s = _track(w), w["states"]
        for agent in ("lead", "ped"):
            est, true = np.stack([tr[f"{agent}_x_m"], tr[f"{agent}_y_m"]], -1), s[f"{agent}_pos_m"]
            ok = np.isfinite(est[:, 0])
            seen += ok.sum()
            if ok.any():
                assert np.max(np.linalg.norm(est[ok] - true[ok], axis=1)) < AGENT_TOL_M, name
    assert seen >= 60


@pytest.mark.parametrize("name", NAMES)
def test_collisions_agree_with_the_state(worlds, name):
    """The state's flag is set at the first contact in any physics substep and stays set; frames at
    10 Hz show the agents touching (within a pixel) from the frame before or of that contact."""
    w = worlds[name]
    tr, flag = _track(w), w["states"]["collision"] > 0
    assert tr["collision"].any() == flag.any()
    if flag.any():
        first, found = int(np.argmax(flag)), int(np.argmax(tr["collision"]))
        assert abs(found - first) <= 1
        assert tr["collision"][first : first + 3].any()


@pytest.mark.parametrize("name", NAMES)
def test_off_road_agrees_with_the_state(worlds, name):
    w = worlds[name]
    m = driving.video_driving(w["frames"], w["spec"], w["cameras"], DT)
    off_true = w["states"]["on_road"] == 0
    near_edge = np.abs(np.abs(w["states"]["ego_pos_m"][:, 1]) - drive.ROAD_HALF_WIDTH_M) < Y_TOL_M
    assert np.array_equal(m["curves"]["off_road"][~near_edge], off_true[~near_edge])
    if name == "off_road":
        assert off_true.sum() >= 20 and m["summary"]["off_road_steps"] >= 20


def test_lane_deviation_tracks_the_state(worlds):
    for name in ("mixture1", "lead_crash", "ped_crash"):  # these stay in their starting lane
        w = worlds[name]
        m = driving.video_driving(w["frames"], w["spec"], w["cameras"], DT)
        true = np.abs(w["states"]["lane_offset_m"])
        assert np.max(np.abs(m["curves"]["lane_deviation_m"] - true)) < Y_TOL_M, name


def test_comfort_quantities_track_those_of_the_true_path(worlds):
    """Accelerations from frames against the same nuPlan-style derivatives of MuJoCo's true path,
    away from the video's ends (where every local fit extrapolates) and from the crashes."""
    for name in ("mixture1", "mixture5", "mixture7", "off_road"):
        w = worlds[name]
        tr, pos = _track(w), w["states"]["ego_pos_m"]
        est = driving.motion_curves(tr["ego_x_m"], tr["ego_y_m"], DT)
        true = driving.motion_curves(pos[:, 0], pos[:, 1], DT)
        mid = slice(7, -7)
        err = {k: np.mean(np.abs(est[k][mid] - true[k][mid])) for k in est}
        assert err["lon_acceleration_mps2"] < 0.35, (name, err)  # measured 0.16-0.26
        assert err["lateral_acceleration_mps2"] < 0.2, (name, err)  # measured 0.07-0.10
        assert err["yaw_rate_radps"] < 0.08, (name, err)  # measured 0.02-0.04


# ---------------------------------------------------------------------------------------------
# the comfort bounds and derivatives, on paths whose answers are known


def test_local_derivative_is_exact_on_quadratics_and_skips_nan():
    t = np.arange(30) * DT
    y = 1.0 + 2.0 * t - 1.5 * t**2
    y[10] = np.nan
    d = driving.local_derivative(y, DT, 9)
    np.testing.assert_allclose(d, 2.0 - 3.0 * t, atol=1e-9)


@pytest.mark.parametrize(("accel", "comfortable"), [(1.0, True), (3.0, False), (-5.0, False)])
def test_constant_acceleration_is_judged_by_nuplans_bounds(accel, comfortable):
    t = np.arange(40) * DT
    x = 8.0 * t + 0.5 * accel * t**2
    curves = driving.motion_curves(x, np.full_like(t, -1.75), DT)
    np.testing.assert_allclose(curves["lon_acceleration_mps2"], accel, atol=1e-6)
    np.testing.assert_allclose(curves["lateral_acceleration_mps2"], 0.0, atol=1e-6)
    judged = driving.comfortable(curves)
    edge = driving.COMFORT_EDGE_STEPS
    assert np.isnan(judged[:edge]).all() and np.isnan(judged[-edge:]).all()
    assert np.all(judged[edge:-edge] == float(comfortable))


def test_circling_beyond_the_lateral_bound_is_uncomfortable():
    """A 6 m/s circle of radius 6 m: lateral acceleration v^2 / r = 6 m/s^2 > 4.89, yaw rate 1 rad/s."""
    t = np.arange(40) * DT
    x, y = 6.0 * np.sin(t), 6.0 * (1 - np.cos(t))
    curves = driving.motion_curves(x, y, DT)
    mid = slice(7, -7)
    np.testing.assert_allclose(curves["lateral_acceleration_mps2"][mid], 6.0, rtol=0.05)
    np.testing.assert_allclose(curves["yaw_rate_radps"][mid], 1.0, rtol=0.05)
    assert np.all(driving.comfortable(curves)[mid] == 0.0)


# ---------------------------------------------------------------------------------------------
# one video against the truth


def test_truth_against_itself_gives_zero_differences(worlds):
    w = worlds["mixture5"]
    m = driving.driving_metrics(w["frames"], w["frames"], w["spec"], w["cameras"], DT)
    json.dumps(m, allow_nan=False)
    d = m["difference"]["summary"]
    assert d["progress_error_m"] == 0 and d["progress_ratio"] == 1 and d["progress_agrees"]
    assert d["lateral_error_mean_m"] == 0 and d["lane_deviation_error_mean_m"] == 0
    assert d["collision_agreement"] == 1 and d["off_road_agreement"] == 1 and d["collided_agrees"]
    assert all(v in (0, None) for curve in m["difference"]["curves"].values() for v in curve)
    assert m["other"]["summary"] == m["truth"]
    assert m["bounds"]["lateral_acceleration_mps2"] == [-4.89, 4.89]


def test_frozen_video_shows_no_progress(worlds):
    w = worlds["mixture5"]
    frozen = np.repeat(w["frames"][:1], len(w["frames"]), axis=0)
    m = driving.driving_metrics(w["frames"], frozen, w["spec"], w["cameras"], DT)
    truth_progress = m["truth"]["progress_m"]
    assert abs(truth_progress - (w["states"]["ego_pos_m"][-1, 0] - w["states"]["ego_pos_m"][0, 0])) < X_TOL_M
    assert m["other"]["summary"]["progress_m"] == 0
    assert m["other"]["summary"]["mean_speed_mps"] < 1e-9
    d = m["difference"]["summary"]
    assert not d["progress_agrees"] and d["progress_ratio"] == 0
    assert d["progress_error_m"] == pytest.approx(-truth_progress)


def _paint_ego(frames: np.ndarray, spec, cameras, y_m: float) -> np.ndarray:
    """The ego car cut out (road colour left behind) and pasted at lateral position ``y_m``."""
    out = frames.copy()
    ego = object_masks(frames, palette_for(spec))[:, 0]
    grown = ego.copy()  # take the blended edge pixels too
    grown[:, 1:] |= ego[:, :-1]
    grown[:, :-1] |= ego[:, 1:]
    grown[:, :, 1:] |= grown[:, :, :-1].copy()
    grown[:, :, :-1] |= grown[:, :, 1:].copy()
    for t, cam in enumerate(cameras):
        out[t][grown[t]] = rgb_uint8("road")
        rows, cols = np.nonzero(ego[t])
        target = cam.project(np.array([cam.position_m[0], y_m, drive.CHASSIS_Z_M]))[0]
        cols = cols + int(round(target - (cols.mean() + 0.5)))
        out[t][rows, cols] = rgb_uint8(spec.ego_colour)
    return out


def test_ego_painted_off_road_is_flagged(worlds):
    w = worlds["mixture1"]
    painted = _paint_ego(w["frames"], w["spec"], w["cameras"], -4.8)
    m = driving.driving_metrics(w["frames"], painted, w["spec"], w["cameras"], DT)
    assert m["truth"]["off_road_steps"] == 0
    assert m["other"]["summary"]["off_road_steps"] == STEPS + 1
    assert m["difference"]["summary"]["off_road_agreement"] == 0
    assert m["other"]["curves"]["ego_y_m"][-1] == pytest.approx(-4.8, abs=0.2)


def test_video_without_markings_has_no_progress_rather_than_zero(worlds):
    w = worlds["mixture1"]
    erased = w["frames"].copy()
    centre = w["cameras"][0].width // 2
    erased[:, :, centre - 3 : centre + 3] = rgb_uint8("road")
    m = driving.video_driving(erased, w["spec"], w["cameras"], DT)
    assert m["summary"]["progress_measured_share"] == 0
    assert np.isnan(m["summary"]["progress_m"])


def test_mismatched_inputs_are_refused(worlds):
    w = worlds["mixture1"]
    with pytest.raises(ValueError, match="one shape"):
        driving.driving_metrics(w["frames"], w["frames"][:-1], w["spec"], w["cameras"], DT)
    with pytest.raises(ValueError, match="one per frame"):
        driving.driving_metrics(w["frames"], w["frames"], w["spec"], w["cameras"][:-1], DT)
