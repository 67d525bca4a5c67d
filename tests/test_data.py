"""Datasets: collection is deterministic and resumable, shards are checked, windows are aligned."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import worldsim  # noqa: F401  (registers the env ids)
from policies import make_policy
from worldsim.data import DatasetError, WindowSampler, load_dataset, windows
from worldsim.data.collect import CollectConfig, collect, episode_seeds
from worldsim.data.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    encode_episode,
    shard_name,
    write_manifest,
    writer_lock,
)
from worldsim.durable import sha256_bytes
from worldsim.scenes import parse_prompt, spec_from_dict

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("balls", "push", "drive")
SMALL = {"width": 32, "height": 32, "max_steps": 12, "progress": False}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Small datasets collected once per module, by family, on first use."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            out = tmp_path_factory.mktemp(f"data_{family}")
            cache[family] = collect(family, episodes=3, out=out, num_envs=2, seed=7, **SMALL)
        return cache[family]

    return get


@pytest.fixture(params=FAMILIES)
def collected(request, datasets) -> tuple[str, Path]:
    return request.param, datasets(request.param)


# -- round trip ----------------------------------------------------------------------------------


def test_collected_episodes_replay_exactly_in_a_fresh_env(collected):
    """Every stored frame, state, reward and flag is what the env gives for the same seed and actions,
    and the actions are what the seeded mixture policy chooses."""
    family, path = collected
    ds = load_dataset(path)
    assert ds.complete and len(ds) == 3 and ds.family == family
    assert ds.manifest["config"]["env_id"] == f"worldsim/{family.capitalize()}-v0"
    env = gym.make(
        f"worldsim/{family.capitalize()}-v0", obs="pixels", width=32, height=32, max_episode_steps=12
    )
    for ep in ds:
        env_seed, rng = episode_seeds(7, ep.index)
        assert ep.env_seed == env_seed
        obs, info = env.reset(seed=env_seed)
        assert ep.caption == info["caption"]
        assert parse_prompt(ep.caption) == spec_from_dict(ep.spec_dict) == ep.spec
        np.testing.assert_array_equal(ep.frames[0], obs)
        policy = make_policy(family, "mixture", rng)
        policy.reset(info["state"])
        for t in range(ep.steps):
            np.testing.assert_array_equal(ep.actions[t], policy.act(info["state"]))
            obs, reward, term, trunc, info = env.step(ep.actions[t])
            np.testing.assert_array_equal(ep.frames[t + 1], obs)
            assert ep.rewards[t] == np.float32(reward)
            assert (ep.terminated[t], ep.truncated[t]) == (term, trunc)
            for key, value in info["state"].items():
                np.testing.assert_array_equal(ep.states[key][t + 1], value, err_msg=key)
        assert term or trunc
        assert ep.frames.dtype == np.uint8 and ep.frames.shape == (ep.steps + 1, 32, 32, 3)
        assert ep.actions.dtype == np.float32 and np.all(np.abs(ep.actions) <= 1)
    env.close()


def test_episodes_do_not_depend_on_num_envs(collected, tmp_path):
    family, path = collected
    again = collect(family, episodes=3, out=tmp_path / "one_env", num_envs=1, seed=7, **SMALL)
    first, second = load_dataset(path).manifest["shards"], load_dataset(again).manifest["shards"]
    assert [s["sha256"] for s in first] == [s["sha256"] for s in second]


# -- corruption ----------------------------------------------------------------------------------


@pytest.fixture
def copy_of_balls(datasets, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(datasets("balls"), dst)
    return dst


def test_flipped_byte_is_detected_naming_the_shard(copy_of_balls):
    shard = copy_of_balls / shard_name(1)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"ep_000001\.npz is corrupt: sha256.*re-run the same collect"):
        load_dataset(copy_of_balls)
    lazy = load_dataset(copy_of_balls, verify=False)
    lazy.episode(0)
    with pytest.raises(DatasetError, match=r"ep_000001\.npz"):
        lazy.episode(1)


def test_truncated_shard_is_detected_naming_the_shard(copy_of_balls):
    shard = copy_of_balls / shard_name(2)
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(
        DatasetError,
        match=r"ep_000002\.npz is truncated or altered: \d+ bytes where the manifest records \d+",
    ):
        load_dataset(copy_of_balls)


def test_missing_shard_is_detected(copy_of_balls):
    (copy_of_balls / shard_name(0)).unlink()
    with pytest.raises(DatasetError, match=r"ep_000000\.npz listed in the manifest is missing"):
        load_dataset(copy_of_balls)


def test_manifest_of_another_format_version_fails_clearly(copy_of_balls):
    manifest = json.loads((copy_of_balls / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy_of_balls / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        DatasetError, match=rf"format_version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"
    ):
        load_dataset(copy_of_balls)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"format": "something-else"}', "not a worldsim dataset manifest")],
)
def test_corrupt_or_foreign_manifest_fails_clearly(copy_of_balls, content, message):
    (copy_of_balls / "manifest.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(copy_of_balls)


def test_directory_without_manifest_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="is not a worldsim dataset.*manifest.json does not exist"):
        load_dataset(tmp_path)


# -- refusing to mix -----------------------------------------------------------------------------


def test_collect_refuses_a_directory_of_another_collection(copy_of_balls):
    with pytest.raises(DatasetError, match=r"different collection \(seed: dataset has 7, asked 8\)"):
        collect("balls", episodes=3, out=copy_of_balls, seed=8, **SMALL)
    with pytest.raises(DatasetError, match="family: dataset has 'balls', asked 'push'"):
        collect("push", episodes=3, out=copy_of_balls, seed=7, **SMALL)


def test_collect_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and has no manifest.json"):
        collect("balls", episodes=1, out=tmp_path, **SMALL)


def test_collect_refuses_a_directory_another_collection_is_writing(tmp_path):
    with writer_lock(tmp_path), pytest.raises(DatasetError, match="being written by another collection"):
        collect("balls", episodes=1, out=tmp_path, **SMALL)


def test_recollecting_a_complete_dataset_changes_nothing(copy_of_balls):
    before = {p: p.stat().st_mtime_ns for p in (copy_of_balls / "episodes").iterdir()}
    collect("balls", episodes=3, out=copy_of_balls, num_envs=2, seed=7, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in (copy_of_balls / "episodes").iterdir()} == before


# -- resume after kill -9 ------------------------------------------------------------------------


def test_collection_killed_mid_run_resumes_to_the_same_dataset(tmp_path):
    """kill -9 a CLI collection after a few episodes; the re-run redoes only unlisted episodes and
    the result is byte-identical to an uninterrupted collection."""
    out, episodes = tmp_path / "killed", 16
    args = ["scene=balls", f"episodes={episodes}", f"out={out}", "seed=3", "max_steps=40"]
    args += ["width=32", "height=32", "progress=false", "num_envs=2"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldsim.data.collect", *args], cwd=REPO, env=env, start_new_session=True
    )
    manifest, deadline = out / "manifest.json", time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if manifest.exists() and json.loads(manifest.read_text())["episode_count"] >= 3:
                break
            assert proc.poll() is None, "the collection ended before it could be killed"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the collector and its env workers (its own session)
    finally:
        proc.wait(timeout=30)

    listed = load_dataset(out).manifest["shards"]  # consistent after the kill: every listed shard verifies
    assert 3 <= len(listed) < episodes
    kept = {e["file"]: (out / e["file"]).stat().st_ino for e in listed}

    started: list[int] = []

    def counting_policy(family, kind, rng):
        started.append(1)
        return make_policy(family, kind, rng)

    collect(
        "balls",
        episodes,
        out,
        num_envs=2,
        seed=3,
        policy_factory=counting_policy,
        **{**SMALL, "max_steps": 40},
    )
    resumed = load_dataset(out)
    assert resumed.complete and len(resumed) == episodes
    assert len(started) - 1 == episodes - len(
        listed
    )  # one call validates the kind; then one per redone episode
    assert {f: (out / f).stat().st_ino for f in kept} == kept  # listed shards were not rewritten
    assert not list(out.rglob("*.tmp"))

    reference = collect(
        "balls", episodes, tmp_path / "straight", num_envs=2, seed=3, **{**SMALL, "max_steps": 40}
    )
    ref = load_dataset(reference).manifest["shards"]
    assert [e["sha256"] for e in resumed.manifest["shards"]] == [e["sha256"] for e in ref]


# -- configuration -------------------------------------------------------------------------------


def test_collect_yaml_has_exactly_the_collect_settings():
    cfg = OmegaConf.load(REPO / "configs" / "collect.yaml")
    assert set(cfg) == {f.name for f in fields(CollectConfig)}
    assert (
        OmegaConf.to_container(OmegaConf.merge(cfg, {"scene": "drive"}), resolve=True)["out"] == "data/drive"
    )
    defaults = CollectConfig()
    for key in cfg:
        if key != "out":
            assert cfg[key] == getattr(defaults, key), key


def test_unknown_settings_are_refused(tmp_path):
    from worldsim.data.collect import collect_from_config, resolve_scene

    with pytest.raises(ValueError, match=r"unknown collect settings \['episods'\]"):
        collect_from_config({"scene": "balls", "episods": 3, "out": str(tmp_path)})
    assert resolve_scene("worldsim/Drive-v0") == resolve_scene("drive") == ("worldsim/Drive-v0", "drive")
    with pytest.raises(ValueError, match="not registered"):
        resolve_scene("worldsim/Fly-v0")


def test_unknown_scene_and_policy_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown scene family 'ballz'"):
        collect("ballz", episodes=1, out=tmp_path / "a", **SMALL)
    with pytest.raises(ValueError, match="unknown policy kind 'clever'"):
        collect("balls", episodes=1, out=tmp_path / "b", policy="clever", **SMALL)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- windows -------------------------------------------------------------------------------------


def _synthetic_dataset(root: Path, lengths: list[int], size: int = 4) -> Path:
    """Episodes whose frame t is filled with 10 * episode + t, action t is (t, episode), reward t is t."""
    shards = []
    for e, steps in enumerate(lengths):
        t = np.arange(steps + 1)
        frames = np.broadcast_to(
            (10 * e + t).astype(np.uint8)[:, None, None, None], (steps + 1, size, size, 3)
        )
        terminated = np.zeros(steps, bool)
        terminated[-1] = e % 2 == 0
        data = encode_episode(
            frames=frames,
            actions=np.stack([t[:-1], np.full(steps, e)], axis=1),
            rewards=t[:-1],
            terminated=terminated,
            truncated=~terminated & (t[:-1] == steps - 1),
            states={"time_s": t / 10.0},
            caption=f"episode {e}",
            spec={"family": "balls"},
            meta={"index": e, "env_seed": e, "format_version": FORMAT_VERSION},
        )
        (root / "episodes").mkdir(parents=True, exist_ok=True)
        (root / shard_name(e)).write_bytes(data)
        shards.append(
            {
                "index": e,
                "file": shard_name(e),
                "sha256": sha256_bytes(data),
                "bytes": len(data),
                "steps": steps,
            }
        )
    write_manifest(
        root,
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "family": "balls",
            "frame": {"width": size, "height": size, "channels": 3},
            "fps": 10,
            "action_space": {"shape": [2], "low": [-1, -1], "high": [1, 1], "dtype": "float32"},
            "state_keys": ["time_s"],
            "config": {},
            "complete": True,
            "episode_count": len(shards),
            "shards": shards,
        },
    )
    return root


@pytest.mark.parametrize(
    ("context", "horizon", "pad_start"), [(4, 1, True), (4, 3, True), (3, 2, False), (1, 1, True)]
)
def test_windows_are_aligned(tmp_path, context, horizon, pad_start):
    lengths = [12, 2, 7, 1]
    ds = load_dataset(_synthetic_dataset(tmp_path, lengths))
    sampler = WindowSampler(ds, context, horizon, pad_start)
    t_min = 0 if pad_start else context - 1
    assert len(sampler) == sum(max(n - horizon - t_min + 1, 0) for n in lengths)
    batch = sampler.sample(256, np.random.default_rng(0))
    k, h = context, horizon
    assert batch.context.shape == (256, k, 4, 4, 3) and batch.context.dtype == np.uint8
    assert batch.targets.shape == (256, h, 4, 4, 3) and batch.targets.dtype == np.uint8
    assert batch.actions.shape == (256, k + h - 1, 2) and batch.actions.dtype == np.float32
    assert batch.rewards.shape == (256, h) and batch.rewards.dtype == np.float32
    assert batch.terminated.shape == (256, h) and batch.terminated.dtype == bool
    assert batch.context_mask.shape == (256, k) and len(batch.captions) == 256
    for b in range(256):
        e, t = int(batch.episode[b]), int(batch.t[b])
        assert t_min <= t <= lengths[e] - h and batch.captions[b] == f"episode {e}"
        ctx_t = np.arange(t - k + 1, t + 1)
        np.testing.assert_array_equal(batch.context[b, :, 0, 0, 0], 10 * e + np.maximum(ctx_t, 0))
        np.testing.assert_array_equal(batch.context_mask[b], ctx_t >= 0)
        np.testing.assert_array_equal(batch.targets[b, :, 2, 3, 1], 10 * e + t + 1 + np.arange(h))
        act_t = np.arange(t - k + 1, t + h)
        np.testing.assert_array_equal(batch.actions[b, :, 0], np.where(act_t >= 0, act_t, 0))
        np.testing.assert_array_equal(batch.actions[b, :, 1], np.where(act_t >= 0, e, 0))
        # the action that produces target h sits at K-1+h, reward and termination at h
        np.testing.assert_array_equal(batch.actions[b, k - 1 :, 0] + 1, batch.targets[b, :, 0, 0, 0] - 10 * e)
        np.testing.assert_array_equal(batch.rewards[b], t + np.arange(h))
        np.testing.assert_array_equal(
            batch.terminated[b], (t + np.arange(h) == lengths[e] - 1) & (e % 2 == 0)
        )
    # every valid window is reachable: the shortest episode appears when it is long enough
    assert set(batch.episode.tolist()) == {e for e, n in enumerate(lengths) if n - h - t_min + 1 > 0}


def test_windows_on_collected_data_match_the_episodes(collected):
    family, path = collected
    ds = load_dataset(path)
    batch = next(windows(ds, context=4, horizon=2, batch_size=32, rng=np.random.default_rng(1)))
    for b in range(32):
        ep, t = ds.episode(int(batch.episode[b])), int(batch.t[b])
        np.testing.assert_array_equal(batch.targets[b], ep.frames[t + 1 : t + 3])
        np.testing.assert_array_equal(batch.actions[b, 3:], ep.actions[t : t + 2])
        assert batch.captions[b] == ep.caption


def test_windows_longer_than_every_episode_fail_clearly(tmp_path):
    ds = load_dataset(_synthetic_dataset(tmp_path, [3, 2]))
    with pytest.raises(DatasetError, match="no episode .* long enough for context=2, horizon=5"):
        WindowSampler(ds, context=2, horizon=5)


def test_motion_share_draws_windows_in_proportion_to_moving_pixels(datasets):
    ds = load_dataset(datasets("balls"))
    uniform = WindowSampler(ds, context=2)
    moved = uniform.moved_pixels().astype(float)
    assert moved.std() > 0.3 * moved.mean()  # windows differ in motion, so weighting changes the draw
    weighted_mean = (moved**2).sum() / moved.sum()  # E[moved] when drawn in proportion to it
    n = 4000
    by_motion = WindowSampler(ds, context=2, motion_share=1.0).sample(n, np.random.default_rng(0))
    half = WindowSampler(ds, context=2, motion_share=0.5).sample(n, np.random.default_rng(0))
    assert moved[_window_index(uniform, by_motion)].mean() == pytest.approx(weighted_mean, rel=0.05)
    expected_half = 0.5 * (weighted_mean + moved.mean())
    assert moved[_window_index(uniform, half)].mean() == pytest.approx(expected_half, rel=0.05)
    with pytest.raises(ValueError, match="motion_share"):
        WindowSampler(ds, context=2, motion_share=1.5)


def _window_index(sampler: WindowSampler, batch) -> np.ndarray:
    """Each drawn window's index in the sampler's list of windows."""
    index = {(int(e), int(t)): i for i, (e, t) in enumerate(zip(sampler._episode, sampler._t, strict=True))}
    return np.array([index[(int(e), int(t))] for e, t in zip(batch.episode, batch.t, strict=True)])
