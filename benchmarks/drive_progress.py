"""How far a Drive generator's car drives, against MuJoCo's: the road's scroll, read from the frames.

The odometer (``worldsim.model.odometry``) reads the distance driven from the centre line's dash
phase, so the same reading on generated and on MuJoCo frames says whether the generated car keeps
its speed. Three views, from the shortest to the longest:

- **teacher-forced**: one step from real context frames (a held-out dataset, starts every 6 steps):
  the generated scroll over MuJoCo's, summed over the steps where MuJoCo's car moves;
- **closed loop**: the generator's own rollout from each episode's first frames under the episode's
  actions (``worldsim.train.fidelity.generate``, the fidelity report's rollouts), distance driven
  against MuJoCo's at a few horizons;
- **a minute**: ``worldsim dream``'s default worlds (seeds 0..N-1, the scripted policy, 600 frames):
  the distance in each 50-frame block and the share of the last 300 frames that do not change.

A generator whose one-step scroll is a little short is not yet one whose car slows down: in closed
loop it reads its own frames, and a shortfall it keeps compounds into a car that stops.

Usage: ``python benchmarks/drive_progress.py data=data/drive_val [checkpoint=DIR] [dreams=5]``;
prints, and writes ``benchmarks/results/drive_progress.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from policies import make_policy
from worldsim.checkpoints import load_world_model
from worldsim.data.loader import Dataset, Episode, load_dataset
from worldsim.dream import dream
from worldsim.model.odometry import OdometerConfig, odometer_m, step_m
from worldsim.model.world_model import WorldModel
from worldsim.scenes import caption, sample, script_of
from worldsim.train.fidelity import generate

TEACHER_STARTS = range(0, 90, 6)  # first context frame of the teacher-forced windows
HORIZONS = (10, 30, 60, 100)
MOVING_M = 0.2  # a step where MuJoCo's car moves at least this far (2 m/s) counts as moving
BLOCK = 50  # frames per block of a minute-long dream


def distance_ratio(generated: torch.Tensor, truth: torch.Tensor, markings: OdometerConfig) -> dict:
    """Distance the odometer reads over videos ``uint8[E, T, H, W, 3]`` that start from the same real
    frame, generated against MuJoCo's: means in metres and the ratio of the sums."""
    driven = odometer_m(generated, markings)[:, -1].numpy()
    true = odometer_m(truth, markings)[:, -1].numpy()
    return {
        "generated_m": float(driven.mean()),
        "mujoco_m": float(true.mean()),
        "ratio": float(driven.sum() / true.sum()),
    }


def teacher_forced(model: WorldModel, episodes: list[Episode]) -> dict[str, float]:
    """One generated step from real context at each start: generated over true scroll (moving steps)."""
    k, markings = model.cfg.context, model.cfg.odometer_markings
    generated, true = [], []
    for t in TEACHER_STARTS:
        part = [e for e in episodes if e.steps >= t + k + 1]
        if not part:
            break
        ctx = torch.from_numpy(np.stack([e.frames[t : t + k] for e in part]))
        frames = model.rollout(
            ctx,
            torch.from_numpy(np.stack([e.actions[t : t + k - 1] for e in part])),
            torch.from_numpy(np.stack([e.actions[t + k - 1 : t + k] for e in part])),
            [e.caption for e in part],
            None,
            torch.Generator().manual_seed(0),
            frame_index=t + k,
            odometer_m=model.context_odometer(
                torch.from_numpy(np.stack([e.frames[: t + k] for e in part])),
                torch.from_numpy(np.stack([e.actions[: t + k - 1] for e in part])),
            ),
            scripts=[script_of(e.spec) for e in part],
        )
        truth = torch.from_numpy(np.stack([e.frames[t + k] for e in part]))
        generated.append(step_m(ctx[:, -1], frames[:, 0], markings).numpy())
        true.append(step_m(ctx[:, -1], truth, markings).numpy())
    g, m = np.concatenate(generated), np.concatenate(true)
    moving = m > MOVING_M
    return {
        "moving_steps": int(moving.sum()),
        "scroll_ratio": float(g[moving].sum() / m[moving].sum()),
        "median_step_ratio": float(np.median(g[moving] / m[moving])),
    }


def closed_loop(model: WorldModel, episodes: list[Episode]) -> dict[str, dict[str, float]]:
    """Distance driven in the generator's own rollouts against MuJoCo's, at each of ``HORIZONS``."""
    k, markings, out = model.cfg.context, model.cfg.odometer_markings, {}
    for h in HORIZONS:
        part = [e for e in episodes if e.steps >= k - 1 + h]
        frames = torch.from_numpy(generate(model, part, h))
        last = torch.from_numpy(np.stack([e.frames[k - 1 : k] for e in part]))
        truth = torch.from_numpy(np.stack([e.frames[k - 1 : k + h] for e in part]))
        out[str(h)] = {"episodes": len(part), **distance_ratio(torch.cat([last, frames], 1), truth, markings)}
    return out


def minute(model: WorldModel, worlds: int, steps: int = 600) -> list[dict]:
    """The default worlds of ``worldsim dream``: distance per block and frames that stop changing."""
    markings, out = model.cfg.odometer_markings, []
    for seed in range(worlds):
        spec = sample("drive", np.random.default_rng(seed), "id")
        policy = make_policy("drive", "scripted", np.random.default_rng(seed))
        d = dream(model, spec, caption(spec), steps, policy, seed=seed)
        row: dict = {"seed": seed}
        for name, video in (("generated", d.generated), ("mujoco", d.truth)):
            driven = odometer_m(torch.from_numpy(video), markings).numpy()
            still = np.abs(np.diff(video.astype(np.int16), axis=0)).max(axis=(1, 2, 3)) == 0
            row[name] = {
                "driven_m": float(driven[-1]),
                "per_block_m": [
                    float(driven[i + BLOCK] - driven[i]) for i in range(0, steps - BLOCK + 1, BLOCK)
                ],
                "unchanged_share_last_300": float(still[-300:].mean()),
            }
        out.append(row)
    return out


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    data: Dataset = load_dataset(args["data"])
    if data.family != "drive":
        raise SystemExit(f"drive_progress reads a road's markings: give a Drive dataset, not {data.family}")
    model = load_world_model(args.get("checkpoint"), "drive", "cpu")
    if model.cfg.odometer_markings is None:
        raise SystemExit("drive_progress reads the markings a generator's odometer knows: this one has none")
    episodes = [data.episode(i) for i in range(len(data))]
    result = {
        "data": args["data"],
        "checkpoint": args.get("checkpoint", "shipped drive"),
        "teacher_forced": teacher_forced(model, episodes),
        "closed_loop": closed_loop(model, episodes),
        "minute": minute(model, int(args.get("dreams", 5))),
    }
    tf = result["teacher_forced"]
    print(
        f"teacher-forced, {tf['moving_steps']} moving steps: generated/true scroll {tf['scroll_ratio']:.3f}"
    )
    for h, row in result["closed_loop"].items():
        print(
            f"closed loop, {h} steps ({row['episodes']} episodes): {row['generated_m']:.1f} m against "
            f"{row['mujoco_m']:.1f} m, ratio {row['ratio']:.3f}"
        )
    for row in result["minute"]:
        g, m = row["generated"], row["mujoco"]
        print(
            f"world {row['seed']}: {g['driven_m']:.0f} m of {m['driven_m']:.0f} m in 600 frames, last 300 "
            f"unchanged {g['unchanged_share_last_300']:.2f}; per 50 frames "
            f"{[round(x) for x in g['per_block_m']]} against {[round(x) for x in m['per_block_m']]}"
        )
    out = Path(args.get("out", Path(__file__).parent / "results" / "drive_progress.json"))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
