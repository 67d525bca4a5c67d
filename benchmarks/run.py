"""``make bench``: throughput of the truth envs and of dataset collection, written as JSON.

Every figure is measured in this one run, side by side, so ratios between them are meaningful on a
shared, noisy machine. Usage: ``python benchmarks/run.py [steps=300] [out=benchmarks/results]``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import worldsim  # noqa: E402
from worldsim.model.world_model import bfloat16_is_fast  # noqa: E402
from worldsim.registration import TRUTH_ENVS  # noqa: E402

FAMILY_ENVS = {"balls": "worldsim/Balls-v0", "push": "worldsim/Push-v0", "drive": "worldsim/Drive-v0"}


def env_steps_per_s(env_id: str, backend: str, obs: str, steps: int) -> float:
    """Steps per second of one env in this process, random actions, resets included."""
    env = gym.make(env_id, backend=backend, obs=obs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(5):  # warm up (renderer context, first model build)
        env.step(rng.uniform(-1, 1, 2))
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def collection_frames_per_s(scene: str, episodes: int, max_steps: int) -> dict:
    from worldsim.data.collect import collect
    from worldsim.data.loader import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = collect(
            scene, episodes=episodes, out=Path(tmp) / scene, num_envs=2, max_steps=max_steps, progress=False
        )
        elapsed = time.perf_counter() - start
        data = load_dataset(path)
        frames = data.num_steps
    return {"episodes": episodes, "frames": frames, "seconds": elapsed, "frames_per_s": frames / elapsed}


def truth_contexts(family: str, worlds: int, k: int) -> np.ndarray:
    """``uint8[worlds, k, H, W, 3]``: the first ``k`` frames of ``worlds`` MuJoCo worlds under random
    actions. A generator with a flow finds the flat-colour regions of its last frame, which costs
    with the scene: random pixels (every pixel a region) would time a frame no world draws."""
    env = gym.make(FAMILY_ENVS[family], obs="pixels")
    rng = np.random.default_rng(0)
    out = []
    for world in range(worlds):
        frames = [env.reset(seed=world)[0]]
        while len(frames) < k:
            frames.append(env.step(rng.uniform(-1, 1, 2).astype(np.float32))[0])
        out.append(np.stack(frames))
    env.close()
    return np.stack(out)


def generator_frames_per_s(family: str, worlds: int = 64, steps: int = 10) -> dict:
    """Batched sampling: ``worlds`` generated worlds advanced one step per call from MuJoCo's first
    frames, frames/s, for each sampling-step count. Uses the shipped checkpoint, or an untrained
    model of the default architecture (same cost) when none ships yet."""
    import torch

    from worldsim.scenes import sample, script_of

    model, source = bench_model(family)
    cfg = model.cfg
    ctx = torch.from_numpy(truth_contexts(family, worlds, cfg.context))
    actions = torch.zeros(worlds, cfg.context, cfg.action_dim)
    prompt = model.encode_prompts(["balls: red agent ball"] * worlds)
    # the agents prompts script (a generator with a script map draws them; others ignore them)
    scripts = [script_of(sample(family, np.random.default_rng(i))) for i in range(worlds)]
    step = {"frame_index": cfg.context, "odometer_m": 0.0, "scripts": scripts}
    out = {"worlds": worlds, "model": source, "threads": torch.get_num_threads(), "frames_per_s": {}}
    for n in (1, 2, 3):
        model.predict_next(ctx, actions, prompt, steps=n, **step)
        start = time.perf_counter()
        for _ in range(steps):
            model.predict_next(ctx, actions, prompt, steps=n, **step)
        out["frames_per_s"][f"{n}_steps"] = round(worlds * steps / (time.perf_counter() - start), 1)
    out["sampling_steps_default"] = cfg.sampling_steps
    out["sampling_precision"] = cfg.sampling_precision
    return out


def bench_model(family: str):
    """The shipped generator of ``family`` or, when none ships yet, an untrained one of the default
    architecture (same cost per step)."""
    from omegaconf import OmegaConf

    from worldsim.checkpoints import SHIPPED_DIR, load_world_model
    from worldsim.model.world_model import WorldModel, WorldModelConfig

    if (SHIPPED_DIR / family / "config.json").is_file():
        return load_world_model(None, family), "shipped checkpoint"
    yaml = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "model" / "default.yaml")
    base = OmegaConf.merge(OmegaConf.create({**WorldModelConfig().to_dict(), "family": family}), yaml)
    model = WorldModel(WorldModelConfig.from_dict(OmegaConf.to_container(base, resolve=True))).eval()
    return model, "untrained model of configs/model/default.yaml"


def dream_env_throughput(family: str, worlds: int = 64, steps: int = 10) -> dict:
    """Env-steps/s of a ``DreamVectorEnv`` of ``worlds`` worlds (pixels, the checkpoint's own
    sampling settings) and the latency of one single-world step."""
    from envs.dream import DreamVectorEnv

    model, source = bench_model(family)
    rng = np.random.default_rng(0)
    vec = DreamVectorEnv(family, num_envs=worlds, model=model)
    vec.reset(seed=0)
    vec.step(rng.uniform(-1, 1, (worlds, 2)))  # warm up
    start = time.perf_counter()
    for _ in range(steps):
        vec.step(rng.uniform(-1, 1, (worlds, 2)))
    batched = worlds * steps / (time.perf_counter() - start)
    vec.close()
    one = DreamVectorEnv(family, num_envs=1, model=model)
    one.reset(seed=0)
    one.step(rng.uniform(-1, 1, (1, 2)))
    start = time.perf_counter()
    for _ in range(5 * steps):
        one.step(rng.uniform(-1, 1, (1, 2)))
    latency_ms = 1000 * (time.perf_counter() - start) / (5 * steps)
    one.close()
    return {
        "model": source,
        "worlds": worlds,
        "sampling_steps": model.cfg.sampling_steps,
        "sampling_precision": model.cfg.sampling_precision,
        "env_steps_per_s": round(batched, 1),
        "single_env_ms_per_step": round(latency_ms, 2),
    }


_PEAK_RSS_CHILD = """
import resource, sys, numpy as np
import worldsim
sys.path.insert(0, {bench_dir!r})
from run import bench_model
from envs.dream import DreamVectorEnv
model, _ = bench_model({family!r})
env = DreamVectorEnv({family!r}, num_envs=1, model=model, horizon={steps})
env.reset(seed=0)
rng = np.random.default_rng(0)
finite = True
for _ in range({steps}):
    obs, *_ = env.step(rng.uniform(-1, 1, (1, 2)))
    finite &= bool(np.isfinite(obs).all())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, finite)
"""


def dream_rollout_memory(family: str, short: int = 60, long: int = 600) -> dict:
    """Peak resident memory of a process running one Dream world for ``short`` and for ``long``
    steps (each in a fresh process, since the peak only grows)."""
    import subprocess

    out = {}
    for steps in (short, long):
        code = _PEAK_RSS_CHILD.format(bench_dir=str(Path(__file__).parent), family=family, steps=steps)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        peak_kb, finite = res.stdout.split()[-2:]
        out[f"peak_rss_mb_{steps}_steps"] = round(int(peak_kb) / 1024, 1)
        out[f"all_finite_{steps}_steps"] = finite == "True"
    out["ratio_long_to_short"] = round(
        out[f"peak_rss_mb_{long}_steps"] / out[f"peak_rss_mb_{short}_steps"], 3
    )
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    steps = int(args.get("steps", 300))
    out = Path(args.get("out", "benchmarks/results"))
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu": cpu_model(),
            # the generators sample in bfloat16 only where the CPU computes it natively (float32
            # elsewhere), so their throughput, unlike the truth envs', moves with this
            "bfloat16_native": bfloat16_is_fast(torch.device("cpu")),
        },
        "worldsim": worldsim.__version__,
        "steps_per_s": {},
        "collection_2_workers": {},
        "target": "Balls, MuJoCo, 64x64 pixels, one process: >= 500 steps/s",
    }
    for env_id in TRUTH_ENVS:
        for backend in ("mujoco", "pybullet"):
            for obs in ("pixels", "state"):
                sps = env_steps_per_s(env_id, backend, obs, steps)
                results["steps_per_s"][f"{env_id}|{backend}|{obs}"] = round(sps, 1)
                print(f"{env_id:22s} {backend:9s} {obs:7s} {sps:8.1f} steps/s", flush=True)
    for scene in ("balls", "push", "drive"):
        r = collection_frames_per_s(scene, episodes=20, max_steps=200)
        results["collection_2_workers"][scene] = {
            k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()
        }
        print(f"collect {scene:6s} 2 workers {r['frames_per_s']:8.1f} frames/s", flush=True)
    balls = results["steps_per_s"]["worldsim/Balls-v0|mujoco|pixels"]
    results["target_met"] = balls >= 500
    out.mkdir(parents=True, exist_ok=True)
    path = out / "truth_envs.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")

    generator: dict = {"note": "measured in the same run as truth_envs.json", "families": {}}
    for family, env_id in FAMILY_ENVS.items():
        g = generator_frames_per_s(family)
        truth = results["steps_per_s"][f"{env_id}|mujoco|pixels"]
        default = g["frames_per_s"][f"{g['sampling_steps_default']}_steps"]
        g["truth_env_steps_per_s"] = truth
        g["ratio_to_truth_env"] = round(default / truth, 3)
        generator["families"][family] = g
        print(
            f"generator {family:6s} 64 worlds {g['frames_per_s']} frames/s; {g['ratio_to_truth_env']}x the truth env",
            flush=True,
        )
    path = out / "generator.json"
    path.write_text(json.dumps(generator, indent=2) + "\n")
    print(f"wrote {path}")

    dream: dict = {
        "note": "measured in the same run as truth_envs.json; targets: >= 0.3x the truth env (goal 1.0x), "
        "peak memory of 600 steps < 1.5x that of 60",
        "families": {},
    }
    for family, env_id in FAMILY_ENVS.items():
        d = dream_env_throughput(family)
        truth = results["steps_per_s"][f"{env_id}|mujoco|pixels"]
        d["truth_env_steps_per_s"] = truth
        d["ratio_to_truth_env"] = round(d["env_steps_per_s"] / truth, 3)
        d["memory"] = dream_rollout_memory(family)
        dream["families"][family] = d
        print(
            f"dream env {family:6s} 64 worlds {d['env_steps_per_s']} steps/s = {d['ratio_to_truth_env']}x "
            f"the truth env; one world {d['single_env_ms_per_step']} ms/step; memory {d['memory']}",
            flush=True,
        )
    path = out / "dream_envs.json"
    path.write_text(json.dumps(dream, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
