"""The training loop: it learns, resumes exactly after a kill, and runs data-parallel."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from worldsim.data.collect import collect
from worldsim.data.loader import load_dataset
from worldsim.model.unet import UNetConfig
from worldsim.model.world_model import WorldModel, WorldModelConfig
from worldsim.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_train_state
from worldsim.train.loop import RunConfig, TrainConfig, load_init, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("balls")
    return collect(
        "balls", episodes=4, out=out, num_envs=2, seed=3, width=32, height=32, max_steps=30, progress=False
    )


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    """Two short Drive episodes: a camera that travels, for the odometer and the script map."""
    out = tmp_path_factory.mktemp("drive") / "drive"
    return collect("drive", episodes=2, out=out, num_envs=2, seed=1, max_steps=24, progress=False)


def tiny_model() -> WorldModelConfig:
    cfg = WorldModelConfig(
        context=2, cond_dim=32, unet=UNetConfig(channels=[16, 16], blocks_per_level=1, groups=4)
    )
    cfg.prompt.dim, cfg.prompt.layers, cfg.prompt.heads, cfg.prompt.out_dim = 16, 1, 2, 16
    cfg.heads.channels, cfg.heads.hidden = 4, 16
    cfg.edm.sigma_data = 0.0  # measured on the data, as configs/train.yaml does
    return cfg


def tiny_run(data: Path, out: Path, steps: int, **kw) -> RunConfig:
    train_cfg = TrainConfig(
        data=str(data),
        val_data=None,
        out=str(out),
        steps=steps,
        batch_size=8,
        ckpt_every=3,
        log_every=1,
        eval_every=10_000,
        threads=1,
        **kw,
    )
    return RunConfig(train=train_cfg, model=tiny_model())


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The raw (non-EMA) weights and the EMA weights of a run's latest checkpoint."""
    ckpt = latest_checkpoint(run_dir)
    state = load_train_state(ckpt, global_rng=False)
    return {**{f"raw.{k}": v for k, v in state.extra["weights"].items()}, **load_checkpoint(ckpt).state_dict}


def test_loss_falls_on_a_small_dataset(tiny_data, tmp_path):
    train(tiny_run(tiny_data, tmp_path / "run", steps=60, lr=2e-3, warmup=5, first_frame_prob=0.0))
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows if r.split(",")[2]]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), (losses[:5], losses[-5:])
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("rollouts", [{}, {"rollout_share": 0.5, "rollout_steps": 3}])
def test_resume_after_a_stop_is_exact(tiny_data, tmp_path, rollouts):
    """6 steps in one go equal 3 steps, a stop, and 3 more resumed from the checkpoint (also when
    part of each batch is rolled out by the model: its draws resume too)."""
    train(tiny_run(tiny_data, tmp_path / "once", steps=6, **rollouts))
    train(tiny_run(tiny_data, tmp_path / "twice", steps=3, **rollouts))
    shutil.rmtree(tmp_path / "twice" / "final")  # only the step checkpoint survives a kill
    train(tiny_run(tiny_data, tmp_path / "twice", steps=6, **rollouts))
    a, b = _weights(tmp_path / "once"), _weights(tmp_path / "twice")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_cli_run_killed_mid_training_resumes(tiny_data, tmp_path):
    """kill -9 a `worldsim train` run after its first checkpoint; the next run resumes and finishes."""
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "worldsim.cli",
        "train",
        f"train.data={tiny_data}",
        "train.val_data=null",
        f"train.out={out}",
        "train.steps=40",
        "train.batch_size=8",
        "train.ckpt_every=2",
        "train.threads=1",
        "model.context=2",
        "model.cond_dim=32",
        "model.unet.channels=[16,16]",
        "model.unet.groups=4",
        "model.prompt.dim=16",
        "model.prompt.layers=1",
        "model.prompt.heads=2",
        "model.prompt.out_dim=16",
        "report=null",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while latest_checkpoint(out) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(latest_checkpoint(out)).step
    assert 0 < stopped_at < 40
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout
    assert load_checkpoint(out / "final").step == 40


def test_two_ddp_processes_match_one_process(tiny_data, tmp_path):
    """torchrun with 2 CPU processes (gloo) computes what one process computes with the whole batch."""
    pytest.importorskip("torch.distributed.run")
    # 6 of 8 rows rolled out by the model, 3 in each rank's slice of 4
    single = tmp_path / "single"
    train(tiny_run(tiny_data, single, steps=4, rollout_share=0.75, rollout_steps=2))
    script = (
        "import sys; sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r});"
        "from test_train import tiny_run; from worldsim.train.loop import train;"
        "from pathlib import Path;"
        "train(tiny_run(Path({data!r}), Path({out!r}), steps=4, rollout_share=0.75, rollout_steps=2))"
    ).format(repo=str(REPO), tests=str(REPO / "tests"), data=str(tiny_data), out=str(tmp_path / "ddp"))
    (tmp_path / "ddp_main.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLDSIM_DDP_BACKEND": "gloo"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(tmp_path / "ddp_main.py"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _weights(single), _weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_quick_eval_scores_a_perfect_copy_of_the_frozen_baseline(tiny_data):
    """An untrained model's change head outputs zeros, so its predictions repeat the last frame:
    its errors must equal the frozen baseline's exactly."""
    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.model.world_model import WorldModel
    from worldsim.train.loop import build_model_config, quick_eval

    data = load_dataset(tiny_data)
    cfg = build_model_config(tiny_model(), data, WindowSampler(data, 2))
    report = quick_eval(WorldModel(cfg).eval(), data, episodes=3, horizon=5)
    assert report["centroid_px"] == pytest.approx(report["frozen_px"])
    assert report["one_step_l1"] == pytest.approx(report["one_step_l1_frozen"])
    assert report["one_step_l1_frozen"] > 0


def test_parsing_floor_is_subpixel_and_sees_a_shift(tiny_data):
    """The extractor on MuJoCo's frames lands within a pixel of the projected true centres; the
    same frames shifted by 3 px are measured about 3 px off, so the floor can tell."""
    from worldsim.data.loader import load_dataset
    from worldsim.train.fidelity import parsing_error_px

    episode = load_dataset(tiny_data).episode(0)
    floor = parsing_error_px(episode, 2, 20)
    assert floor.shape == (20,) and np.nanmean(floor) < 1.0
    episode = dataclasses.replace(episode, frames=np.roll(episode.frames, 3, axis=2))
    assert np.nanmean(parsing_error_px(episode, 2, 20)) == pytest.approx(3.0, abs=0.75)


def test_the_report_judges_generators_of_any_context_from_one_start_against_the_same_floors(tiny_data):
    """Given a start frame, the report's floors (frozen, engine, parsing) and MuJoCo's action
    sensitivity are the same for generators of 2 and 3 context frames; by default each starts from
    its own K frames, and the floors move with the start."""
    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.metrics.objects import centroid_errors, palette_for
    from worldsim.model.world_model import WorldModel
    from worldsim.train.fidelity import fidelity_report, generate, truth_frames
    from worldsim.train.loop import build_model_config

    data = load_dataset(tiny_data)
    reports = {}
    for k in (2, 3):
        cfg = build_model_config(dataclasses.replace(tiny_model(), context=k), data, WindowSampler(data, k))
        model = WorldModel(cfg).eval()
        for start in (None, 4):
            reports[k, start] = fidelity_report(model, data, episodes=3, horizons=(6,), start=start)
    assert [reports[k, None]["start"] for k in (2, 3)] == [2, 3] and reports[2, 4]["start"] == 4
    floors = ("frozen", "engine", "parsing")
    same, own = reports[2, 4]["h6"]["curves"], reports[3, 4]["h6"]["curves"]
    for name in floors:
        np.testing.assert_array_equal(same[name], own[name])
    sens = reports[2, 4]["action_sensitivity"]["truth_px"]
    assert sens == reports[3, 4]["action_sensitivity"]["truth_px"] > 0
    # the ratios come with their spread over episodes, and each episode's errors by its index
    summary, per = reports[3, 4]["h6"]["summary"], reports[3, 4]["h6"]["per_episode"]
    lo, hi = summary["engine_ratio_interval"]
    assert lo <= summary["engine_ratio"] <= hi and per["index"] == [0, 1, 2]
    assert per["engine"] == reports[2, 4]["h6"]["per_episode"]["engine"]
    early, late = reports[2, None]["h6"]["curves"], reports[2, 4]["h6"]["curves"]
    assert all(not np.array_equal(early[name], late[name]) for name in floors)
    # the generator's own frames are the ones from the start, scored against the truth from it
    eps = [data.episode(i) for i in range(3)]
    made = generate(model, eps, 6, start=4)  # the K=3 generator
    direct = np.nanmean(
        [
            centroid_errors(truth_frames(e, 4, 6), g, palette_for(e.spec)).curve_px()
            for e, g in zip(eps, made, strict=True)
        ],
        axis=0,
    )
    np.testing.assert_allclose(own["model"], direct)


def test_learning_rate_warms_up_holds_and_cools_down():
    from worldsim.train.loop import TrainConfig, learning_rate

    cfg = TrainConfig(lr=1e-3, warmup=10, steps=100, cooldown=20)
    rates = [learning_rate(cfg, s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[50] == rates[80] == pytest.approx(1e-3)
    assert rates[90] == pytest.approx(0.5e-3) and rates[99] == pytest.approx(0.05e-3)
    assert all(a >= b for a, b in zip(rates[80:], rates[81:], strict=False))
    assert learning_rate(TrainConfig(lr=1e-3, warmup=10, steps=100), 99) == pytest.approx(1e-3)


def test_a_shifted_window_is_the_real_window_that_many_steps_later(tiny_data):
    """``shift_window`` (the real frames in place of a rollout) lines up with the sampler's own
    horizon-1 window ending ``steps`` later: context, mask, actions, target, reward, termination."""
    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.train.rollouts import shift_window

    data = load_dataset(tiny_data)
    long = WindowSampler(data, 3, horizon=4).sample(16, np.random.default_rng(0))
    assert not long.context_mask.all()  # windows that start before the reset frame are covered
    for steps in range(4):
        got = shift_window(long, steps)
        want = WindowSampler(data, 3).gather(long.episode, long.t + steps)
        for name in ("context", "context_mask", "actions", "targets", "rewards", "terminated", "t"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{name} {steps}")


def test_own_rollouts_replace_only_the_chosen_rows_with_the_models_frames(tiny_data, tmp_path):
    """Rolled-out rows carry the model's frames (not the real ones), each row's frames do not depend
    on which other rows are rolled out with it (what lets DDP ranks roll out their own slices), and
    the rows left alone keep the real frames."""
    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.model.world_model import WorldModel
    from worldsim.train.rollouts import shift_window, with_own_rollouts

    final = train(tiny_run(tiny_data, tmp_path / "run", steps=30, lr=2e-3, warmup=5))
    ckpt = load_checkpoint(final)
    model = ckpt.load_into(WorldModel(WorldModelConfig.from_dict(ckpt.config))).eval()
    data = load_dataset(tiny_data)
    batch = WindowSampler(data, 2, horizon=4, motion_share=1.0).sample(8, np.random.default_rng(1))
    gen = torch.Generator().manual_seed(0)
    noise = [model.draw_sampling_noise(8, gen) for _ in range(3)]
    every = with_own_rollouts(batch, model, 3, np.ones(8, bool), noise)
    some_rows = np.arange(8) >= 5
    some = with_own_rollouts(batch, model, 3, some_rows, noise)
    real = shift_window(batch, 3)
    np.testing.assert_array_equal(some.context[some_rows], every.context[some_rows])
    np.testing.assert_array_equal(some.context[~some_rows], real.context[~some_rows])
    assert (every.context != real.context).any()  # a trained model does not copy MuJoCo bit for bit
    np.testing.assert_array_equal(every.targets, real.targets)  # targets stay real
    np.testing.assert_array_equal(every.actions, real.actions)
    np.testing.assert_array_equal(some.last_truth, real.context[:, -1])  # MuJoCo's frame is kept
    assert real.last_truth is None


def test_training_with_motion_targets_leaves_only_rolled_out_rows_out_of_the_frame_loss(
    tiny_data, tmp_path, monkeypatch
):
    """The training loop's order of batch operations (own rollouts, text-to-video rows, remade
    contexts) with ``rollout_target=motion``: the rows left out of the frame loss are rolled-out rows
    (the last ones of the batch) and never remade or text-to-video ones, and the frame term is
    rescaled to the kept rows."""
    import worldsim.train.loop as loop

    seen = []
    original = loop.compute_losses

    def recording(model, b, *args, **kw):
        seen.append((b["frame_rows"].clone(), b["frame_scale"], b["mask"][:, -1].clone()))
        return original(model, b, *args, **kw)

    monkeypatch.setattr(loop, "compute_losses", recording)
    run = tiny_run(
        tiny_data,
        tmp_path / "run",
        steps=4,
        rollout_share=0.5,
        rollout_target="motion",
        rigid_context_share=0.25,
        first_frame_prob=0.3,
    )
    run.model.flow_channels = [8, 8]
    train(run)
    assert len(seen) == 4
    for rows, scale, has_context in seen:
        assert rows[:4].all()  # plain and remade rows keep their frame
        assert rows[~has_context].all()  # text-to-video rows too
        assert scale == pytest.approx(8 / int(rows.sum()))
    assert any(not rows.all() for rows, _, _ in seen)  # rolled-out rows did leave it


def test_rolled_out_rows_keep_mujocos_last_frame_through_the_batch_operations(tiny_data):
    """``concat_batches`` and ``take_rows`` carry ``last_truth``; a batch without it contributes its
    own last context frame (which is MuJoCo's)."""
    from dataclasses import replace

    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.train.rollouts import concat_batches, take_rows

    sampler = WindowSampler(load_dataset(tiny_data), 2)
    real, rolled = sampler.sample(3, np.random.default_rng(0)), sampler.sample(2, np.random.default_rng(1))
    truth = 255 - rolled.context[:, -1]
    rolled = replace(rolled, last_truth=truth)
    both = concat_batches(real, rolled)
    np.testing.assert_array_equal(both.last_truth, np.concatenate([real.context[:, -1], truth]))
    assert concat_batches(real, real).last_truth is None
    picked = take_rows(both, np.array([4, 0]))
    np.testing.assert_array_equal(picked.last_truth, both.last_truth[[4, 0]])


def test_motion_rows_teach_the_flow_mujocos_move_and_no_frame(tiny_data):
    """With ``rollout_target="motion"`` a row whose last frame the model made (it differs from
    ``last_truth``) is marked out of the frame loss and its flow target is measured from
    ``last_truth``; with the default the same rows keep the frame and the jump."""
    from dataclasses import replace

    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.train.flow import episode_palettes, object_flow
    from worldsim.train.loop import _slice

    data = load_dataset(tiny_data)
    batch = WindowSampler(data, 2, motion_share=1.0).sample(4, np.random.default_rng(0))
    made_last = batch.context[:, -1].copy()
    made_last[2:] = batch.context[2:, -2]  # rows 2-3: a "made" frame one step behind
    context = batch.context.copy()
    context[:, -1] = made_last
    made = replace(batch, context=context, last_truth=batch.context[:, -1])
    got = _slice(made, 0, 4, data, "motion")
    assert got["frame_rows"].tolist() == [True, True, False, False] and got["frame_scale"] == 2.0
    halves = _slice(made, 0, 2, data, "motion"), _slice(made, 2, 4, data, "motion")
    assert [h["frame_scale"] for h in halves] == [2.0, 2.0]  # the global batch's count, on every rank
    palettes = episode_palettes(data, made.episode, made.context_mask[:, -1])
    want, _ = object_flow(made_last, made.targets[:, 0], palettes, batch.context[:, -1])
    np.testing.assert_array_equal(got["flow_target"].numpy(), want)
    default = _slice(made, 0, 4, data)
    assert "frame_rows" not in default
    jump, _ = object_flow(made_last, made.targets[:, 0], palettes)
    np.testing.assert_array_equal(default["flow_target"].numpy(), jump)
    assert not np.array_equal(jump, want)  # the tiny scene's objects moved in these windows


def test_fine_tuning_starts_from_the_given_checkpoint_and_keeps_its_architecture(tiny_data, tmp_path):
    first = train(tiny_run(tiny_data, tmp_path / "first", steps=5))
    run = tiny_run(tiny_data, tmp_path / "tuned", steps=0, init=str(first))
    # ignored: the checkpoint's architecture is kept (a shorter context too; a longer one is taken,
    # test_fine_tuning_may_lengthen_the_context_starting_as_the_function_it_was)
    run.model.cond_dim, run.model.context = 48, 1
    run.model.edm.p_mean = -2.5  # taken: where training noise falls is the run's setting
    tuned = train(run)
    a, b = load_checkpoint(first), load_checkpoint(tuned)
    assert b.config["cond_dim"] == a.config["cond_dim"] == 32
    assert b.config["edm"]["p_mean"] == -2.5 != a.config["edm"]["p_mean"]
    assert b.config["edm"]["sigma_data"] == a.config["edm"]["sigma_data"]
    for key, value in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(CheckpointError):
        train(tiny_run(tiny_data, tmp_path / "bad", steps=1, init=str(tmp_path / "missing")))
    # a run directory that holds another run is not silently resumed as this fine-tuning
    with pytest.raises(ValueError, match="needs a train.out of its own"):
        train(tiny_run(tiny_data, tmp_path / "first", steps=10, init=str(tuned)))


def test_fine_tuning_may_add_a_clock_but_not_change_one(tiny_data, tmp_path):
    first = train(tiny_run(tiny_data, tmp_path / "first", steps=3))
    run = tiny_run(tiny_data, tmp_path / "clocked", steps=3, init=str(first))
    run.model.clock_frames = 40
    clocked = load_checkpoint(train(run))
    assert clocked.config["clock_frames"] == 40 and "clock_in.weight" in clocked.state_dict
    again = tiny_run(tiny_data, tmp_path / "again", steps=1, init=str(clocked.path))
    again.model.clock_frames = 80
    with pytest.raises(ValueError, match="keeps it"):
        train(again)


def test_fine_tuning_may_add_an_odometer_on_drive_which_learns_and_nowhere_else(
    tiny_data, drive, tmp_path, monkeypatch
):
    """Drive's camera travels: an odometer added by fine-tuning reads its road markings (filled in from
    the scene) and its weights learn from the distances of the windows; Balls' camera stands still
    (refused); rolled-out rows count on from their windows' distances."""
    first = train(tiny_run(drive, tmp_path / "first", steps=2))
    run = tiny_run(drive, tmp_path / "told", steps=3, init=str(first))
    run.model.odometer = True
    told = load_checkpoint(train(run))
    markings = told.config["odometer_markings"]
    assert told.config["odometer"] and markings["columns"] == [29, 35] and markings["px_per_m"] > 5
    assert told.state_dict["odometer_in.weight"].abs().sum() > 0  # it moved off zero: it learned
    again = load_checkpoint(train(tiny_run(drive, tmp_path / "told", steps=4, init=str(first))))
    assert again.config["odometer"]  # a resumed run keeps it
    trailed = tiny_run(drive, tmp_path / "trailed", steps=2, init=str(told.path))
    trailed.model.odometer_trail = 4  # a speed from the last 4 distances, added with zero weights
    trail = load_checkpoint(train(trailed))
    assert trail.config["odometer_trail"] == 4 and "speed_in.weight" in trail.state_dict
    other = tiny_run(drive, tmp_path / "other", steps=1, init=str(trail.path))
    other.model.odometer_trail = 8
    with pytest.raises(ValueError, match="keeps it"):
        train(other)
    fixed = tiny_run(tiny_data, tmp_path / "balls", steps=1)
    fixed.model.odometer = True
    with pytest.raises(ValueError, match="fixed camera"):
        train(fixed)
    # own rollouts count on from each window's distance (``with_own_rollouts``' odometer_m)
    starts, real = [], WorldModel.rollout

    def spy(self, *args, odometer_m=None, **kwargs):
        starts.append(odometer_m)
        return real(self, *args, odometer_m=odometer_m, **kwargs)

    monkeypatch.setattr(WorldModel, "rollout", spy)
    rolled = tiny_run(drive, tmp_path / "rolled", steps=2, init=str(told.path), rollout_share=0.5)
    assert load_checkpoint(train(rolled)).step == 2
    assert starts and all(d is not None and d.shape == (4,) and (d >= 0).all() for d in starts)
    assert any((d > 0).any() for d in starts)  # windows past their episode's first frame have travelled


def test_fine_tuning_may_add_odometer_dynamics_fitted_before_the_run_and_kept(drive, tmp_path):
    """Odometer dynamics added by fine-tuning are fitted to the dataset's distances before the run
    (figures written beside it), leave every other weight as the checkpoint had it (no step: the
    same generator), need a trail, and a further fine-tuning keeps them as they are."""
    first = train(tiny_run(drive, tmp_path / "first", steps=2))
    trailed = tiny_run(drive, tmp_path / "trailed", steps=1, init=str(first))
    trailed.model.odometer, trailed.model.odometer_trail = True, 4
    trail = load_checkpoint(train(trailed))
    run = tiny_run(drive, tmp_path / "dyn", steps=0, init=str(trail.path))
    run.model.odometer_dynamics = True
    dyn = load_checkpoint(train(run))
    fitted = json.loads((tmp_path / "dyn" / "odometer_dynamics.json").read_text())
    assert (
        dyn.config["odometer_dynamics"] and fitted["windows"] > 0 and np.isfinite(fitted["rms_step_error_m"])
    )
    heads = {k: v for k, v in dyn.state_dict.items() if k.startswith("odometer_dynamics.")}
    assert heads and any(v.abs().sum() > 0 for v in heads.values())
    for k, v in trail.state_dict.items():
        torch.testing.assert_close(dyn.state_dict[k], v)
    kept = load_checkpoint(train(tiny_run(drive, tmp_path / "kept", steps=1, init=str(dyn.path))))
    for k, v in heads.items():
        torch.testing.assert_close(kept.state_dict[k], v)
    assert not (tmp_path / "kept" / "odometer_dynamics.json").exists()
    untrailed = tiny_run(drive, tmp_path / "untrailed", steps=0, init=str(first))
    untrailed.model.odometer, untrailed.model.odometer_dynamics = True, True
    with pytest.raises(ValueError, match="odometer_trail"):
        train(untrailed)


def test_fine_tuning_refits_odometer_dynamics_of_another_form_from_the_cars_travel(
    drive, tiny_data, tmp_path
):
    """A checkpoint counting by the network form, fine-tuned with the linear form, has the linear law
    fitted to the dataset's travel before the run (its coefficients written beside it), the
    network's weights gone and every other weight kept; a dataset without the car's position is
    refused by name."""
    run = tiny_run(drive, tmp_path / "network", steps=1)
    run.model.odometer, run.model.odometer_trail, run.model.odometer_dynamics = True, 4, True
    run.model.odometer_dynamics_form = "network"
    network = load_checkpoint(train(run))
    assert network.config["odometer_dynamics_form"] == "network"
    again = tiny_run(drive, tmp_path / "linear", steps=0, init=str(network.path))
    again.model.odometer_dynamics = True  # and the default form, linear
    linear = load_checkpoint(train(again))
    fitted = json.loads((tmp_path / "linear" / "odometer_dynamics.json").read_text())
    assert linear.config["odometer_dynamics_form"] == "linear" and fitted["rolling_windows_fitted"] > 10
    assert fitted["law"]["pos1_t"] > 0 > fitted["law"]["neg1_t"], fitted  # throttle drives, brake stops
    dynamics = {k for k in linear.state_dict if k.startswith("odometer_dynamics.")}
    assert dynamics == {"odometer_dynamics.change.weight"}
    for k, v in network.state_dict.items():
        if not k.startswith("odometer_dynamics."):
            torch.testing.assert_close(linear.state_dict[k], v)
    from worldsim.data.loader import load_dataset
    from worldsim.train.loop import flat_travel

    with pytest.raises(ValueError, match="ego_pos_m"):
        flat_travel(load_dataset(tiny_data))


def test_fine_tuning_may_add_a_heading_fitted_to_the_datasets_yaw_and_kept(drive, tiny_data, tmp_path):
    """A heading added by fine-tuning has its dynamics fitted to the dataset's yaw before the run
    (figures written beside it, better than repeating the last turn) and its input at zero, every
    other weight as the checkpoint had it; training and own rollouts carry the heading in the trail
    (a step with both runs); a further fine-tuning keeps the dynamics; a dataset without the car's
    yaw is refused by name."""
    run = tiny_run(drive, tmp_path / "dyn", steps=1)
    run.model.odometer, run.model.odometer_trail, run.model.odometer_dynamics = True, 4, True
    dyn = load_checkpoint(train(run))
    added = tiny_run(drive, tmp_path / "heading", steps=0, init=str(dyn.path))
    added.model.heading = True
    heading = load_checkpoint(train(added))
    fitted = json.loads((tmp_path / "heading" / "heading_dynamics.json").read_text())
    assert heading.config["heading"] and fitted["windows"] == 2 * 24
    assert fitted["rms_turn_error_rad"] < fitted["repeat_last_turn_rms_rad"], fitted
    assert all(v.abs().sum() == 0 for k, v in heading.state_dict.items() if k.startswith("heading_in."))
    for k, v in dyn.state_dict.items():
        torch.testing.assert_close(heading.state_dict[k], v)
    kept_run = tiny_run(drive, tmp_path / "kept", steps=1, init=str(heading.path), rollout_share=0.25)
    kept = load_checkpoint(train(kept_run))
    for k, v in heading.state_dict.items():
        if k.startswith("heading_dynamics."):
            torch.testing.assert_close(kept.state_dict[k], v)
    assert not (tmp_path / "kept" / "heading_dynamics.json").exists()
    from worldsim.data.loader import load_dataset
    from worldsim.train.loop import flat_heading

    with pytest.raises(ValueError, match="ego_yaw_rad"):
        flat_heading(load_dataset(tiny_data))


def test_fine_tuning_may_lengthen_the_context_starting_as_the_function_it_was(drive, tmp_path):
    """A longer context (``model.context``) reads the old frames, actions and mask bits with the
    checkpoint's weights and the frames before them with zero weights: the first frame it makes from
    a longer context is the one the checkpoint makes from its last frames. The odometer's dynamics,
    which read the context's actions, are fitted again; a flow's context cannot be lengthened."""
    from worldsim.data.loader import load_dataset
    from worldsim.scenes import scripts_of_prompts

    run = tiny_run(drive, tmp_path / "short", steps=2)
    run.model.odometer, run.model.odometer_trail, run.model.odometer_dynamics = True, 4, True
    run.model.script_map = True  # an input after the context keeps its weights too
    short = load_checkpoint(train(run))
    longer = tiny_run(drive, tmp_path / "long", steps=0, init=str(short.path))
    longer.model.context = 4
    long = load_checkpoint(train(longer))
    assert long.config["context"] == 4 and (tmp_path / "long" / "odometer_dynamics.json").exists()
    models = []
    for ckpt in (short, long):
        model = WorldModel(WorldModelConfig.from_dict(ckpt.config))
        ckpt.load_into(model)
        models.append(model.eval())
    e = load_dataset(drive).episode(0)
    t = 6  # the frame made; the long context holds frames 2..5
    frames, actions = torch.from_numpy(e.frames[t - 4 : t]), torch.from_numpy(e.actions[t - 4 : t])
    noise = models[1].draw_sampling_noise(1, torch.Generator().manual_seed(0))
    made = []
    for model, k in zip(models, (2, 4), strict=True):
        with torch.no_grad():
            made.append(
                model.predict_next(
                    frames[None, -k:],
                    actions[None, -k:],
                    model.encode_prompts([e.caption]),
                    context_noise=0.0,
                    noise={**noise, "context": noise["context"][:, -k:]},
                    frame_index=t,
                    odometer_m=torch.tensor([[float("nan"), 1.0, 1.6, 2.2]]),
                    scripts=scripts_of_prompts([e.caption], "drive"),
                )
            )
    assert torch.equal(made[0], made[1])
    stem = long.state_dict["unet.stem.weight"].view(long.state_dict["unet.stem.weight"].shape[0], -1, 4, 3, 3)
    assert not stem[:, 3:9].any() and stem[:, 9:15].any()  # the two older frames start at zero
    flowing = tiny_run(drive, tmp_path / "flowing", steps=0)
    flowing.model.flow_channels = [8, 8]
    flow = train(flowing)
    lengthened = tiny_run(drive, tmp_path / "flow_long", steps=0, init=str(flow))
    lengthened.model.flow_channels, lengthened.model.context = [8, 8], 4
    with pytest.raises(ValueError, match="flow"):
        train(lengthened)


def test_fine_tuning_may_add_a_script_map_on_drive_which_starts_at_zero(tiny_data, drive, tmp_path):
    """A script map joins the U-Net's input last, with zero weights (the generator starts as the
    function it was); it needs an odometer (Drive's camera travels) and a
    scene that scripts agents (Balls scripts none)."""
    run = tiny_run(drive, tmp_path / "first", steps=2)
    run.model.odometer = True
    first = load_checkpoint(train(run))
    run = tiny_run(drive, tmp_path / "mapped", steps=3, init=str(first.path))
    run.model.script_map = True
    mapped = load_checkpoint(train(run))
    assert mapped.config["script_map"] and mapped.config["script_map_camera"]["follows"]
    stem, was = mapped.state_dict["unet.stem.weight"], first.state_dict["unet.stem.weight"]
    cells = stem.shape[1] - was.shape[1]
    assert cells == 4 * 2 * 2  # the map's 4 channels, unshuffled 2x, join the input last
    # (no scripted agent comes into view in these 24-step episodes: that the weights learn from a map
    # with something on it is tests/test_script_map.py's)
    model = WorldModel(WorldModelConfig.from_dict(mapped.config))
    load_init(first, model)
    assert not model.unet.stem.weight[:, -cells:].any()  # and started at zero
    flowing = tiny_run(drive, tmp_path / "flowing", steps=1, init=str(mapped.path))
    flowing.model.flow_channels = [8, 8]
    with pytest.raises(ValueError, match="script map"):
        train(flowing)
    plain = tiny_run(drive, tmp_path / "plain", steps=1)
    plain.model.script_map = True
    with pytest.raises(ValueError, match="odometer"):
        train(plain)
    balls = tiny_run(tiny_data, tmp_path / "balls", steps=1)
    balls.model.script_map = True
    with pytest.raises(ValueError, match="scripts none"):
        train(balls)


def test_object_dynamics_are_fitted_before_a_run_and_kept_by_training_and_fine_tuning(tiny_data, tmp_path):
    """Fitted once to the dataset's tracks (figures written beside the run), untouched by the frame
    loss, kept by a fine-tuning from the checkpoint, and added by a fine-tuning to one without."""
    fit = {"object_fit_steps": 20, "object_fit_rollout_steps": 4, "object_fit_horizon": 2}
    run = tiny_run(tiny_data, tmp_path / "objects", steps=2, motion_share=1.0, **fit)
    run.model.flow_channels, run.model.object_dynamics, run.model.object_dynamics_width = [8, 8], True, 16
    objects = load_checkpoint(train(run))
    figures = json.loads((tmp_path / "objects" / "object_dynamics.json").read_text())
    assert figures["episodes"] + figures["held_out_episodes"] == 4 and np.isfinite(figures["one_step_px"])
    data = load_dataset(tiny_data)
    most = max(len(data.episode(i).spec.balls) for i in range(len(data)))
    assert objects.config["object_max"] == most and objects.config["object_properties"] == 4
    model = WorldModel(WorldModelConfig.from_dict(objects.config))
    model.load_state_dict(objects.state_dict)
    fitted = {k: v for k, v in objects.state_dict.items() if k.startswith("object_dynamics.")}
    again_run = tiny_run(tiny_data, tmp_path / "again", steps=2, init=str(objects.path), **fit)
    again_run.model.object_start_path = True  # a sampling setting the fine-tuning carries on
    again = load_checkpoint(train(again_run))
    assert all(torch.equal(again.state_dict[k], v) for k, v in fitted.items())  # not refitted, not trained
    assert again.config["object_start_path"] and not again.config["script_map_camera"]["follows"]
    flowing = tiny_run(tiny_data, tmp_path / "flowing", steps=1, motion_share=1.0)
    flowing.model.flow_channels = [8, 8]
    added = tiny_run(tiny_data, tmp_path / "added", steps=1, init=str(train(flowing)), **fit)
    added.model.object_dynamics = True
    assert load_checkpoint(train(added)).config["object_dynamics"] is True
    assert (tmp_path / "added" / "object_dynamics.json").is_file()  # fitted before the run
    assert not (tmp_path / "again" / "object_dynamics.json").exists()  # the checkpoint's, kept


def test_a_first_frame_net_is_fitted_before_a_run_changes_nothing_else_and_fine_tuning_adds_the_same(
    tiny_data, tmp_path
):
    """Fitted to the first frames before the run (figures beside it) and kept by the frame loss; the
    run's every other weight is as without it, and a zero-step fine-tuning that adds it to that run
    fits exactly the same net: one run with it is the run without it, then the fine-tuning."""
    from worldsim.model.first_frame import draw_first_frames

    laid = tiny_run(tiny_data, tmp_path / "laid", steps=2, first_frame_fit_steps=5)
    laid.model.first_frame_layout = True
    with_net = load_checkpoint(train(laid))
    figures = json.loads((tmp_path / "laid" / "first_frame.json").read_text())
    assert figures["episodes"] + figures["held_out_episodes"] == 4 and np.isfinite(figures["error_levels"])
    assert with_net.config["first_frame_layout"] and not with_net.config["script_map_camera"]["follows"]
    without = load_checkpoint(train(tiny_run(tiny_data, tmp_path / "plain", steps=2)))
    net = {k: v for k, v in with_net.state_dict.items() if k.startswith("first_frame.")}
    assert net and set(with_net.state_dict) - set(net) == set(without.state_dict)
    assert all(torch.equal(v, with_net.state_dict[k]) for k, v in without.state_dict.items())
    added = tiny_run(tiny_data, tmp_path / "added", steps=0, init=str(without.path), first_frame_fit_steps=5)
    added.model.first_frame_layout = True
    added_ckpt = load_checkpoint(train(added))
    assert all(torch.equal(added_ckpt.state_dict[k], v) for k, v in with_net.state_dict.items())
    model = WorldModel(WorldModelConfig.from_dict(added_ckpt.config))
    model.load_state_dict(added_ckpt.state_dict)
    captions = [load_dataset(tiny_data).episode(i).caption for i in range(2)]
    context, mask = model.first_frames(captions)
    drawn = draw_first_frames(
        model.first_frame, model.tokenizer, model.empty_frame, captions, "balls", model.cfg.script_map_camera
    )
    assert torch.equal(context[:, -1], drawn) and mask[:, -1].all() and not mask[:, :-1].any()


def test_fine_tuning_may_add_a_flow_which_learns_from_the_objects_motion(tiny_data, tmp_path):
    first = train(tiny_run(tiny_data, tmp_path / "first", steps=3))
    run = tiny_run(tiny_data, tmp_path / "flowing", steps=4, init=str(first), motion_share=1.0)
    run.model.flow_channels = [8, 8]
    flowing = load_checkpoint(train(run))
    plain = load_checkpoint(first)
    assert flowing.config["flow_channels"] == [8, 8]
    stem, was = flowing.state_dict["unet.stem.weight"], plain.state_dict["unet.stem.weight"]
    assert stem.shape[1] == was.shape[1] + 3 * 2 * 2  # the warped frame, unshuffled, joins the input
    assert flowing.state_dict["flow_net.head.weight"].abs().sum() > 0  # it moved off zero: it learned
    on_predicted = tiny_run(
        tiny_data, tmp_path / "on_predicted", steps=2, init=str(flowing.path), predicted_warp_share=0.5
    )
    assert load_checkpoint(train(on_predicted)).step == 2
    rigid = tiny_run(tiny_data, tmp_path / "rigid", steps=2, init=str(flowing.path), rigid_context_share=0.5)
    assert load_checkpoint(train(rigid)).step == 2
    dithered = tiny_run(tiny_data, tmp_path / "dithered", steps=2, init=str(flowing.path), motion_share=1.0)
    dithered.model.flow_dither = True  # a sampling and training choice, no weights: fine-tuning may set it
    assert load_checkpoint(train(dithered)).config["flow_dither"] is True
    still = tiny_run(tiny_data, tmp_path / "still", steps=1, init=str(flowing.path))
    still.model.flow_still_colours = [[217, 217, 217]]  # a sampling choice too: fine-tuning may set it
    assert load_checkpoint(train(still)).config["flow_still_colours"] == [[217, 217, 217]]
    again = tiny_run(tiny_data, tmp_path / "again", steps=1, init=str(flowing.path))
    again.model.flow_channels = [16, 16]
    with pytest.raises(ValueError, match="keeps it"):
        train(again)
    # a new, narrower change U-Net on top of the trained flow: it starts untrained, the rest as it was
    small = tiny_run(tiny_data, tmp_path / "small", steps=2, init=str(flowing.path), fresh_unet=True)
    small.model.unet.channels = [8, 8]
    small_ckpt = load_checkpoint(train(small))
    assert small_ckpt.config["unet"]["channels"] == [8, 8]
    assert small_ckpt.config["flow_channels"] == [8, 8]
    model = WorldModel(WorldModelConfig.from_dict(small_ckpt.config))
    load_init(flowing, model, fresh_unet=True)
    assert torch.equal(model.flow_net.head.weight, flowing.state_dict["flow_net.head.weight"])
    assert not model.unet.head.weight.any()  # untrained: the generator starts as the warp alone
    no_flow = tiny_run(tiny_data, tmp_path / "no_flow", steps=1, init=str(first), fresh_unet=True)
    with pytest.raises(ValueError, match="train.fresh_unet needs a checkpoint with a flow"):
        train(no_flow)
    # a new flow on a coarser grid under the trained change U-Net: it starts untrained, the rest as it was
    coarse = tiny_run(tiny_data, tmp_path / "coarse", steps=2, init=str(small_ckpt.path), fresh_flow=True)
    coarse.model.flow_unshuffle = 4
    coarse_ckpt = load_checkpoint(train(coarse))
    assert coarse_ckpt.config["flow_unshuffle"] == 4 and coarse_ckpt.config["flow_channels"] == [8, 8]
    assert coarse_ckpt.config["unet"]["channels"] == [8, 8]
    model = WorldModel(WorldModelConfig.from_dict(coarse_ckpt.config))
    assert model.flow_net.cfg.unshuffle == 4
    load_init(small_ckpt, model, fresh_flow=True)
    assert torch.equal(model.unet.head.weight, small_ckpt.state_dict["unet.head.weight"])
    assert not model.flow_net.head.weight.any()  # untrained: no move until it has learned
    other_grid = tiny_run(tiny_data, tmp_path / "other_grid", steps=1, init=str(coarse_ckpt.path))
    other_grid.model.flow_channels = [8, 8]  # the same widths on another grid is another flow
    with pytest.raises(ValueError, match="keeps it"):
        train(other_grid)
    no_flow = tiny_run(tiny_data, tmp_path / "no_flow2", steps=1, init=str(first), fresh_flow=True)
    with pytest.raises(ValueError, match="train.fresh_flow restarts the flow"):
        train(no_flow)
    # the colours' moves handed to a trained flow: zero weights on them and zero carry at the start
    told = tiny_run(tiny_data, tmp_path / "told", steps=3, init=str(flowing.path), motion_share=1.0)
    told.model.flow_motion = True
    told_ckpt = load_checkpoint(train(told))
    assert told_ckpt.config["flow_motion"] is True and told_ckpt.state_dict["flow_carry"] != 0  # it learned
    stem, was = told_ckpt.state_dict["flow_net.stem.weight"], flowing.state_dict["flow_net.stem.weight"]
    grid = WorldModelConfig.from_dict(told_ckpt.config).flow_grid  # the stem's weights are on its grid
    assert stem.shape[1] == was.shape[1] + 2 * (told_ckpt.config["context"] - 1) * grid**2
    untold = tiny_run(tiny_data, tmp_path / "untold", steps=1, init=str(first))
    untold.model.flow_motion = True
    with pytest.raises(ValueError, match="has no flow"):
        train(untold)
    refixed = tiny_run(tiny_data, tmp_path / "refixed", steps=1, init=str(told_ckpt.path))
    refixed.model.flow_carry_fixed = 1.0  # its carry is learned: fine-tuning keeps it
    with pytest.raises(ValueError, match="keeps it"):
        train(refixed)
    unmoved = tiny_run(tiny_data, tmp_path / "unmoved", steps=1, init=str(flowing.path))
    unmoved.model.flow_carry_fixed = 1.0  # a carry of moves it is not told
    with pytest.raises(ValueError, match="flow_motion"):
        train(unmoved)


@pytest.mark.parametrize(
    "bad",
    [
        {"frame_loss": "l3"},
        {"huber_c": 0.0},
        {"flow_loss": "l1"},
        {"fresh_unet": True},  # nothing to fine-tune
        {"fresh_flow": True},
        {"flow_loss": "pseudo_huber"},  # no flow to learn a median move
        {"rollout_share": 1.5},
        {"rollout_share": 0.01},
        {"rollout_target": "jump"},
        {"rollout_target": "motion", "rollout_share": 0.5},  # no flow to teach the move
        {"rollout_target": "motion"},  # no rolled-out rows to shape
        {"predicted_warp_share": 0.5},  # no flow to predict a warp
        {"predicted_warp_share": -0.1},
        {"rigid_context_share": 0.5},  # no flow to make contexts as
        {"rigid_context_share": 1.2},
        {"rigid_context_share": 0.5, "rollout_share": 0.75},  # more rows than a batch holds
        {"entering_share": 1.5},
        {"entering_share": 0.5, "rollout_share": 0.75},  # more rows than a batch holds
    ],
)
def test_settings_that_would_fail_late_or_do_nothing_are_refused(tiny_data, tmp_path, bad):
    with pytest.raises(ValueError, match="train\\."):
        train(tiny_run(tiny_data, tmp_path / "run", steps=1, **bad))


def test_undoing_context_noise_is_refused_for_a_generator_with_a_flow(tiny_data, tmp_path):
    """The warp finds its regions and still scenery by flat colour: in the noisy last frame there
    are none to find, so the combination is refused before any step, and by the loss itself."""
    run = tiny_run(tiny_data, tmp_path / "run", steps=1, undo_context_noise=True)
    run.model.flow_channels = [8, 8]
    with pytest.raises(ValueError, match="train.undo_context_noise"):
        train(run)
    model = WorldModel(run.model)
    b, k = 2, run.model.context
    ctx = torch.zeros(b, k, run.model.height, run.model.width, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="undo_context_noise"):
        model.loss(
            ctx,
            torch.zeros(b, k, run.model.action_dim),
            ctx[:, -1],
            ["balls: red ball"] * b,
            torch.ones(b, k, dtype=torch.bool),
            undo_context_noise=True,
            flow_target=torch.zeros(b, 2, run.model.height, run.model.width),
            flow_weight=torch.ones(b, 1, run.model.height, run.model.width),
        )


def test_own_rollouts_feed_each_step_its_own_actions_and_the_frames_made_before(tiny_data):
    """A stand-in model that records its inputs: rollout step s gets actions[s : s+K] (the ones
    between its context frames, then the one to take) and a context ending with the frames it
    made at the steps before."""
    from types import SimpleNamespace

    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.model.world_model import WorldModel
    from worldsim.train.rollouts import with_own_rollouts

    class Recorder(torch.nn.Module):
        rollout = WorldModel.rollout  # the real autoregressive loop around a recording step
        _frame_index = WorldModel._frame_index
        _odometer = WorldModel._odometer

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.cfg = SimpleNamespace(context=2, clock_frames=300, odometer=False, script_map=False)
            self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
            self.indices: list[torch.Tensor] = []

        def encode_prompts(self, captions: list[str]) -> torch.Tensor:
            return torch.zeros(len(captions), 1)

        def predict_next(
            self,
            context,
            actions,
            prompt,
            mask,
            steps=None,
            generator=None,
            noise=None,
            frame_index=None,
            odometer_m=None,
            scripts=None,
        ):
            self.calls.append((context.clone(), actions.clone()))
            self.indices.append(frame_index.clone())
            return 255 - context[:, -1]  # a frame no real step makes

    batch = WindowSampler(load_dataset(tiny_data), 2, horizon=4).sample(6, np.random.default_rng(2))
    rows = np.arange(6) % 2 == 0
    noise = [{"context": torch.zeros(6, 1), "sample": torch.zeros(6, 1)} for _ in range(3)]
    model = Recorder()
    out = with_own_rollouts(batch, model, 3, rows, noise)
    made = []
    for s, (context, actions) in enumerate(model.calls):
        np.testing.assert_array_equal(actions.numpy(), batch.actions[rows, s : s + 2])
        np.testing.assert_array_equal(model.indices[s].numpy(), batch.t[rows] + 1 + s)  # the frame made
        want = np.concatenate([batch.context[rows], *made], axis=1)[:, -2:]
        np.testing.assert_array_equal(context.numpy(), want)
        made.append(255 - context[:, -1:].numpy())
    assert len(model.calls) == 3
    np.testing.assert_array_equal(out.context[rows], np.concatenate(made, axis=1)[:, -2:])


def test_text_to_video_windows_target_each_episode_s_first_frame(tiny_data):
    """``first_frame_prob`` turns windows into text-to-video samples: an empty masked context, no
    actions, and frame 0 of an episode as the target, told to a clock as index 0."""
    from dataclasses import replace

    from worldsim.data.loader import WindowSampler, load_dataset
    from worldsim.train.loop import _slice, with_first_frames

    data = load_dataset(tiny_data)
    sampler = WindowSampler(data, 2)
    batch = sampler.sample(6, np.random.default_rng(0))
    empty = np.full(batch.context.shape[2:], 7, np.uint8)
    out = with_first_frames(batch, sampler, empty, 1.0, np.random.default_rng(1))
    flat = sampler.flat
    for i, cap in enumerate(out.captions):
        firsts = [flat.frames[flat.frame_start[e]] for e in range(len(flat.steps)) if flat.captions[e] == cap]
        assert any(np.array_equal(out.targets[i, 0], f) for f in firsts)
    assert (out.context == 7).all() and not out.context_mask.any() and (out.actions == 0).all()
    assert _slice(out, 0, 6)["frame_index"].tolist() == [0] * 6
    assert _slice(batch, 0, 6)["frame_index"].tolist() == (batch.t + 1).tolist()
    # a rolled-out row made a text-to-video sample is no longer the model's: its frame is learned
    rolled = replace(batch, last_truth=255 - batch.context[:, -1])
    assert not _slice(rolled, 0, 6, data, "motion")["frame_rows"].any()
    out = with_first_frames(rolled, sampler, empty, 1.0, np.random.default_rng(1))
    assert _slice(out, 0, 6, data, "motion")["frame_rows"].all()


def test_rolled_out_rows_are_dealt_evenly_to_ranks():
    from worldsim.train.rollouts import dealt_to_ranks

    order = dealt_to_ranks(8, 2)
    assert sorted(order.tolist()) == list(range(8))
    rolled = np.arange(8) >= 2  # the last 6 rows of a global batch of 8 are rolled out
    for rank in range(2):
        mine = order[rank * 4 : (rank + 1) * 4]
        assert rolled[mine].sum() == 3 and (mine % 2 == rank).all()  # what own_rollouts rolls out
