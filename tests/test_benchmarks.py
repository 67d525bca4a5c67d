"""The study scripts in benchmarks/ run end to end (tiny budgets): their figures are in the README."""

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from worldsim.data.collect import collect

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_latent_generator_study_trains_rolls_out_and_scores(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import latent_generator

    data = collect(
        "balls", episodes=2, out=tmp_path / "data", num_envs=1, seed=3, max_steps=20, progress=False
    )
    weights = tmp_path / "latent.safetensors"
    latent_generator.main(
        [f"data={data}", "codec_minutes=0.02", "dynamics_minutes=0.02", "episodes=2", "horizon=3"]
        + [f"out={tmp_path}", f"weights={weights}"]
    )
    result = json.loads((tmp_path / "latent_generator.json").read_text())
    assert result["codec_steps"] > 0 and result["dynamics_steps"] > 0
    assert set(result["rollouts"]) == {"plain", "snap"}
    for scores in result["rollouts"].values():
        assert np.isfinite(scores["engine_ratio"]) and scores["engine_ratio"] > 0
        assert 0.0 <= scores["kept_fraction"] <= 1.0
    names = set(load_file(weights))
    assert any(n.startswith("codec.") for n in names) and any(n.startswith("dynamics.") for n in names)


def test_compounding_study_scores_mujocos_own_frames_as_perfect(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import compounding

    from worldsim.checkpoints import load_world_model
    from worldsim.evaluate import make_episodes

    model = load_world_model(None, "balls", "cpu")
    eps = make_episodes("balls", "id", 2, 3, model.cfg.context, 1000, (64, 64))
    made = compounding.teacher_forced(model, eps, 3)
    assert made.shape == (2, 3, 64, 64, 3) and made.dtype == np.uint8
    truth = [e.frames[model.cfg.context :] for e in eps]
    perfect = compounding.object_losses(eps, truth, model.cfg.context)
    assert perfect["lost_share"] == 0.0 and perfect["found_centroid_error_px"] == 0.0
    blank = [np.broadcast_to(e.frames[0, :1, :1], f.shape).copy() for e, f in zip(eps, truth, strict=True)]
    nothing = compounding.object_losses(eps, blank, model.cfg.context)
    assert nothing["lost_share"] == 1.0 and nothing["found_centroid_error_px"] is None


def test_compounding_motion_by_speed_separates_truth_from_a_frozen_video(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import compounding

    from worldsim.evaluate import make_episodes

    k = 4
    eps = make_episodes("balls", "id", 4, 6, k, 1000, (64, 64))
    truth = [e.frames[k:] for e in eps]
    frozen = [np.broadcast_to(e.frames[k - 1], f.shape).copy() for e, f in zip(eps, truth, strict=True)]
    moving = {
        band: v
        for band, v in compounding.motion_by_speed(eps, truth, k, rolled=True).items()
        if v["object_steps"] and not band.startswith("0-")
    }
    assert moving, "no ball moved half a pixel in a step: the test needs faster starts"
    for v in moving.values():  # MuJoCo's own frames move exactly as MuJoCo does
        assert v["speed_ratio"] == 1.0 and v["still_share"] == 0.0
    forced = compounding.motion_by_speed(eps, truth, k, rolled=False)
    assert {b: forced[b] for b in moving} == moving
    for band, v in compounding.motion_by_speed(eps, frozen, k, rolled=True).items():
        if v["object_steps"] and band in moving:  # a video that stands still stalls every ball
            assert v["speed_ratio"] == 0.0 and v["still_share"] == 1.0


def test_error_breakdown_counts_each_object_found_missed_and_drawn_from_nothing(monkeypatch):
    """A ball drawn a pixel off, one MuJoCo shows and the other video misses, and one only the other
    video shows: found with its error, vanished and ghost object-steps, and no error for an object
    never found in both."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from error_breakdown import agent_curve, per_object

    from worldsim.metrics.objects import Palette, centroid_errors
    from worldsim.scenes.colours import rgb_uint8

    pal = Palette.build([("a", 1, ["red"]), ("b", 2, ["blue"]), ("c", 3, ["green"])], ["backdrop"])
    truth = np.zeros((3, 32, 32, 3), np.uint8)
    truth[:] = rgb_uint8("backdrop")
    other = truth.copy()
    truth[:, 4:8, 4:8], other[:, 4:8, 5:9] = rgb_uint8("red"), rgb_uint8("red")  # a: 1 px off
    truth[:2, 20:24, 20:24] = rgb_uint8("blue")  # b: MuJoCo shows it twice, the other never
    other[2, 10:14, 20:24] = rgb_uint8("green")  # c: drawn once where MuJoCo has nothing
    rows = per_object([centroid_errors(truth, other, pal)])
    assert rows["a"]["found"] == 3 and rows["a"]["found_error_px"] == 1.0
    assert rows["b"] == {
        "found": 0,
        "vanished": 2,
        "ghost": 0,
        "episodes_vanished": 1,
        "found_error_px": None,
    }
    assert rows["c"]["ghost"] == 1 and rows["c"]["found_error_px"] is None
    assert agent_curve([centroid_errors(truth, other, pal)]) == [1.0, 1.0, 1.0]


def test_drive_progress_reads_mujocos_distance_as_whole_and_a_slow_or_frozen_car_as_short(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import torch
    from drive_progress import distance_ratio

    from worldsim.checkpoints import load_world_model
    from worldsim.evaluate import make_episodes

    markings = load_world_model(None, "drive").cfg.odometer_markings
    k, horizon = 4, 20
    truth = torch.from_numpy(
        np.stack(
            [
                e.frames[k - 1 : k + horizon]
                for e in make_episodes("drive", "id", 3, horizon, k, 1000, (64, 64))
            ]
        )
    )
    whole = distance_ratio(truth, truth, markings)
    assert whole["mujoco_m"] > 5.0, "MuJoCo's cars should drive several metres in 20 steps"
    assert whole["ratio"] == 1.0
    frozen = truth[:, :1].expand_as(truth).contiguous()
    assert distance_ratio(frozen, truth, markings)["ratio"] == 0.0
    half_speed = truth[:, torch.arange(truth.shape[1]) // 2]  # each frame twice: half as far
    assert 0.35 < distance_ratio(half_speed, truth, markings)["ratio"] < 0.65


def test_a_rollout_start_pads_a_context_longer_than_the_real_frames_as_training_does():
    """From frame 3, a context of 5 holds the reset frame twice more (masked, zero actions) and then
    frames 0-2 with the actions between them; from frame 6 it holds frames 1-5, every one real
    (``fidelity.generate``'s ``start``, which benchmarks/same_start.py uses)."""
    from types import SimpleNamespace

    from worldsim.train.fidelity import context_at

    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    episode = SimpleNamespace(frames=frames, actions=np.arange(9, dtype=np.float32)[:, None] + 1)
    ctx, actions, mask = context_at(episode, 3, 5)
    assert ctx[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 2] and mask.tolist() == [False, False, True, True, True]
    assert actions[:, 0].tolist() == [0, 0, 1, 2]  # actions[i] leads from context frame i to i+1
    ctx, actions, mask = context_at(episode, 6, 5)
    assert (
        ctx[:, 0, 0, 0].tolist() == [1, 2, 3, 4, 5] and mask.all() and actions[:, 0].tolist() == [2, 3, 4, 5]
    )


def test_heading_drift_is_small_for_the_shipped_dynamics_and_large_for_a_car_that_turns_by_itself(
    tmp_path, monkeypatch
):
    """The shipped Drive generator's counted heading stays near MuJoCo's yaw and an unsteered car
    keeps heading 0; dynamics that turn the car 0.01 rad every step whatever it does are far off."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import heading_drift

    from tests.test_heading import TurningDynamics
    from worldsim.checkpoints import load_world_model
    from worldsim.data.loader import load_dataset

    path = collect(
        "drive", episodes=2, out=tmp_path / "data", num_envs=1, seed=3, max_steps=40, progress=False
    )
    data = load_dataset(path)
    model = load_world_model(None, "drive", "cpu")
    good = heading_drift.drift(model, data, [10, 30])
    assert good["episodes_at"] == {"10": 2, "30": 2}
    assert good["rms_error_rad"]["30"] < 0.1 and good["unsteered_heading_after_600_steps_rad"] == 0.0
    model.heading_dynamics = TurningDynamics(0.01)
    bad = heading_drift.drift(model, data, [10, 30])
    assert bad["rms_error_rad"]["30"] > 0.2 and abs(bad["unsteered_heading_after_600_steps_rad"] - 6.0) < 1e-3
