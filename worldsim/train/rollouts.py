"""Training on the model's own rollouts: contexts the generator made itself, targets from MuJoCo.

A model trained only on real contexts never sees its own mistakes, so at sampling time a small
error (a ball a pixel off, a little smear) puts the next input outside what it learned from, the
next error is larger, and over hundreds of frames objects drift, smear or vanish. Here a share of
each batch is a window of ``R + 1`` real steps whose first ``R`` frames are replaced by the model's
own rollout from the real context, with the real actions; the target stays the real frame ``R + 1``.
The model learns to continue from what it actually produces and to pull it back towards what the
physics does (the idea of DAgger, and of "self forcing" in video diffusion). The rollout runs the
EMA weights with their sampling settings, without gradients: what the Dream envs would sample.
With ``train.rollout_target=motion`` such a row teaches the flow only, and the move it asks of an
object is MuJoCo's move over the step (from ``last_truth``), from wherever the model's frame has
the object, rather than the jump back to MuJoCo's position (``train.loop``, README).
The reward and termination heads learn from these rows too: from a made last frame to MuJoCo's
transition, which is what they score inside a Dream env.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from worldsim.data.loader import WindowBatch
from worldsim.model.world_model import WorldModel
from worldsim.scenes import scripts_of_prompts


def concat_batches(a: WindowBatch, b: WindowBatch) -> WindowBatch:
    """``a`` then ``b``, as one batch (both must have the same context and horizon)."""
    last_truth = None
    if a.last_truth is not None or b.last_truth is not None:
        last_truth = np.concatenate([_last_truth(a), _last_truth(b)])
    return WindowBatch(
        context=np.concatenate([a.context, b.context]),
        context_mask=np.concatenate([a.context_mask, b.context_mask]),
        actions=np.concatenate([a.actions, b.actions]),
        targets=np.concatenate([a.targets, b.targets]),
        rewards=np.concatenate([a.rewards, b.rewards]),
        terminated=np.concatenate([a.terminated, b.terminated]),
        captions=[*a.captions, *b.captions],
        episode=np.concatenate([a.episode, b.episode]),
        t=np.concatenate([a.t, b.t]),
        last_truth=last_truth,
    )


def _last_truth(batch: WindowBatch) -> np.ndarray:
    """MuJoCo's frame at each row's last context position."""
    return batch.context[:, -1] if batch.last_truth is None else batch.last_truth


def not_made(batch: WindowBatch, rows: np.ndarray | slice, context: np.ndarray) -> np.ndarray | None:
    """``batch.last_truth`` for a batch whose ``rows`` got a new ``context`` that the model did not
    make (a text-to-video start, a remade context): their last context frame counts as MuJoCo's, so
    ``rollout_target=motion`` does not take them for rolled-out rows."""
    if batch.last_truth is None:
        return None
    out = batch.last_truth.copy()
    out[rows] = context[rows, -1]
    return out


def take_rows(batch: WindowBatch, rows: np.ndarray) -> WindowBatch:
    """The windows ``rows`` (indices) of ``batch``, in that order."""
    return WindowBatch(
        context=batch.context[rows],
        context_mask=batch.context_mask[rows],
        actions=batch.actions[rows],
        targets=batch.targets[rows],
        rewards=batch.rewards[rows],
        terminated=batch.terminated[rows],
        captions=[batch.captions[i] for i in rows],
        episode=batch.episode[rows],
        t=batch.t[rows],
        last_truth=None if batch.last_truth is None else batch.last_truth[rows],
    )


def dealt_to_ranks(batch_size: int, world: int) -> np.ndarray:
    """The order of a global batch's rows that gives row ``i`` to rank ``i % world`` when each rank
    takes its contiguous slice: a block of rows (the rolled-out ones, at the end) is shared evenly
    rather than falling on the last ranks."""
    return np.arange(batch_size).reshape(-1, world).T.ravel()


def shift_window(batch: WindowBatch, steps: int, frames: np.ndarray | None = None) -> WindowBatch:
    """The horizon-1 window that ends ``steps`` steps later than ``batch``'s context: its context is
    the last K frames of (``batch.context`` followed by ``frames``, ``uint8[B, steps, H, W, 3]``; the
    real ``targets[:, :steps]`` when None), its target is ``targets[:, steps]``."""
    k, horizon = batch.context.shape[1], batch.targets.shape[1]
    if not 0 <= steps < horizon:
        raise ValueError(
            f"steps must be in [0, {horizon - 1}] for a window of horizon {horizon}, got {steps}"
        )
    frames = batch.targets[:, :steps] if frames is None else frames
    mask = np.concatenate([batch.context_mask, np.ones((len(batch.t), steps), bool)], axis=1)
    return replace(
        batch,
        context=np.concatenate([batch.context, frames], axis=1)[:, -k:],
        context_mask=mask[:, -k:],
        actions=batch.actions[:, steps : steps + k],
        targets=batch.targets[:, steps : steps + 1],
        rewards=batch.rewards[:, steps : steps + 1],
        terminated=batch.terminated[:, steps : steps + 1],
        t=batch.t + steps,
    )


def with_own_rollouts(
    batch: WindowBatch,
    model: WorldModel,
    steps: int,
    rows: np.ndarray,
    noise: list[dict[str, torch.Tensor]],
    odometer_m: np.ndarray | None = None,
) -> WindowBatch:
    """``shift_window(batch, steps)`` with the model's own frames as the new context frames of the
    rows ``rows`` (bool[B]; other rows keep the real frames: under data parallelism a rank rolls
    out only its own slice), and MuJoCo's last context frame as ``last_truth``. ``noise`` holds one
    ``draw_sampling_noise`` of the whole batch per step, so the rollout of a row does not depend on which rows are rolled out with it.
    ``odometer_m`` (``train.loop.odometer_at``, every row): the distance at each window's last context
    frame, for a generator with an odometer; the rollout counts on from it over the frames it makes.
    (The shifted window is then told the dataset's distance, as it is shown MuJoCo's target.)"""
    if steps == 0 or not rows.any():
        return shift_window(batch, steps)
    idx, k = np.flatnonzero(rows), batch.context.shape[1]
    actions = torch.from_numpy(batch.actions[idx])
    with torch.no_grad():
        made = model.rollout(
            torch.from_numpy(batch.context[idx]),
            actions[:, : k - 1],
            actions[:, k - 1 : k - 1 + steps],
            [batch.captions[i] for i in idx],
            context_mask=torch.from_numpy(batch.context_mask[idx]),
            noise=[{key: v[idx] for key, v in draw.items()} for draw in noise[:steps]],
            frame_index=torch.from_numpy(batch.t[idx] + 1),
            odometer_m=None if odometer_m is None else torch.from_numpy(odometer_m[idx]),
            scripts=scripts_of_prompts([batch.captions[i] for i in idx], model.cfg.family)
            if model.cfg.script_map
            else None,
        )
    frames = batch.targets[:, :steps].copy()
    frames[idx] = made.cpu().numpy()
    # MuJoCo's frame where the new context ends: the real one the last made frame stands in for
    return replace(shift_window(batch, steps, frames), last_truth=batch.targets[:, steps - 1])
