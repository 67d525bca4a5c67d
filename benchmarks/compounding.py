"""Where a generator loses objects: in one step, or by compounding its own errors.

On `worldsim evaluate`'s starts (MuJoCo's frames, the mixture policy's actions), the generator makes
each of the next H frames twice: *teacher-forced*, from MuJoCo's K frames before it (one step from
the truth, every step), and in its own *rollout* (as `worldsim evaluate` scores it). For both it
reports the share of object-steps MuJoCo shows that the colour extractor does not find, the
centroid error of the objects it does find, and how far the lost objects really moved in that step.

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
        out.append(model.predict_next(context, actions, prompt, generator=gen, frame_index=h + k).numpy())
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


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    scene = args.get("scene", "balls")
    episodes, horizon = int(args.get("episodes", 50)), int(args.get("horizon", 30))
    model = load_world_model(args.get("checkpoint"), scene, "cpu")
    k = model.cfg.context
    eps = make_episodes(scene, "id", episodes, horizon, k, 1000, (model.cfg.height, model.cfg.width))
    generate(model, eps, horizon)
    result = {
        "scene": scene,
        "checkpoint": args.get("checkpoint", "shipped"),
        "episodes": episodes,
        "horizon": horizon,
        "teacher_forced": object_losses(eps, teacher_forced(model, eps, horizon), k),
        "rollout": object_losses(eps, [e.other["model"] for e in eps], k),
    }
    out = Path(args.get("out", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"compounding_{scene}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
