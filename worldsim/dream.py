"""Dreaming a video: a generator rolled out from a prompt under a sequence of actions, next to MuJoCo.

The actions come from a policy that acts on MuJoCo's state (MuJoCo runs alongside with the same
actions, so a scripted controller can act and the generated video has a truth to be compared with)
or from a fixed array. The start is either real (MuJoCo's first frame of the prompt's world) or
generated from the prompt alone (text-to-video). Both start the way an episode starts: one frame,
padded to the model's K context frames with a mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from worldsim.metrics.objects import Palette, centroid_errors, extract_objects, palette_for
from worldsim.model.world_model import WorldModel
from worldsim.physics import make_simulator
from worldsim.scenes import script_of, start_step_m


class Policy(Protocol):
    def reset(self, state: dict[str, np.ndarray]) -> None: ...

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class Dream:
    """A dreamed rollout: generated and MuJoCo frames ``uint8[T+1,H,W,3]`` (frame 0 is the start)
    and the ``T`` actions taken."""

    generated: np.ndarray
    truth: np.ndarray
    actions: np.ndarray
    caption: str


@torch.no_grad()
def dream(
    model: WorldModel,
    spec: Any,
    caption: str,
    steps: int,
    policy: Policy | None = None,
    actions: np.ndarray | None = None,
    context: str = "real",
    sampling_steps: int | None = None,
    seed: int = 0,
) -> Dream:
    """Roll ``model`` out for ``steps`` frames; MuJoCo runs the same spec and actions alongside."""
    if (policy is None) == (actions is None):
        raise ValueError("give either a policy or an actions array")
    if actions is not None:
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (steps, model.cfg.action_dim) or not np.isfinite(actions).all():
            raise ValueError(
                f"actions must be finite with shape ({steps}, {model.cfg.action_dim}), got {actions.shape}"
            )
    if context not in ("real", "generated"):
        raise ValueError(f"context must be 'real' or 'generated', got {context!r}")
    device = next(model.parameters()).device
    k = model.cfg.context
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sim = make_simulator(spec.family, "mujoco", model.cfg.width, model.cfg.height)
    sim.reset(spec)
    truth = [sim.render()]
    if context == "real":
        ctx = torch.from_numpy(truth[0])[None, None].expand(1, k, *truth[0].shape).clone()
        mask = torch.zeros(1, k, dtype=torch.bool)
        mask[:, -1] = True
    else:
        ctx, mask = model.first_frames(
            [caption], steps=sampling_steps, generator=gen, scripts=[script_of(spec)]
        )
    ctx, mask = ctx.to(device), mask.to(device)
    prompt = model.encode_prompts([caption])
    generated = [ctx[0, -1].cpu().numpy()]
    past = torch.zeros(1, k, model.cfg.action_dim, device=device)
    if policy is not None:
        policy.reset(sim.state())
    taken = []
    odometer = model.start_odometer(1, device)  # the start is an episode's first frame
    scripts = [script_of(spec)]
    start_step = torch.tensor([start_step_m(spec)], device=device)  # the prompt's speed
    for t in range(steps):
        a = np.clip(policy.act(sim.state()) if policy is not None else actions[t], -1.0, 1.0).astype(
            np.float32
        )
        taken.append(a)
        past = torch.cat([past[:, 1:], torch.from_numpy(a)[None, None].to(device)], dim=1)
        nxt = model.predict_next(
            ctx,
            past,
            prompt,
            mask,
            steps=sampling_steps,
            generator=gen,
            frame_index=t + 1,
            odometer_m=odometer,
            scripts=scripts,
        )
        odometer = model.advance_odometer(odometer, ctx[:, -1], nxt, past, start_step)
        ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
        mask = torch.cat([mask[:, 1:], torch.ones(1, 1, dtype=torch.bool, device=device)], dim=1)
        generated.append(nxt[0].cpu().numpy())
        sim.step(a)
        truth.append(sim.render())
    sim.close()
    return Dream(np.stack(generated), np.stack(truth), np.stack(taken), caption)


def write_video(d: Dream, path: str | Path, upscale_factor: int = 4) -> Path:
    """The dream as an mp4: generated frames (left) beside MuJoCo's (right), upscaled."""
    from worldsim.report.video import side_by_side, upscale, write_mp4

    frames = [
        side_by_side([upscale(g, upscale_factor), upscale(t, upscale_factor)])
        for g, t in zip(d.generated, d.truth, strict=True)
    ]
    return write_mp4(frames, path, fps=10)


OFF_PALETTE_LEVELS = 40  # a pixel further than this from every colour of the scene, in some channel


def off_palette_share(frames_uint8: np.ndarray, spec: Any) -> np.ndarray:
    """Per frame of ``uint8[T, H, W, 3]``, the share of pixels that are no colour of the scene: more
    than ``OFF_PALETTE_LEVELS`` from each colour of its palette (scenery and objects) in some channel.
    MuJoCo renders flat colours, so its frames have none; what a generator leaves on the scenery
    (specks along a path an object took, the smear of a pushed object) is counted here, where the
    object check, which finds objects by their colours, does not see it."""
    palette = np.asarray(palette_for(spec).rgb, np.int16)
    frames = np.asarray(frames_uint8).astype(np.int16)
    out = np.empty(len(frames))
    for i, frame in enumerate(frames):  # a frame at a time: [H, W, colours, 3] stays small
        nearest = np.abs(frame[:, :, None, :] - palette).max(-1).min(-1)
        out[i] = float((nearest > OFF_PALETTE_LEVELS).mean())
    return out


PLACED_SCENERY = ("goal",)
"""Scenery colours a prompt places (Balls' and Push's goal marker): the collapse check follows each as
it follows an object, since a generator that forgets a marker has lost part of the prompt's scene
(Push's checkpoints lose it in 4 of their 5 default minutes: README)."""


def tracked_palette(spec: Any) -> Palette:
    """``palette_for(spec)`` with each ``PLACED_SCENERY`` colour made an object of its own name, so the
    colour extractor follows it (a scenery colour is otherwise nobody's)."""
    pal = palette_for(spec)
    placed = [c for c, o in zip(pal.colours, pal.owner, strict=True) if o < 0 and c in PLACED_SCENERY]
    if not placed:
        return pal
    owned = [
        (name, oid, [c for c, o in zip(pal.colours, pal.owner, strict=True) if o == k])
        for k, (name, oid) in enumerate(zip(pal.objects, pal.object_ids, strict=True))
    ]
    scenery = [c for c, o in zip(pal.colours, pal.owner, strict=True) if o < 0 and c not in placed]
    return Palette.build(owned + [(c, -1, [c]) for c in placed], scenery)


def collapse_check(
    frames_uint8: np.ndarray,
    spec: Any,
    truth_uint8: np.ndarray | None = None,
    min_visible: float = 0.9,
    size_range: tuple[float, float] = (0.5, 2.0),
) -> dict:
    """Do the objects of a long generated video keep their colour and size and stay in the scene?

    Each object of the spec is found by its flat colour in every frame. It *persists* when it is
    visible in at least ``min_visible`` of the frames where the truth video shows it (every frame
    without a truth video) and, when visible, its pixel count stays within ``size_range`` times the
    truth's count in that frame (its first count without a truth video). A colour change shows as
    the object's colour vanishing, so it is caught by the same test. The markers a prompt places
    (``PLACED_SCENERY``: the goal) are followed as objects are, under their colour's name. Beside the objects it reports
    how much of each frame is no colour of the scene (``off_palette_share``: the mean, the largest
    and the last frame's share, and the truth's largest), which does not enter ``all_persist``.
    """
    palette = tracked_palette(spec)
    tracks = extract_objects(frames_uint8, palette)
    ref = extract_objects(truth_uint8, palette) if truth_uint8 is not None else None
    out = {}
    for j, name in enumerate(tracks.objects):
        shown = ref.visible[:, j] if ref is not None else np.ones(len(frames_uint8), bool)
        vis = tracks.visible[:, j] & shown
        base = (
            ref.count_px[:, j].astype(float)
            if ref is not None
            else np.full(len(vis), float(tracks.count_px[0, j]))
        )
        ratio = tracks.count_px[:, j][vis] / np.maximum(base[vis], 1.0)
        visible_fraction = float(vis.sum() / max(shown.sum(), 1))
        in_size = float(np.mean((ratio >= size_range[0]) & (ratio <= size_range[1]))) if vis.any() else 0.0
        out[name] = {
            "frames_shown_by_truth": int(shown.sum()),
            "visible_fraction": visible_fraction,
            "size_ratio_min": float(ratio.min()) if vis.any() else None,
            "size_ratio_max": float(ratio.max()) if vis.any() else None,
            "in_size_range_fraction": in_size,
            "persists": bool(
                shown.sum() == 0 or (visible_fraction >= min_visible and in_size >= min_visible)
            ),
        }
    off = off_palette_share(frames_uint8, spec)
    scenery = {"share_mean": float(off.mean()), "share_max": float(off.max()), "share_last": float(off[-1])}
    if truth_uint8 is not None:
        scenery["truth_share_max"] = float(off_palette_share(truth_uint8, spec).max())
    return {"objects": out, "all_persist": all(o["persists"] for o in out.values()), "off_palette": scenery}


def dream_report(d: Dream, spec: Any) -> dict:
    """Per-step centroid error against MuJoCo and the collapse check of a dreamed rollout."""
    err = centroid_errors(d.truth[1:], d.generated[1:], palette_for(spec))
    return {
        "caption": d.caption,
        "steps": int(len(d.actions)),
        "centroid_error": err.summary((30, 100, 600)),
        "centroid_error_curve_px": err.curves()["error_px"],
        "collapse": collapse_check(d.generated, spec, d.truth),
    }
