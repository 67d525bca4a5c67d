"""Text to video against MuJoCo: a generator's first frame from the prompt alone, and the rollout
that goes on from it, beside the same rollout from MuJoCo's own first frame.

Two views, for each checkpoint given (side by side, in one run):

- **first frames**: over a held-out dataset's episodes, the frame the generator draws from each
  prompt (``WorldModel.first_frames``) against MuJoCo's: the mean absolute error in grey levels, the
  share of the prompt's bodies it shows (found by their flat colours, as the metrics find them) and
  the centroid error of those it shows (``worldsim.model.first_frame.first_frame_figures``); the
  generator's mean frame is the bar (it shows no body);
- **rollouts**: ``worldsim dream``'s default worlds (seeds 0..N-1, the scripted policy), ``steps``
  frames started from the generated first frame (``context=generated``) and from MuJoCo's
  (``context=real``): the centroid error over them, and whether every object persists.

Usage: ``python benchmarks/text_to_video.py scene=balls [data=data/balls_val]
[checkpoints=DIR,DIR] [dreams=5] [steps=30]`` (no checkpoint: the shipped one); prints, and writes
``benchmarks/results/text_to_video_<scene>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from policies import make_policy
from worldsim.checkpoints import load_world_model
from worldsim.data.loader import load_dataset
from worldsim.dream import dream, dream_report
from worldsim.model.first_frame import first_frame_figures
from worldsim.model.world_model import WorldModel
from worldsim.scenes import caption, sample, scripts_of_prompts

BATCH = 16  # prompts drawn at once


def first_frames(model: WorldModel, truth: np.ndarray, captions: list[str]) -> dict:
    """The generator's first frames of ``captions`` against MuJoCo's (``truth``), and its mean frame's."""
    drawn = []
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(captions), BATCH):
        chunk = captions[i : i + BATCH]
        scripts = scripts_of_prompts(chunk, model.cfg.family)
        context, _ = model.first_frames(chunk, generator=gen, scripts=scripts)
        drawn.append(context[:, -1].cpu().numpy())
    mean = np.broadcast_to(model.empty_frame.cpu().numpy(), truth.shape)
    family = model.cfg.family
    return {
        "episodes": len(captions),
        "generated": first_frame_figures(np.concatenate(drawn), truth, captions, family),
        "mean_frame": first_frame_figures(mean, truth, captions, family),
    }


def rollouts(model: WorldModel, dreams: int, steps: int) -> list[dict]:
    """``dreams`` default worlds rolled out ``steps`` frames from a generated and from a real start."""
    rows = []
    family = model.cfg.family
    for seed in range(dreams):
        spec = sample(family, np.random.default_rng(seed), "id")
        row: dict = {"seed": seed}
        for context in ("generated", "real"):
            policy = make_policy(family, "scripted", np.random.default_rng(seed))
            d = dream(model, spec, caption(spec), steps, policy, None, context, None, seed)
            report = dream_report(d, spec)
            row[context] = {
                "error_px": report["centroid_error"]["all"]["error_px"],
                "vanished": report["centroid_error"]["all"]["vanished"],
                "all_persist": report["collapse"]["all_persist"],
            }
        rows.append(row)
    return rows


def key_of(checkpoint: str | None, scene: str) -> str:
    return checkpoint or f"shipped {scene}"


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    scene = args.get("scene", "balls")
    data_dir = args.get("data", f"data/{scene}_val")
    data = load_dataset(data_dir)
    if data.family != scene:
        raise SystemExit(f"data {data_dir} holds {data.family} episodes, not {scene}")
    episodes = [data.episode(i) for i in range(len(data))]
    truth = np.stack([e.frames[0] for e in episodes])
    captions = [e.caption for e in episodes]
    dreams, steps = int(args.get("dreams", 5)), int(args.get("steps", 30))
    result: dict = {"scene": scene, "data": data_dir, "dreams": dreams, "steps": steps, "checkpoints": {}}
    for name in args.get("checkpoints", "").split(",") if args.get("checkpoints") else [None]:
        model = load_world_model(name, scene, "cpu")
        if truth.shape[1:3] != (model.cfg.height, model.cfg.width):
            raise SystemExit(
                f"{key_of(name, scene)} makes {model.cfg.height}x{model.cfg.width} frames, {data_dir} holds {truth.shape[1:3]}"
            )
        key = key_of(name, scene)
        row = {
            "first_frame_layout": model.cfg.first_frame_layout,
            "first_frames": first_frames(model, truth, captions),
            "rollouts": rollouts(model, dreams, steps),
        }
        result["checkpoints"][key] = row
        f, m = row["first_frames"]["generated"], row["first_frames"]["mean_frame"]
        gen = [r["generated"]["error_px"] for r in row["rollouts"]]
        real = [r["real"]["error_px"] for r in row["rollouts"]]
        kept = sum(r["generated"]["all_persist"] for r in row["rollouts"])
        print(
            f"{key}: first frames of {len(captions)} prompts: {f['error_levels']:.1f} levels off "
            f"(mean frame {m['error_levels']:.1f}), bodies shown {f['bodies_found']:.2f}, centroid "
            f"{f['centroid_px']:.2f} px; {steps} steps from the generated start "
            f"{np.mean([g if g is not None else np.nan for g in gen]):.1f} px (worlds {gen}), from MuJoCo's "
            f"{np.mean([r if r is not None else np.nan for r in real]):.1f} px; objects kept in {kept} of {dreams}"
        )
    out = Path(args.get("out", Path(__file__).parent / "results" / f"text_to_video_{scene}.json"))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
