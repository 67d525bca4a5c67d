"""``worldsim evaluate``: how far a generated world departs from physics, against honest floors.

For each of ``episodes`` starts (a world drawn from the ``split`` sampler with seed ``seed + e``, a
mixture policy acting on MuJoCo's state), MuJoCo runs ``context - 1 + horizon`` steps. The same
spec and actions then run through:

- **model**: the generator, from MuJoCo's first ``context`` frames, whatever its own context length
  (or frames another generator made, read from a directory: ``frames_dir``);
- **frozen**: the last context frame repeated (below 1 as a ratio, a model predicts motion better
  than standing still);
- **twin**: the PyBullet twin (the *engine* floor: how far two physics engines disagree);
- **chaos**: MuJoCo from an initial state perturbed by 1e-4 m (the *chaos* floor: how much of any
  disagreement the scene's own sensitivity explains).

Each is compared with MuJoCo's frames ``context .. context + horizon - 1`` by
``worldsim.metrics.compare``; the *parsing* floor is the colour extractor on MuJoCo's frames
against the true state. Scores:

- ``engine_ratio``: model error / twin error, per metric and overall (centroid error, which counts
  a vanished object at a fixed penalty); 1.0 = as consistent with MuJoCo as another engine;
- ``frozen_ratio``: model error / frozen error (centroid error);
- ``physics_iq``: 0-100, built as Physics-IQ builds its score: each metric's error over the engine
  floor's, turned into a score in [0, 1] (floor / error, clipped), averaged, times 100. The twin
  scores 100 by construction, a perfect copy of MuJoCo too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from worldsim.metrics.compare import (
    VideoComparison,
    compare_video,
    parsing_floor_iou,
    parsing_floor_m,
    read_truth,
)
from worldsim.metrics.frames import frozen_video
from worldsim.metrics.objects import json_float, nanmean, true_points_m

SOURCES = ("model", "frozen", "twin", "chaos")
CHAOS_PERTURBATION_M = 1e-4

# Similarities (in [0, 1], higher is better); every other scored metric is an error (lower is
# better). physics_iq scores IQ_METRICS; kept_fraction is among them so that losing an object (whose
# position and velocity errors are then undefined, and skipped) never improves the score.
SIMILARITIES = (
    "ssim",
    "iou",
    "spatial_iou",
    "spatiotemporal_iou",
    "weighted_spatial_iou",
    "kept_fraction",
    "collision_agreement",
    "off_road_agreement",
)
NOT_ERRORS = ("psnr_db", "vanished", "ghost")  # reported, not scored: PSNR is MSE again, counts are in kept
IQ_METRICS = (
    "centroid_error_px",
    "velocity_error_mps",
    "mse",
    "ssim",
    "spatial_iou",
    "spatiotemporal_iou",
    "weighted_spatial_iou",
    "kept_fraction",
)


def physics_iq(summary: dict[str, dict[str, float]], source: str, floor: str = "twin") -> float | None:
    """0-100, as Physics-IQ normalises its metrics: each similarity of ``source`` over the
    ``floor`` source's, the floor's error over each error, clipped to [0, 1], averaged, times 100."""
    if floor not in summary:
        return None
    parts = []
    for m in IQ_METRICS:
        value, ref = summary[source][m], summary[floor][m]
        if not np.isfinite(value) or not np.isfinite(ref):
            continue
        if m in SIMILARITIES:
            parts.append(float(np.clip(value / ref, 0.0, 1.0)) if ref > 0 else 1.0)
        else:
            parts.append(1.0 if value <= ref else float(ref / value))
    return 100.0 * float(np.mean(parts)) if parts else None


def as_error(metric: str, value: float) -> float:
    """A metric as an error (0 = perfect): similarities become 1 - value."""
    return 1.0 - value if metric in SIMILARITIES else value


@dataclass
class Episode:
    """One start: the spec, MuJoCo's frames, states and cameras, and the actions taken."""

    spec: Any
    caption: str
    actions: np.ndarray  # float32[K-1+H, 2]
    frames: np.ndarray  # uint8[K+H, h, w, 3]
    states: dict[str, np.ndarray]  # [K+H, ...]
    cameras: list  # CameraParams per frame
    segments: np.ndarray | None = None  # MuJoCo's segmentation int32[K+H, h, w] (object ids)
    other: dict[str, np.ndarray] = field(default_factory=dict)  # source -> uint8[H, h, w, 3]


class Run(NamedTuple):
    """One simulated run: frames ``uint8[T+1, h, w, 3]``, stacked states, the camera of each frame,
    the actions taken ``float32[T, 2]``, and (when asked for) segmentation ``int32[T+1, h, w]``."""

    frames: np.ndarray
    states: dict[str, np.ndarray]
    cameras: list
    actions: np.ndarray
    segments: np.ndarray | None


def simulate(
    spec: Any,
    backend: str,
    steps: int,
    size: tuple[int, int],
    actions: np.ndarray | None = None,
    policy: Any = None,
    perturbation_m: float = 0.0,
    seed: int | None = None,
    segment: bool = False,
) -> Run:
    """Run ``spec`` in ``backend`` for ``steps`` steps under ``actions`` or ``policy``."""
    from worldsim.physics import make_simulator

    h, w = size
    sim = make_simulator(spec.family, backend, w, h)
    sim.reset(spec, perturbation_m=perturbation_m, seed=seed)
    if policy is not None:
        policy.reset(sim.state())
    frames, states, cameras, taken = [sim.render()], [sim.state()], [sim.camera()], []
    segments = [sim.segment()] if segment else None
    for t in range(steps):
        a = actions[t] if actions is not None else policy.act(sim.state())
        a = np.clip(np.asarray(a, np.float32), -1.0, 1.0)
        sim.step(a)
        taken.append(a)
        frames.append(sim.render())
        states.append(sim.state())
        cameras.append(sim.camera())
        if segments is not None:
            segments.append(sim.segment())
    sim.close()
    stacked = {k: np.stack([s[k] for s in states]) for k in states[0]}
    return Run(
        np.stack(frames),
        stacked,
        cameras,
        np.stack(taken).astype(np.float32).reshape(steps, -1),
        None if segments is None else np.stack(segments),
    )


def make_episodes(
    scene: str, split: str, episodes: int, horizon: int, context: int, seed: int, size: tuple[int, int]
) -> list[Episode]:
    """MuJoCo's runs of the ``episodes`` starts, with the twin and chaos runs of the same actions."""
    from policies import make_policy
    from worldsim import scenes

    out = []
    steps = context - 1 + horizon
    for e in range(episodes):
        rng = np.random.default_rng(seed + e)
        spec = scenes.sample(scene, rng, split)
        truth = simulate(spec, "mujoco", steps, size, policy=make_policy(scene, "mixture", rng), segment=True)
        frames, actions = truth.frames, truth.actions
        ep = Episode(spec, scenes.caption(spec), actions, frames, truth.states, truth.cameras, truth.segments)
        ep.other["twin"] = simulate(spec, "pybullet", steps, size, actions=actions).frames[context:]
        chaos = simulate(
            spec, "mujoco", steps, size, actions=actions, perturbation_m=CHAOS_PERTURBATION_M, seed=seed + e
        )
        ep.other["chaos"] = chaos.frames[context:]
        ep.other["frozen"] = frozen_video(frames[context - 1], horizon)
        out.append(ep)
    return out


def generate(
    model: Any, episodes: list[Episode], horizon: int, seed: int = 0, start: int | None = None
) -> None:
    """The generator's rollouts that make frames ``start ..`` (default: from each episode's first K
    frames; ``worldsim.train.fidelity``'s, as the fidelity report makes them), stored as
    ``other["model"]``."""
    from worldsim.train import fidelity

    videos = fidelity.generate(model, episodes, horizon, seed=seed, start=start)
    for e, video in zip(episodes, videos, strict=True):
        e.other["model"] = video


def load_frames_dir(path: str | Path, episodes: list[Episode], horizon: int) -> None:
    """Frames of another generator: ``<path>/episode_<e:04d>.npy`` holding ``uint8[horizon, h, w, 3]``,
    the frames that follow the ``context`` frames of start ``e`` (``starts/episode_<e:04d>.npz`` of an
    evaluation run holds those context frames, the actions and the caption)."""
    root = Path(path)
    for i, e in enumerate(episodes):
        f = root / f"episode_{i:04d}.npy"
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: a frames directory holds episode_<e:04d>.npy per start")
        v = np.load(f, allow_pickle=False)
        want = (horizon, *e.frames.shape[1:])
        if v.dtype != np.uint8 or v.shape != want:
            raise ValueError(f"{f} holds {v.dtype}{list(v.shape)}; expected uint8{list(want)}")
        e.other["model"] = v


def write_starts(episodes: list[Episode], context: int, out: Path) -> None:
    """What another generator needs to make frames for the same starts: the ``context`` frames, the
    actions and the caption of each start (``starts/episode_<e:04d>.npz``)."""
    root = out / "starts"
    root.mkdir(parents=True, exist_ok=True)
    for i, e in enumerate(episodes):
        path = root / f"episode_{i:04d}.npz"
        tmp = root / f".episode_{i:04d}.tmp{os.getpid()}.npz"
        np.savez_compressed(
            tmp, context_frames=e.frames[:context], actions=e.actions, caption=np.array(e.caption)
        )
        os.replace(tmp, path)
    for stale in root.glob("episode_*.npz"):  # from an earlier run with more starts
        if int(stale.stem.split("_")[1]) >= len(episodes):
            stale.unlink()


def score(episodes: list[Episode], context: int, dt_s: float) -> dict[str, Any]:
    """Compare every source with MuJoCo on every episode and aggregate: curves, summaries, floors,
    laws and the scores (the body of ``metrics.json``)."""
    per: dict[str, list[VideoComparison]] = {s: [] for s in SOURCES if s in episodes[0].other}
    parsing, parsing_iou, truth_laws = [], [], []
    for e in episodes:
        truth = e.frames[context:]
        cams = e.cameras[context:]
        reading = read_truth(truth, e.spec, cams, dt_s, e.frames[context - 1])
        for s in per:
            per[s].append(compare_video(reading, e.other[s]))
        states = {k: v[context:] for k, v in e.states.items()}
        parsing.append(parsing_floor_m(reading, true_points_m(e.spec, states)))
        if e.segments is not None:
            parsing_iou.append(parsing_floor_iou(reading, e.segments[context:]))
        truth_laws.append(reading.laws())

    curves = {s: {m: nanmean([c.curves[m] for c in cs], 0) for m in cs[0].curves} for s, cs in per.items()}
    summary = {s: {m: float(nanmean(v)) for m, v in c.items()} for s, c in curves.items()}
    for s, cs in per.items():
        for m in cs[0].values:
            summary[s][m] = float(nanmean([c.values[m] for c in cs]))
    laws = {s: {m: json_float(nanmean([c.laws[m] for c in cs])) for m in cs[0].laws} for s, cs in per.items()}
    by_object: dict[str, dict[str, dict[str, float | None]]] = {}
    for s, cs in per.items():  # objects by name across episodes (ball0 is always the agent ball)
        names = sorted({n for c in cs for n in c.by_object})
        by_object[s] = {
            n: {
                m: json_float(nanmean([c.by_object[n][m] for c in cs if n in c.by_object]))
                for m in ("position_error_m", "velocity_error_mps", "centroid_error_px")
            }
            for n in names
        }
    if truth_laws and truth_laws[0]:
        laws["truth"] = {m: json_float(nanmean([t[m] for t in truth_laws])) for m in truth_laws[0]}

    def ratio(a: str, b: str, m: str) -> float | None:
        """Error of ``a`` over error of ``b`` (both as errors); None where ``b``'s is 0 or unknown."""
        if a not in summary or b not in summary:
            return None
        num, den = as_error(m, summary[a][m]), as_error(m, summary[b][m])
        return json_float(num / den) if den > 0 else None

    metric_names = [m for m in summary.get("model", {}) if m not in NOT_ERRORS]
    return {
        "valid_horizon_steps": json_float(np.mean([c.valid_steps for c in per["model"]]))
        if "model" in per
        else None,
        "engine_ratio": ratio("model", "twin", "centroid_error_px"),
        "frozen_ratio": ratio("model", "frozen", "centroid_error_px"),
        "physics_iq": {s: physics_iq(summary, s) for s in summary},
        "engine_ratio_by_metric": {m: ratio("model", "twin", m) for m in metric_names},
        "summary": {s: {m: json_float(v) for m, v in d.items()} for s, d in summary.items()},
        "floors": {
            "engine": {m: json_float(v) for m, v in summary.get("twin", {}).items()},
            "chaos": {m: json_float(v) for m, v in summary.get("chaos", {}).items()},
            "parsing_position_m": json_float(nanmean(np.stack(parsing))),
            "parsing_mask_iou": json_float(nanmean(np.stack(parsing_iou))) if parsing_iou else None,
        },
        "laws": laws,
        "by_object": by_object,
        "valid_horizon_by_source": {
            s: json_float(np.mean([c.valid_steps for c in cs])) for s, cs in per.items()
        },
        "curves": {s: {m: [json_float(x) for x in v] for m, v in c.items()} for s, c in curves.items()},
        "curves_parsing_position_m": [json_float(x) for x in nanmean(np.stack(parsing), 0)],
    }


def evaluate(
    scene: str,
    split: str = "id",
    episodes: int = 50,
    horizon: int = 100,
    checkpoint: str | None = None,
    frames_dir: str | None = None,
    seed: int = 1000,
    device: str = "cpu",
    out: str | Path | None = None,
    video_episodes: int = 4,
    context: int = 4,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole evaluation; with ``out``, writes ``metrics.json``, ``side_by_side.mp4``, plots and
    ``report.html`` there. ``seed`` 1000 on keeps the starts apart from the training data's seeds.
    ``context``: the real frames every generator starts from, the same for all because the floors
    move with it (a checkpoint with a longer context is padded before the reset, as training pads).
    ``sampling``: sampling settings over the checkpoint's own
    (``worldsim.checkpoints.SAMPLING_SETTINGS``; ``None`` values keep the checkpoint's), recorded in
    ``metrics.json``."""
    import json

    from worldsim.checkpoints import load_world_model, sampling_overrides, with_sampling
    from worldsim.durable import write_text_atomic
    from worldsim.scenes import family_of

    if episodes < 1 or horizon < 1:
        raise ValueError(f"episodes and horizon must be at least 1, got {episodes} and {horizon}")
    context = int(context)
    if context < 1:
        raise ValueError(f"a generator starts from at least one real frame; context={context}")
    family = family_of(scene)
    overrides = sampling_overrides(sampling)
    if overrides and frames_dir:
        raise ValueError("sampling settings apply to a checkpoint, not to frames read from a directory")
    model = (
        None if frames_dir else with_sampling(load_world_model(checkpoint, family.name, device), overrides)
    )
    size = (model.cfg.height, model.cfg.width) if model is not None else (64, 64)
    eps = make_episodes(family.name, split, episodes, horizon, context, seed, size)
    if model is not None:
        generate(model, eps, horizon, start=context)
    else:
        load_frames_dir(frames_dir, eps, horizon)
    body = score(eps, context, 1.0 / family.control_hz)
    source = frames_dir or checkpoint or f"the shipped {family.name} checkpoint"
    metrics = {
        "scene": family.name,
        "split": split,
        "episodes": episodes,
        "horizon": horizon,
        "context": context,
        "generator": source,
        **({"sampling": overrides} if overrides else {}),
        **body,
    }
    if out is not None:
        from worldsim.report.html import write_report

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
        write_starts(eps, context, out)
        write_report(metrics, eps[:video_episodes], context, out)
    return metrics
