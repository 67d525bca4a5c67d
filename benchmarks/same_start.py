"""Generators of different context lengths scored from the same frame, against the same floors.

Started from an episode's first K real frames, a generator that reads K = 8 frames starts four
frames later than one that reads 4, is shown twice the real history, and is judged against a
PyBullet twin (replayed from the reset) that has had 8 steps to drift from MuJoCo instead of 4
(the fidelity report's ``start=null``; its configs give ``start=4``, as this does). This starts
every generator at frame ``start``: the last K real frames before it
(``worldsim.train.fidelity.generate``'s ``start``: a context longer than ``start`` is padded and
masked, as training pads a window at an episode's start), the same actions, the same truth, twin
and frozen frames.
It also splits the agent's error into its two image axes (Drive's ego car moves across the road in
columns; the camera follows it along the road).

Usage: ``python benchmarks/same_start.py data=data/drive_val [checkpoint=DIR] [start=4]
[episodes=32] [horizon=30]``; prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from worldsim.checkpoints import load_world_model
from worldsim.data.loader import Episode, load_dataset
from worldsim.metrics.frames import frozen_video
from worldsim.metrics.objects import centroid_errors, extract_objects, palette_for
from worldsim.train.fidelity import generate, replay


def agent_axes_px(truth: np.ndarray, other: np.ndarray, episode: Episode) -> np.ndarray:
    """The first object's absolute error along columns and rows, ``[T, 2]`` (NaN where either misses it)."""
    pal = palette_for(episode.spec)
    return np.abs(
        extract_objects(other, pal).centroid_px[:, 0] - extract_objects(truth, pal).centroid_px[:, 0]
    )


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    data = load_dataset(args["data"])
    model = load_world_model(args.get("checkpoint"), data.family, "cpu")
    start, horizon, n = int(args.get("start", 4)), int(args.get("horizon", 30)), int(args.get("episodes", 32))
    if start < 1:
        raise ValueError(f"start must be >= 1 (the rollout needs one real frame), got {start}")
    eps = [e for e in (data.episode(i) for i in range(min(n, len(data)))) if e.steps >= start - 1 + horizon]
    made = generate(model, eps, horizon, start=start)
    curves: dict[str, list[np.ndarray]] = {"model": [], "twin": [], "frozen": []}
    axes: dict[str, list[np.ndarray]] = {"model": [], "twin": []}
    for e, video in zip(eps, made, strict=True):
        truth, pal = e.frames[start : start + horizon], palette_for(e.spec)
        others = {
            "model": video,
            "twin": replay(e, "pybullet")[start : start + horizon],
            "frozen": frozen_video(e.frames[start - 1], horizon),
        }
        for name, frames in others.items():
            curves[name].append(centroid_errors(truth, frames, pal).curve_px())
            if name in axes:
                axes[name].append(agent_axes_px(truth, frames, e))
    mean = {name: float(np.nanmean(np.stack(c))) for name, c in curves.items()}
    result = {
        "data": args["data"],
        "checkpoint": args.get("checkpoint", f"shipped {data.family}"),
        "context": model.cfg.context,
        "start": start,
        "episodes": len(eps),
        "horizon": horizon,
        "mean_px": mean,
        "engine_ratio": mean["model"] / max(mean["twin"], 1e-9),
        "frozen_ratio": mean["model"] / max(mean["frozen"], 1e-9),
        "agent_columns_rows_px": {
            name: np.nanmean(np.stack(a), (0, 1)).round(3).tolist() for name, a in axes.items()
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
