"""What a fidelity report's centroid error is made of: which objects, misplaced or missing.

The fidelity report's figure (``worldsim report``, ``worldsim.train.fidelity``) is one mean over
steps and objects, in which a missing object costs the half-diagonal penalty (45 px at 64x64). This
replays the same rollouts (a held-out dataset's first episodes, their own actions, sampling seed 0)
and splits the figure per object: the mean error where the object is found in both videos, the
object-steps MuJoCo shows that the generator does not draw (vanished) and the reverse (ghosts), and
the error of the first object (the agent: Balls' agent ball, Push's pusher, Drive's ego car) by step
for the generator, the PyBullet twin and the frozen baseline.

For a dataset whose objects enter the view (Drive's pedestrian) it also says how well the moment one
enters can be known: by how far down the road the camera has come, or by the prompt and the clock.

Usage: ``python benchmarks/error_breakdown.py data=data/drive_val [checkpoint=DIR] [episodes=32]
[horizon=30] [train_data=data/drive]``; prints, and writes ``benchmarks/results/error_breakdown_<family>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from worldsim.checkpoints import load_world_model
from worldsim.data.loader import Dataset, load_dataset
from worldsim.metrics.objects import CentroidErrors, centroid_errors, extract_objects, nanmean, palette_for
from worldsim.train.fidelity import generate, replay, truth_frames

STEP_STRIDE = 3  # the agent's error is printed every this many steps


def per_object(errors: list[CentroidErrors]) -> dict[str, dict[str, float]]:
    """Per object name, over every episode and step: found (both videos), their mean error, vanished
    and ghost object-steps, and the episodes where it vanished at least once."""
    out: dict[str, dict[str, float]] = {}
    for ce in errors:
        for j, name in enumerate(ce.objects):
            row = out.setdefault(
                name, {"found": 0, "error_sum_px": 0.0, "vanished": 0, "ghost": 0, "episodes_vanished": 0}
            )
            row["found"] += int(ce.matched[:, j].sum())
            row["error_sum_px"] += float(ce.error_px[ce.matched[:, j], j].sum())
            row["vanished"] += int(ce.vanished[:, j].sum())
            row["ghost"] += int(ce.ghost[:, j].sum())
            row["episodes_vanished"] += int(ce.vanished[:, j].any())
    for row in out.values():
        total = row.pop("error_sum_px")
        row["found_error_px"] = total / row["found"] if row["found"] else None  # never found: no error
    return out


def agent_curve(errors: list[CentroidErrors]) -> list[float]:
    """The first object's error by step where it is found in both, averaged over episodes."""
    curves = [np.where(ce.matched[:, 0], ce.error_px[:, 0], np.nan) for ce in errors]
    return [float(x) for x in nanmean(np.stack(curves), 0)]


def entering(dataset: Dataset, name: str, first_step: int = 5) -> dict[str, float] | None:
    """For episodes where object ``name`` first comes into view after ``first_step``: the road between
    the camera's car and the object's ``x`` at that frame, and the frame as the prompt and the clock
    alone would place it (the car at the prompt's speed throughout)."""
    rows = []
    for i in range(len(dataset)):
        e = dataset.episode(i)
        spec = e.spec
        x_m = getattr(spec, f"{name}_x_m", None)
        if x_m is None or getattr(spec, f"{name}_colour", None) is None:
            continue
        tracks = extract_objects(e.frames, palette_for(spec))
        seen = np.nonzero(tracks.visible[:, list(tracks.objects).index(name)])[0]
        if len(seen) and seen[0] > first_step:
            ahead = x_m - e.states["ego_pos_m"][seen[0], 0]
            rows.append(
                (
                    seen[0],
                    ahead,
                    x_m,
                    spec.ego_speed_mps,
                    float(e.states["time_s"][1] - e.states["time_s"][0]),
                )
            )
    if not rows:
        return None
    r = np.array(rows)
    by_clock = (r[:, 2] - r[:, 1].mean()) / r[:, 3] / r[:, 4]  # the frame, from the prompt's speed
    miss = r[:, 0] - by_clock
    return {
        "episodes": len(r),
        "road_ahead_at_entry_m_mean": float(r[:, 1].mean()),
        "road_ahead_at_entry_m_std": float(r[:, 1].std()),
        "entry_frame_by_prompt_and_clock_mean_abs_error": float(np.abs(miss - miss.mean()).mean()),
        "entry_frame_by_prompt_and_clock_bias": float(miss.mean()),
    }


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    data = load_dataset(args["data"])
    episodes, horizon = int(args.get("episodes", 32)), int(args.get("horizon", 30))
    model = load_world_model(args.get("checkpoint"), data.family, "cpu")
    k = model.cfg.context
    eps = [
        e for e in (data.episode(i) for i in range(min(episodes, len(data)))) if e.steps >= k - 1 + horizon
    ]
    made = generate(model, eps, horizon)
    errors: dict[str, list[CentroidErrors]] = {"model": [], "twin": [], "frozen": []}
    for e, video in zip(eps, made, strict=True):
        truth, pal = truth_frames(e, k, horizon), palette_for(e.spec)
        errors["model"].append(centroid_errors(truth, video, pal))
        errors["twin"].append(centroid_errors(truth, replay(e, "pybullet")[k : k + horizon], pal))
        errors["frozen"].append(centroid_errors(truth, np.repeat(e.frames[k - 1 : k], horizon, 0), pal))
    result = {
        "data": args["data"],
        "checkpoint": args.get("checkpoint", f"shipped {data.family}"),
        "episodes": len(eps),
        "horizon": horizon,
        "mean_px": {s: float(nanmean(np.stack([ce.curve_px() for ce in v]))) for s, v in errors.items()},
        "objects": {s: per_object(v) for s, v in errors.items()},
        "agent_by_step_px": {s: agent_curve(v) for s, v in errors.items()},
    }
    if "train_data" in args and data.family == "drive":
        result["pedestrian_entering"] = entering(load_dataset(args["train_data"]), "ped")
    for s in errors:
        print(f"{s}: mean {result['mean_px'][s]:.3f} px")
        for name, row in result["objects"][s].items():
            print(f"  {name}: {json.dumps({key: v if v is None else round(v, 3) for key, v in row.items()})}")
        print(f"  agent by step: {np.round(result['agent_by_step_px'][s][::STEP_STRIDE], 2).tolist()}")
    if result.get("pedestrian_entering"):
        print("pedestrian entering:", json.dumps(result["pedestrian_entering"]))
    out = Path(__file__).parent / "results" / f"error_breakdown_{data.family}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
