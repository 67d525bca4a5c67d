"""Where a generator loses objects: in one step, or by compounding its own errors.

On `worldsim evaluate`'s starts (MuJoCo's frames, the mixture policy's actions), the generator makes
each of the next H frames twice: *teacher-forced*, from MuJoCo's K frames before it (one step from
the truth, every step), and in its own *rollout* (as `worldsim evaluate` scores it). For both it
reports the share of object-steps MuJoCo shows that the colour extractor does not find, the
centroid error of the objects it does find, and how far the lost objects really moved in that step;
and, for the objects it finds in consecutive frames, how far they move a step against how far they
really move, by their true speed (a generator whose moves fall short in one step slows its balls
down step after step in a rollout, where each step reads the motion it drew last).

Usage: ``python benchmarks/compounding.py [scene=balls] [checkpoint=DIR] [episodes=50] [horizon=30]``;
writes ``benchmarks/results/compounding_<scene>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from worldsim.checkpoints import load_world_model
from worldsim.evaluate import Episode, generate, make_episodes
from worldsim.metrics.objects import extract_objects, palette_for
from worldsim.scenes import script_of


@torch.no_grad()
def teacher_forced(model, episodes: list[Episode], horizon: int, seed: int = 0) -> np.ndarray:
    """``uint8[E, H, h, w, 3]``: frame K+h made from MuJoCo's frames h..h+K-1 and their actions."""
    k = model.cfg.context
    prompt = model.encode_prompts([e.caption for e in episodes])
    gen = torch.Generator().manual_seed(seed)
    out = []
    for h in range(horizon):
        context = torch.from_numpy(np.stack([e.frames[h : h + k] for e in episodes]))
        actions = torch.from_numpy(np.stack([e.actions[h : h + k] for e in episodes]))
        odometer = None  # the distance at the last context frame, read from each episode's first frame
        if model.cfg.odometer:
            odometer = model.context_odometer(
                torch.from_numpy(np.stack([e.frames[: h + k] for e in episodes])),
                torch.from_numpy(np.stack([e.actions[: h + k - 1] for e in episodes])),
            )
        out.append(
            model.predict_next(
                context,
                actions,
                prompt,
                generator=gen,
                frame_index=h + k,
                odometer_m=odometer,
                scripts=[script_of(e.spec) for e in episodes],
            ).numpy()
        )
    return np.stack(out, axis=1)


def object_losses(episodes: list[Episode], videos, context: int) -> dict[str, float]:
    """Lost share of the object-steps MuJoCo shows, error of the found, and the true motion of both."""
    shown = lost = 0
    errors, moved_shown, moved_lost = [], [], []
    for e, video in zip(episodes, videos, strict=True):
        palette = palette_for(e.spec)
        horizon = len(video)
        truth = extract_objects(e.frames[context : context + horizon], palette)
        before = extract_objects(e.frames[context - 1 : context - 1 + horizon], palette)
        made = extract_objects(video, palette)
        moved = np.linalg.norm(truth.centroid_px - before.centroid_px, axis=-1)
        missing = truth.visible & ~made.visible
        found = truth.visible & made.visible
        shown += int(truth.visible.sum())
        lost += int(missing.sum())
        errors.extend(np.linalg.norm(truth.centroid_px - made.centroid_px, axis=-1)[found])
        moved_shown.extend(moved[truth.visible])
        moved_lost.extend(moved[missing])
    return {
        "lost_share": round(lost / max(shown, 1), 4),
        "found_centroid_error_px": round(float(np.mean(errors)), 3) if errors else None,
        "median_true_motion_px_of_shown": round(float(np.nanmedian(moved_shown)), 2),
        "median_true_motion_px_of_lost": round(float(np.nanmedian(moved_lost)), 2) if moved_lost else None,
    }


SPEED_BINS_PX = (0.0, 0.5, 1.5, 3.0, 6.0, np.inf)
STILL_PX = 0.25


def motion_by_speed(episodes: list[Episode], videos, context: int, rolled: bool) -> dict[str, dict]:
    """Per band of true speed (px per step): how many object-steps, the generated speed over the true
    one (means), and the share the generator left still (moved under ``STILL_PX``). A generated step
    moves from the frame the generator read: MuJoCo's (teacher-forced) or its own last (``rolled``)."""
    true_speed, made_speed = [], []
    for e, video in zip(episodes, videos, strict=True):
        palette = palette_for(e.spec)
        horizon = len(video)
        truth = extract_objects(e.frames[context - 1 : context + horizon], palette)
        made = extract_objects(video, palette)
        if rolled:
            read = extract_objects(np.concatenate([e.frames[context - 1 : context], video[:-1]]), palette)
        else:
            read = extract_objects(e.frames[context - 1 : context - 1 + horizon], palette)
        ok = truth.visible[1:] & truth.visible[:-1] & made.visible & read.visible
        true_speed.extend(np.linalg.norm(truth.centroid_px[1:] - truth.centroid_px[:-1], axis=-1)[ok])
        made_speed.extend(np.linalg.norm(made.centroid_px - read.centroid_px, axis=-1)[ok])
    t, m = np.asarray(true_speed), np.asarray(made_speed)
    out = {}
    for lo, hi in zip(SPEED_BINS_PX[:-1], SPEED_BINS_PX[1:], strict=True):
        sel = (t >= lo) & (t < hi)
        out[f"{lo:g}-{hi:g}"] = {
            "object_steps": int(sel.sum()),
            "speed_ratio": round(float(m[sel].mean() / t[sel].mean()), 3) if t[sel].sum() > 0 else None,
            "still_share": round(float((m[sel] < STILL_PX).mean()), 3) if sel.any() else None,
        }
    return out


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    scene = args.get("scene", "balls")
    episodes, horizon = int(args.get("episodes", 50)), int(args.get("horizon", 30))
    model = load_world_model(args.get("checkpoint"), scene, "cpu")
    k = model.cfg.context
    eps = make_episodes(scene, "id", episodes, horizon, k, 1000, (model.cfg.height, model.cfg.width))
    generate(model, eps, horizon)
    forced = teacher_forced(model, eps, horizon)
    rolled = [e.other["model"] for e in eps]
    result = {
        "scene": scene,
        "checkpoint": args.get("checkpoint", "shipped"),
        "episodes": episodes,
        "horizon": horizon,
        "teacher_forced": object_losses(eps, forced, k),
        "rollout": object_losses(eps, rolled, k),
        "motion_by_true_speed_px": {
            "teacher_forced": motion_by_speed(eps, forced, k, rolled=False),
            "rollout": motion_by_speed(eps, rolled, k, rolled=True),
        },
    }
    out = Path(args.get("out", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"compounding_{scene}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
