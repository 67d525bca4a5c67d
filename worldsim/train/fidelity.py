"""The fidelity report of a generator: how far its rollouts drift from MuJoCo, against honest floors.

For held-out episodes (in-distribution, and from the OOD sampler) the generator starts from the
episode's real frames before a start frame (by default its first K) and replays the episode's
actions. Every generator compared should be given the same start: the twin is replayed from the
reset and the frozen baseline repeats the frame before the start, so both floors change with it.
Every generated frame is compared with MuJoCo's by the centroid of each object, found by its flat
colour (``worldsim.metrics``), and by PSNR. The same error is measured for:

- **frozen**: repeating the last context frame (a generator no better than this learned no motion);
- **engine**: the PyBullet twin replaying the same spec and actions (how much two physics engines
  disagree: the floor a generator is judged against);
- **parsing**: the colour extractor on MuJoCo's own frames against the objects' true centres
  projected by the camera (how exactly the measurement itself can place an object).

The action-sensitivity check replays each start with the episode's actions and with another
episode's actions, in MuJoCo and in the generator: a generator that ignores actions makes the same
video twice, where MuJoCo's two futures differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from worldsim.data.loader import Dataset, Episode
from worldsim.metrics.frames import frozen_video, psnr
from worldsim.metrics.intervals import ratio_interval
from worldsim.metrics.objects import (
    centroid_errors,
    extract_objects,
    json_float,
    nanmean,
    palette_for,
    true_points_m,
)
from worldsim.model.world_model import WorldModel
from worldsim.scenes import script_of, start_step_m


def _usable(dataset: Dataset, indices: Iterable[int], start: int, horizon: int) -> list[Episode]:
    """The episodes long enough for ``horizon`` steps that make frames ``start ..``."""
    eps = [dataset.episode(i) for i in indices]
    return [e for e in eps if e.steps >= start - 1 + horizon]


def _start(model: WorldModel, start: int | None) -> int:
    """The first generated frame: ``start``, or the generator's context length K."""
    start = model.cfg.context if start is None else int(start)
    if start < 1:
        raise ValueError(f"a rollout starts from at least one real frame; start={start}")
    return start


def context_at(episode: Episode, start: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The K context frames that end at frame ``start - 1``, the K-1 actions between them and the
    mask: before the reset the first frame is repeated, its actions are zero and its mask False (as
    training pads a window at an episode's start)."""
    pad = max(k - start, 0)
    frames = episode.frames[max(start - k, 0) : start]
    actions = episode.actions[max(start - k, 0) : start - 1]
    frames = np.concatenate([np.repeat(frames[:1], pad, 0), frames])
    actions = np.concatenate([np.zeros((pad, actions.shape[1]), actions.dtype), actions])
    return frames, actions, np.arange(k) >= pad


def generate(
    model: WorldModel,
    episodes: Sequence[Episode],
    horizon: int,
    actions: Sequence[np.ndarray] | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch: int = 64,
    start: int | None = None,
) -> np.ndarray:
    """Roll the generator out from each episode's first K frames: ``uint8[E, horizon, H, W, 3]``.

    The first K-1 actions reproduce the context; ``actions[e]`` (default: the episode's own, from
    step K-1 on) drive the ``horizon`` generated steps. With ``start`` the rollout makes frames
    ``start ..`` instead, from the K frames before it (``context_at``: padded before the reset), so
    generators of any context length can start from the same frame.
    """
    k, start = model.cfg.context, _start(model, start)
    out = []
    gen = torch.Generator().manual_seed(seed)
    for lo in range(0, len(episodes), batch):
        part = episodes[lo : lo + batch]
        contexts = [context_at(e, start, k) for e in part]
        fut = (
            [e.actions[start - 1 : start - 1 + horizon] for e in part]
            if actions is None
            else actions[lo : lo + batch]
        )
        frames = model.rollout(
            torch.from_numpy(np.stack([c[0] for c in contexts])),
            torch.from_numpy(np.stack([c[1] for c in contexts])),
            torch.from_numpy(np.stack(fut)),
            [e.caption for e in part],
            steps,
            gen,
            context_mask=torch.from_numpy(np.stack([c[2] for c in contexts])),
            frame_index=start,
            odometer_m=model.context_odometer(
                torch.from_numpy(np.stack([e.frames[:start] for e in part])),
                torch.from_numpy(np.stack([e.actions[: start - 1] for e in part])),
            ),
            scripts=[script_of(e.spec) for e in part],
            start_step_m=torch.tensor([start_step_m(e.spec) for e in part]),
        )
        out.append(frames.cpu().numpy())
    return np.concatenate(out)


def truth_frames(episode: Episode, start: int, horizon: int) -> np.ndarray:
    """MuJoCo's frames matching a rollout that starts at frame ``start``: ``start .. start+horizon-1``."""
    return episode.frames[start : start + horizon]


def replay(episode: Episode, backend: str, actions: np.ndarray | None = None) -> np.ndarray:
    """Frames of the episode's spec re-simulated in ``backend`` under ``actions`` (default: its own)."""
    from worldsim.physics import make_simulator

    h, w = episode.frames.shape[1:3]
    sim = make_simulator(episode.spec.family, backend, w, h)
    sim.reset(episode.spec)
    frames = [sim.render()]
    for a in episode.actions if actions is None else actions:
        sim.step(a)
        frames.append(sim.render())
    sim.close()
    return np.stack(frames)


def _error_px(truth: np.ndarray, other: np.ndarray, episode: Episode) -> np.ndarray:
    """Per-step mean centroid error ``[T]`` (NaN where no object is visible in either)."""
    return centroid_errors(truth, other, palette_for(episode.spec)).curve_px()


def parsing_error_px(episode: Episode, start: int, horizon: int) -> np.ndarray:
    """Per-step mean distance ``[T]`` between the extractor's centroids on MuJoCo's frames
    ``start .. start+horizon-1`` and the objects' true centres projected into those frames."""
    from worldsim.physics.camera import camera_params
    from worldsim.scenes import family_of

    spec = episode.spec
    frames = episode.frames[start : start + horizon]
    states = {key: v[start : start + horizon] for key, v in episode.states.items()}
    points = true_points_m(spec, states)
    rig = family_of(spec).camera(None)
    h, w = frames.shape[1:3]
    follow = states[f"{rig.follow}_pos_m"][:, 0] if rig.follow is not None else np.zeros(len(frames))
    projected = np.stack(
        [camera_params(rig, w, h, float(x)).project(p) for x, p in zip(follow, points, strict=True)]
    )
    tracks = extract_objects(frames, palette_for(spec))
    dist = np.linalg.norm(tracks.centroid_px - projected, axis=-1)
    dist[~tracks.visible] = np.nan
    with np.errstate(all="ignore"):
        return np.nanmean(dist, axis=-1) if dist.size else np.full(len(frames), np.nan)


def rollout_errors(
    model: WorldModel,
    dataset: Dataset,
    indices: Iterable[int],
    horizon: int,
    steps: int | None = None,
    start: int | None = None,
) -> dict[str, float]:
    """Mean centroid error (px) over ``horizon`` steps of the model and of the frozen baseline."""
    start = _start(model, start)
    eps = _usable(dataset, indices, start, horizon)
    if not eps:
        raise ValueError(f"no episode of {dataset.root} has the {start - 1 + horizon} steps a rollout needs")
    gen = generate(model, eps, horizon, steps=steps, start=start)
    model_err, frozen_err = [], []
    for e, g in zip(eps, gen, strict=True):
        truth = truth_frames(e, start, horizon)
        model_err.append(_error_px(truth, g, e))
        frozen_err.append(_error_px(truth, frozen_video(e.frames[start - 1], horizon), e))
    return {"model_px": float(np.nanmean(model_err)), "frozen_px": float(np.nanmean(frozen_err))}


def _interval(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    """The 95 % bootstrap interval over episodes of a ratio of mean errors, as JSON numbers."""
    return [json_float(x) for x in ratio_interval(num, den)]


def fidelity_report(
    model: WorldModel,
    dataset: Dataset,
    episodes: int = 32,
    horizons: Sequence[int] = (30, 100),
    twin: bool = True,
    steps: int | None = None,
    start: int | None = None,
) -> dict[str, Any]:
    """Per-step curves and summaries of model, frozen and engine errors on a held-out dataset, for
    rollouts that make frames ``start ..`` (default: from the generator's first K frames)."""
    start, longest = _start(model, start), max(horizons)
    report: dict[str, Any] = {"episodes": {}, "horizons": list(horizons), "start": start}
    for h in horizons:
        eps = _usable(dataset, range(min(episodes, len(dataset))), start, h)
        if not eps:
            continue
        gen = generate(model, eps, h, steps=steps, start=start)
        curves: dict[str, list[np.ndarray]] = {
            "model": [],
            "frozen": [],
            "engine": [],
            "parsing": [],
            "psnr_model": [],
        }
        for e, g in zip(eps, gen, strict=True):
            truth = truth_frames(e, start, h)
            curves["model"].append(_error_px(truth, g, e))
            curves["frozen"].append(_error_px(truth, frozen_video(e.frames[start - 1], h), e))
            curves["parsing"].append(parsing_error_px(e, start, h))
            curves["psnr_model"].append(psnr(truth, g, max_db=60.0))
            if twin:
                twin_frames = replay(e, "pybullet")[start : start + h]
                curves["engine"].append(_error_px(truth, twin_frames, e))
        stacked = {name: np.stack(c) for name, c in curves.items() if c}  # [episodes, h] each
        summary = {name: float(np.nanmean(c)) for name, c in stacked.items()}
        summary["frozen_ratio"] = summary["model"] / max(summary["frozen"], 1e-9)
        summary["frozen_ratio_interval"] = _interval(stacked["model"], stacked["frozen"])
        if twin:
            summary["engine_ratio"] = summary["model"] / max(summary["engine"], 1e-9)
            summary["engine_ratio_interval"] = _interval(stacked["model"], stacked["engine"])
        report[f"h{h}"] = {
            "episodes": len(eps),
            "summary": summary,
            # each episode's mean error (px) by its collection index: two reports pair up episode by episode
            "per_episode": {
                "index": [e.index for e in eps],
                **{
                    name: [json_float(x) for x in nanmean(c, 1)]
                    for name, c in stacked.items()
                    if name != "psnr_model"
                },
            },
            "curves": {name: np.nanmean(c, axis=0).tolist() for name, c in stacked.items()},
        }
        report["episodes"][f"h{h}"] = len(eps)
    report["action_sensitivity"] = action_sensitivity(
        model, dataset, min(episodes, 16), min(30, longest), steps, start
    )
    return report


def action_sensitivity(
    model: WorldModel,
    dataset: Dataset,
    episodes: int,
    horizon: int,
    steps: int | None = None,
    start: int | None = None,
) -> dict[str, float]:
    """How much two action sequences from one start separate, in MuJoCo and in the generator.

    The alternative sequence is the actions of the next episode in the list. ``ratio`` near 1 means
    the generator responds to actions as strongly as physics does; near 0, it ignores them.
    """
    start = _start(model, start)
    eps = _usable(dataset, range(len(dataset)), start, horizon)[: episodes + 1]
    if len(eps) < 2:
        return {}
    base, alt = eps[:-1], eps[1:]
    alt_actions = [a.actions[start - 1 : start - 1 + horizon] for a in alt]
    gen_a = generate(model, base, horizon, steps=steps, start=start)
    gen_b = generate(model, base, horizon, actions=alt_actions, steps=steps, start=start)
    truth_gap, model_gap = [], []
    for e, alt_a, ga, gb in zip(base, alt_actions, gen_a, gen_b, strict=True):
        actions_b = np.concatenate([e.actions[: start - 1], alt_a])
        truth_b = replay(e, "mujoco", actions_b)[start : start + horizon]
        truth_a = truth_frames(e, start, horizon)
        truth_gap.append(_error_px(truth_a, truth_b, e))
        model_gap.append(_error_px(ga, gb, e))
    t, m = float(np.nanmean(truth_gap)), float(np.nanmean(model_gap))
    return {"truth_px": t, "model_px": m, "ratio": m / max(t, 1e-9)}
