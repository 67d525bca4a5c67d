"""How far a Drive generator's counted heading drifts from MuJoCo's yaw over whole episodes.

A generator with ``heading`` counts the ego car's heading open loop, from 0 at an episode's first
frame, by its fitted dynamics (``worldsim.model.heading``): a rollout never sees the true yaw again,
so a small error a step becomes a drift over a minute. This replays held-out episodes' actions and
odometer readings through the dynamics (``WorldModel.context_odometer``, as the report counts a
context) and compares each frame's count with the dataset's ``ego_yaw_rad``. It also counts a car
that is never steered, whose heading must stay where it started.

Usage: ``python benchmarks/heading_drift.py data=data/drive_val checkpoint=DIR [frames=10,30,100,200,300]``;
prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from worldsim.checkpoints import load_world_model
from worldsim.data.loader import Dataset, load_dataset
from worldsim.model.world_model import WorldModel


def drift(model: WorldModel, data: Dataset, at: list[int]) -> dict:
    """The counted heading's RMS error (rad) against the dataset's yaw at frames ``at`` of each
    episode, and the heading of a car never steered after a minute of counting."""
    errors: dict[int, list[float]] = {f: [] for f in at}
    for i in range(len(data)):
        e = data.episode(i)
        frames, actions = torch.from_numpy(e.frames)[None], torch.from_numpy(e.actions)[None]
        for f in at:
            if f <= e.steps:
                with torch.no_grad():  # the count over frames 0..f, as a report's context is counted
                    counted = model.context_odometer(frames[:, : f + 1], actions[:, :f])[0, -1, 1].item()
                errors[f].append(counted - float(e.states["ego_yaw_rad"][f]))
    # a car never steered, at a cruising throttle, counted on for a minute as a rollout counts it
    window = torch.zeros(1, model.cfg.context, model.cfg.action_dim)
    window[..., 1] = 0.1
    trail = model.start_odometer(1)
    road = torch.from_numpy(data.episode(0).frames[0])[None]
    with torch.no_grad():
        for _ in range(600):
            trail = model.advance_odometer(trail, road, road, window)
    return {
        "episodes": len(data),
        "rms_error_rad": {
            str(f): (float(np.sqrt(np.mean(np.square(v)))) if v else None) for f, v in errors.items()
        },
        "episodes_at": {str(f): len(v) for f, v in errors.items()},
        "unsteered_heading_after_600_steps_rad": trail[0, -1, 1].item(),
    }


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    data = load_dataset(args["data"])
    model = load_world_model(args["checkpoint"], data.family, "cpu")
    if not model.cfg.heading:
        raise SystemExit(f"{args['checkpoint']} is not told a heading (model.heading)")
    at = [int(f) for f in args.get("frames", "10,30,100,200,300").split(",")]
    print(json.dumps({"data": args["data"], "checkpoint": args["checkpoint"], **drift(model, data, at)}))


if __name__ == "__main__":
    main(sys.argv[1:])
