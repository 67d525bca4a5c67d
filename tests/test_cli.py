"""Smoke tests of each `worldsim` verb, run as a user runs them, with tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from test_model import tiny_config

from worldsim.model import WorldModel
from worldsim.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "worldsim.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_every_verb_and_unknown_verbs_fail():
    done = run("--help")
    assert done.returncode == 0
    for verb in ("collect", "train", "probe", "ship", "report", "dream", "demo", "bench", "evaluate"):
        assert verb in done.stdout
    assert run("fly").returncode == 2
    assert "steps: 600" in run("dream", "--help").stdout


def test_smoke_demo_writes_a_video_per_scene(tmp_path):
    done = run(
        "demo",
        f"out={tmp_path}",
        "steps=4",
        "scenes=[balls,push]",
        "evaluate.episodes=2",
        "evaluate.horizon=5",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["scene"] == "balls" and metrics["episodes"] == 2 and metrics["horizon"] == 5
    assert (tmp_path / "report.html").is_file() and (tmp_path / "side_by_side.mp4").is_file()
    for scene in ("balls", "push"):
        video = iio.imread(tmp_path / f"{scene}.mp4")
        assert video.shape[0] == 4 and video.shape[2] > video.shape[1]  # MuJoCo | PyBullet side by side
        dreamed = iio.imread(tmp_path / f"{scene}_dream.mp4")  # the shipped generator | MuJoCo
        assert dreamed.shape[0] == 5 and dreamed.shape[1:] == video.shape[1:]  # the start frame + 4


def test_smoke_dream_writes_video_frames_and_report(tmp_path):
    cfg = tiny_config()
    cfg.vocab = ["<pad>", "<unk>", "<num>", "balls", "red", "agent", "ball", "goal", "x", "m"]
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "ckpt", WorldModel(cfg), cfg.to_dict(), family="balls", frame_size=(32, 32)
    )
    out = tmp_path / "dream"
    done = run(
        "dream",
        f"checkpoint={ckpt}",
        "prompt='balls: red agent ball, x 0.20 m'",
        "steps=6",
        "policy=random",
        "context=generated",
        f"out={out}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    frames = np.load(out / "frames.npz", allow_pickle=False)
    assert frames["generated"].shape == (7, 32, 32, 3) and frames["actions"].shape == (6, 2)
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 6 and "collapse" in report
    assert iio.imread(out / "dream.mp4").shape[0] == 7
    wrong = run("dream", f"checkpoint={ckpt}", "scene=push", f"out={out}")
    assert wrong.returncode != 0 and "is for 'balls'" in wrong.stderr


def test_smoke_evaluate_writes_a_report(tmp_path):
    done = run("evaluate", "scene=push", "episodes=2", "horizon=5", f"out={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "engine_ratio" in done.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["scene"] == "push" and len(metrics["curves"]["model"]["centroid_error_px"]) == 5
    assert (tmp_path / "report.html").is_file()


def test_scene_recipes_compose_on_the_defaults():
    """`worldsim train scene=X model=X train=X` (the one-run recipes in the README) gives configs the
    code accepts, each preset changing only its own fields of the defaults, and Balls' still colours
    are the scene's scenery."""
    from omegaconf import OmegaConf

    from worldsim.cli import _model_config, load_config
    from worldsim.metrics.objects import still_scenery_colours
    from worldsim.train.loop import TrainConfig

    default = load_config("train", ["scene=balls"])
    for scene in ("balls", "drive"):
        cfg = load_config("train", [f"scene={scene}", f"model={scene}", f"train={scene}"])
        model = _model_config(cfg.model)
        train = TrainConfig(**OmegaConf.to_container(cfg.train, resolve=True))
        assert model.context == default.model.context and model.edm.p_mean == default.model.edm.p_mean
        assert train.batch_size == default.train.batch_size and train.threads == 2
        assert train.frame_loss == "pseudo_huber" and train.cooldown > 0
    balls = _model_config(load_config("train", ["scene=balls", "model=balls"]).model)
    assert balls.flow_still_colours == still_scenery_colours("balls") and balls.object_dynamics
    assert balls.object_start_path and balls.first_frame_layout  # as the shipped Balls checkpoint
    assert balls.unet.channels == [16, 32, 64] and not balls.unet.attention
    drive = _model_config(load_config("train", ["scene=drive", "model=drive"]).model)
    assert drive.odometer and drive.heading and drive.script_map and drive.odometer_trail == 8
    assert drive.first_frame_layout
