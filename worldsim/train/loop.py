"""Training the generator, readable top to bottom: settings, setup, resume, the loop, evaluation.

``train(cfg)`` turns a dataset of rollouts into a world model. It writes, under ``cfg.out``:
``checkpoints/step_NNNNNN/`` (safetensors + JSON, atomic, the last ``keep`` kept), ``log.csv``
(one row per ``log_every`` steps, plus evaluation rows), ``config.yaml`` (the run's settings) and,
at the end, ``final/`` (the EMA weights: what ships and what the Dream envs load).

A run killed at any moment resumes from its last checkpoint when started again with the same
``out``. With ``torchrun --nproc_per_node=N`` it trains data-parallel (gloo on CPU, nccl on CUDA):
every rank draws the same global batch and the same noise and takes its slice, and gradients are
averaged, so N processes compute what one process computes with the whole batch, up to the order
of floating-point sums.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from worldsim.data.loader import Dataset, WindowBatch, WindowSampler, load_dataset, window_actions
from worldsim.model.edm import LOSSES
from worldsim.model.first_frame import fit_first_frame
from worldsim.model.heading import fit_heading
from worldsim.model.object_dynamics import dataset_tracks, describe_objects, fit_object_dynamics
from worldsim.model.odometer_dynamics import fit_dynamics, fit_linear_dynamics
from worldsim.model.odometry import OdometerConfig, odometer_m
from worldsim.model.prompt import PromptTokenizer
from worldsim.model.script_map import ScriptMapConfig
from worldsim.model.world_model import WorldModel, WorldModelConfig, to_float
from worldsim.scenes import free_path_camera, layout_camera, script_map_camera, scripts_of_prompts
from worldsim.train.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    dataset_manifest_sha256,
    latest_checkpoint,
    load_checkpoint,
    load_train_state,
    prune_checkpoints,
    save_checkpoint,
)
from worldsim.train.flow import episode_palettes, object_flow, rigid_context
from worldsim.train.rollouts import concat_batches, dealt_to_ranks, not_made, take_rows, with_own_rollouts

ROLLOUT_TARGETS = ("frame", "motion")


@dataclass
class TrainConfig:
    """Settings of one training run."""

    data: str = "data/balls"  # dataset directory (worldsim collect)
    val_data: str | None = "data/balls_val"  # held-out episodes for evaluation during training
    out: str = "runs/balls"  # run directory: checkpoints, log.csv, final/
    steps: int = 20_000  # optimizer steps
    time_budget_min: float | None = None  # stop (and save) after this many minutes of training
    batch_size: int = 32  # global batch, split across DDP ranks
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 300  # linear learning-rate warm-up steps
    cooldown: int = 0  # the last steps, over which the learning rate falls linearly to 0
    grad_clip: float = 1.0
    ema: float = 0.995  # decay of the weights' exponential moving average (what is sampled from)
    heads_weight: float = 1.0  # weight of the reward/termination losses
    frame_loss: str = "l2"  # "l2" or "pseudo_huber": the frame model's error (edm.training_loss)
    huber_c: float = 0.03  # pseudo-Huber's bend, in the network's unit-variance output scale (edm)
    flow_loss: str = "l2"  # "l2" or "pseudo_huber": a flow's error (world_model.flow_error)
    undo_context_noise: bool = False  # learn the change from the noisy last context frame (WorldModel.loss)
    predicted_warp_share: float = 0.0  # with a flow: share of rows whose change is learned on the
    # warp by the predicted field, as sampling draws it (WorldModel.loss)
    first_frame_prob: float = (
        0.05  # share of samples that learn an episode's first frame from its prompt alone
    )
    motion_share: float = 0.0  # share of each batch drawn in proportion to how many pixels move
    rollout_share: float = 0.0  # share of each batch whose context the model rolled out itself
    rollout_steps: int = 4  # those rollouts are 1..rollout_steps steps long (drawn per batch)
    rollout_target: str = "frame"  # what a rolled-out row teaches: "frame", MuJoCo's next frame (a
    # flow's move: the jump back to MuJoCo's position); "motion" (a flow only), MuJoCo's move over the
    # step from where the model's frame has each object, with no frame loss on the row (README)
    entering_share: float = 0.0  # share of each batch drawn from the windows where an object comes into
    # view: the target shows it, the last context frame does not (Drive's pedestrian: 0.2 % of windows)
    rigid_context_share: float = 0.0  # with a flow: share of rows whose context is remade as the flow
    # makes frames, objects moved whole by whole pixels (train.flow.rigid_context)
    init: str | None = None  # a checkpoint to start from (fine-tuning); its architecture is kept,
    # its training noise levels are the run's (TRAINING_NOISE_SETTINGS)
    fresh_unet: bool = False  # fine-tuning a generator with a flow: its change U-Net starts untrained,
    # at the run's model.unet widths (the warp draws the frames until it has learned; README)
    fresh_flow: bool = False  # fine-tuning a generator with a flow: its flow U-Net starts untrained at
    # the run's model.flow_channels and model.flow_unshuffle (the change U-Net keeps its weights)
    log_every: int = 50
    eval_every: int = 1000
    eval_episodes: int = 16
    eval_horizon: int = 30
    ckpt_every: int = 500
    keep: int = 2
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch threads per process; 0 = torch's default
    object_fit_steps: int = 20_000  # with model.object_dynamics: one-step fit steps (object_dynamics)
    object_fit_rollout_steps: int = 4_000  # then steps through its own rollouts of object_fit_horizon
    object_fit_horizon: int = 8
    first_frame_fit_steps: int = 3_000  # with model.first_frame_layout: steps of its fit to the first frames


@dataclass
class RunConfig:
    """What ``worldsim train`` reads: the run and the model."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)


# ---------------------------------------------------------------------------------------------
# distributed helpers


def _dist_info() -> tuple[int, int]:
    """``(rank, world_size)``, initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = (
            "nccl"
            if torch.cuda.is_available() and os.environ.get("WORLDSIM_DDP_BACKEND") != "gloo"
            else "gloo"
        )
        dist.init_process_group(backend)
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _all_reduce_grads(model: torch.nn.Module, world: int) -> None:
    """Average gradients over ranks (each rank computed the mean loss over its slice)."""
    if world == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


# ---------------------------------------------------------------------------------------------
# setup


def build_model_config(
    model_cfg: WorldModelConfig, dataset: Dataset, sampler: WindowSampler
) -> WorldModelConfig:
    """Fill what the data decides: family, frame size, the prompt vocabulary and, when the config
    leaves it at 0, the scale of the clean signal (``sigma_data``)."""
    cfg = copy.deepcopy(model_cfg)
    cfg.family = dataset.family
    cfg.height, cfg.width = dataset.frame_shape[:2]
    cfg.vocab = PromptTokenizer.from_captions(sampler.flat.captions, cfg.prompt.max_tokens).vocab
    if cfg.odometer and cfg.odometer_markings is None:
        cfg.odometer_markings = odometer_markings(dataset.family, cfg.width, cfg.height)
    if cfg.script_map and cfg.script_map_camera is None:
        cfg.script_map_camera = ScriptMapConfig(**script_map_camera(dataset.family, cfg.width, cfg.height))
    if cfg.first_frame_layout:
        cfg.script_map_camera = cfg.script_map_camera or prompt_camera(
            "first_frame_layout", dataset.family, cfg
        )
    if cfg.object_start_path:
        cfg.script_map_camera = cfg.script_map_camera or prompt_camera(
            "object_start_path", dataset.family, cfg
        )
    if cfg.object_dynamics:
        cfg.object_max, cfg.object_properties = object_counts(dataset)
    if cfg.edm.sigma_data <= 0:  # measure the clean signal's scale on the data
        probe = sampler.sample(512, np.random.default_rng(12345))
        target = to_float(torch.from_numpy(probe.targets[:, 0]))
        if cfg.target == "delta":
            target = target - to_float(torch.from_numpy(probe.context[:, -1]))
        cfg.edm.sigma_data = float(target.std())
    return cfg


_PROMPT_CAMERAS = {
    "first_frame_layout": (layout_camera, "draws a first frame over the prompt's layout"),
    "object_start_path": (free_path_camera, "goes back along the prompts' free paths"),
}


def prompt_camera(setting: str, family: str, cfg: WorldModelConfig) -> ScriptMapConfig:
    """The scene camera a generator's ``model.<setting>`` draws the prompt through (the layout of a
    first frame, the free paths before the start), for a family whose prompts give it, else a
    ``ValueError`` naming the setting."""
    camera_of, what = _PROMPT_CAMERAS[setting]
    try:
        return ScriptMapConfig(**camera_of(family, cfg.width, cfg.height))
    except ValueError as e:
        raise ValueError(f"model.{setting}=true {what}: {e}") from e


def object_counts(dataset: Dataset) -> tuple[int, int]:
    """The most objects a prompt of ``dataset`` names, and the properties its family gives each: what
    object dynamics read (``WorldModelConfig.object_max``, ``object_properties``)."""
    from worldsim.scenes import family_of

    specs = [dataset.episode(i).spec for i in range(len(dataset))]
    fam = family_of(dataset.family)
    widest = max(specs, key=lambda s: len(fam.objects(s)))
    count = len(fam.objects(widest))
    return count, describe_objects(widest, count).properties.shape[1]  # refuses a family without


# The model settings a fine-tuning takes from its own run rather than from its checkpoint: where the
# training noise levels fall. ``sigma_data``, the signal scale of the preconditioning, stays the
# checkpoint's, as does everything else.
TRAINING_NOISE_SETTINGS = ("p_mean", "p_std", "sigma_max_prob")


# What fine-tuning may add to a checkpoint's generator. The generator still starts as the function it
# was: the clock input starts at zero, the flow's head too (no motion: the warp is the identity), the
# U-Net's weights on the warped frame (its last input channels) are zero, and so are the flow's
# weights on the colours' moves (its last input channels) and how much of them it carries. Odometer
# dynamics are fitted before the run (``fit_odometer_dynamics``): the next-frame function is the
# checkpoint's, and only how a rollout counts its distance changes. So are a heading's
# (``fit_heading_dynamics``), and its input starts at zero, and a first-frame net
# (``model.first_frame_layout``), which only text to video reads.
ADDED_BY_FINE_TUNING = (
    "clock_in.",
    "odometer_in.",
    "speed_in.",
    "odometer_dynamics.",
    "object_dynamics.",
    "first_frame.",
    "heading_in.",
    "heading_dynamics.",
    "flow_net.",
    "flow_carry",
)
STEM = "unet.stem.weight"
FLOW_STEM = "flow_net.stem.weight"


def _with_zero_inputs(state: dict, own: dict, name: str) -> None:
    """Give ``state[name]``, a first layer, zero weights on the input channels ``own[name]`` has
    beyond it (inputs are added last, so the old ones keep their places)."""
    extra = own[name].shape[1] - state[name].shape[1]
    state[name] = torch.cat([state[name], own[name][:, -extra:].new_zeros(own[name][:, -extra:].shape)], 1)


def _with_longer_context(state: dict, own: dict, was: int, cfg: WorldModelConfig) -> None:
    """Give a checkpoint's weights that read a context of ``was`` frames the shapes of ``own``'s,
    which read ``cfg.context``: the old weights read the last ``was`` frames (and their differences,
    actions and mask bits) of the longer context, and the frames before them get zero weights, so
    the generator starts as the function it was and learns what the older frames add. The odometer's
    dynamics read the context's actions too: they are dropped, to be fitted again (``fit_odometer_dynamics``),
    and so are a heading's."""
    k, more, u2 = cfg.context, cfg.context - was, cfg.unet.unshuffle**2
    stem, w = own[STEM].new_zeros(own[STEM].shape), state[STEM]

    def put(new_channel: int, old_channel: int, count: int) -> None:
        stem[:, new_channel * u2 : (new_channel + count) * u2] = w[
            :, old_channel * u2 : (old_channel + count) * u2
        ]

    put(0, 0, 3)  # the noisy change
    put(3 + 3 * more, 3, 3 * was)  # the frames: the old ones are the last of the longer context
    done_old, done_new = 3 + 3 * was, 3 + 3 * k
    if cfg.context_differences:
        put(done_new + 3 * more, done_old, 3 * (was - 1))
        done_old, done_new = done_old + 3 * (was - 1), done_new + 3 * (k - 1)
    put(done_new, done_old, w.shape[1] // u2 - done_old)  # the inputs after the context (the map)
    state[STEM] = stem
    name, a = "cond_mlp.0.weight", cfg.action_dim
    lin, w = own[name].new_zeros(own[name].shape), state[name]
    head = w.shape[1] - was * a - was  # noise levels and the prompt, then actions, then the mask
    lin[:, :head] = w[:, :head]
    lin[:, head + more * a : head + k * a] = w[:, head : head + was * a]
    lin[:, head + k * a + more :] = w[:, head + was * a :]
    state[name] = lin
    for key in [key for key in state if key.startswith(("odometer_dynamics.", "heading_dynamics."))]:
        del state[key]


def load_init(
    init: Checkpoint, model: WorldModel, fresh_unet: bool = False, fresh_flow: bool = False
) -> None:
    """The checkpoint a fine-tuning starts from, into ``model``: every weight must fit, except what
    ``ADDED_BY_FINE_TUNING`` names, which keeps its initial weights, the U-Net's first layer,
    which gains zero weights on the warped frame when a flow is added, and a lengthened context
    (``_with_longer_context``). With ``fresh_unet`` the
    change U-Net keeps its initial weights too (its head is zero: the generator starts as the warp);
    with ``fresh_flow`` the flow U-Net does (its head is zero: no move until it has learned)."""
    state, own = dict(init.state_dict), model.state_dict()
    fresh = (("unet.",) if fresh_unet else ()) + (("flow_net.",) if fresh_flow else ())
    state = {k: v for k, v in state.items() if not k.startswith(fresh)} if fresh else state
    was = int(init.config.get("context", model.cfg.context))
    if was != model.cfg.context:
        _with_longer_context(state, own, was, model.cfg)
    if init.config.get("odometer_dynamics_form", "network") != model.cfg.odometer_dynamics_form:
        state = {k: v for k, v in state.items() if not k.startswith("odometer_dynamics.")}  # refitted
    adds_flow = "flow_net.head.weight" in own and "flow_net.head.weight" not in state
    if adds_flow and init.config.get("script_map", False):
        # the warped frame's channels come before the map's: appended zeros would land on the map
        raise ValueError(
            f"{init.path} has a script map; adding a flow to it is not supported (train the flow first, "
            "then add the map)"
        )
    if adds_flow and STEM in state and state[STEM].shape[1] < own[STEM].shape[1]:
        _with_zero_inputs(state, own, STEM)
    adds_map = model.cfg.script_map and not init.config.get("script_map", False)
    if adds_map and STEM in state and state[STEM].shape[1] < own[STEM].shape[1]:
        _with_zero_inputs(state, own, STEM)  # the map's channels come last: zero weights on them
    adds_moves = "flow_carry" in own and "flow_carry" not in state
    if adds_moves and FLOW_STEM in state and state[FLOW_STEM].shape[1] < own[FLOW_STEM].shape[1]:
        _with_zero_inputs(state, own, FLOW_STEM)
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    added = ADDED_BY_FINE_TUNING + fresh
    only_added = bool(missing) and not unexpected and all(k.startswith(added) for k in missing)
    replace(init, state_dict=state).load_into(model, strict=not only_added)  # anything else raises


def with_first_frames(
    batch: Any, sampler: WindowSampler, empty_frame: np.ndarray, prob: float, rng: np.random.Generator
) -> Any:
    """Turn a share ``prob`` of the windows into text-to-video samples: an empty context (the mean
    frame, masked out), zero actions, and an episode's first frame as the target."""
    pick = rng.random(len(batch.captions)) < prob
    if not pick.any():
        return batch
    flat = sampler.flat
    episodes = rng.integers(0, len(flat.steps), int(pick.sum()))
    context, mask, actions = batch.context.copy(), batch.context_mask.copy(), batch.actions.copy()
    t = batch.t.copy()
    targets, rewards, terminated = batch.targets.copy(), batch.rewards.copy(), batch.terminated.copy()
    captions = list(batch.captions)
    context[pick] = empty_frame
    mask[pick] = False
    actions[pick] = 0.0
    targets[pick, 0] = flat.frames[flat.frame_start[episodes]]
    rewards[pick] = 0.0  # the heads do not learn from these samples' transitions (see compute_losses)
    terminated[pick] = False
    t[pick] = -1  # the target is frame 0
    for j, i in enumerate(np.flatnonzero(pick)):
        captions[i] = flat.captions[episodes[j]]
    return replace(
        batch,
        last_truth=not_made(batch, pick, context),
        context=context,
        context_mask=mask,
        actions=actions,
        targets=targets,
        rewards=rewards,
        terminated=terminated,
        captions=captions,
        t=t,
    )


def with_rigid_contexts(batch: Any, rows: int, dataset: Dataset) -> Any:
    """The first ``rows`` windows of ``batch`` with their contexts remade as a flow makes frames
    (``worldsim.train.flow.rigid_context``); windows at an episode's start (a padded context) and
    text-to-video windows keep theirs."""
    whole = batch.context_mask[:rows].all(1)
    palettes = episode_palettes(dataset, batch.episode[:rows], whole)
    context = batch.context.copy()
    context[:rows] = rigid_context(batch.context[:rows], palettes)
    # remade, not rolled out: these rows learn the jump and their frame
    return replace(batch, context=context, last_truth=not_made(batch, slice(0, rows), context))


def odometer_markings(family: str, width: int, height: int) -> OdometerConfig:
    """The road markings a generator's odometer reads in ``family``'s frames; a clear error for a
    scene whose camera does not travel."""
    if family != "drive":
        raise ValueError(
            f"model.odometer reads how far a following camera has travelled off the road's markings; "
            f"{family!r} has a fixed camera (only drive's follows its car)"
        )
    from worldsim.scenes.drive import road_markings

    return OdometerConfig(**road_markings(width, height))


def flat_odometer(flat: Any, markings: OdometerConfig) -> np.ndarray:
    """The distance travelled at every frame of every episode of a sampler's flat arrays,
    ``float32[frames]`` (0 at each episode's first frame), as a generator's odometer counts it."""
    out = np.zeros(len(flat.frames), np.float32)
    for f0, t in zip(flat.frame_start, flat.steps, strict=True):
        frames = torch.from_numpy(flat.frames[f0 : f0 + t + 1])
        out[f0 : f0 + t + 1] = odometer_m(frames, markings).numpy()
    return out


def _episode_states(dataset: Dataset, name: str, needed_by: str) -> list[np.ndarray]:
    """The state ``name`` of every episode of ``dataset`` in order, or a clear error naming what
    ``needed_by`` it when the dataset does not record it."""
    out = []
    for i in range(len(dataset)):
        states = dataset.episode(i).states
        if name not in states:
            raise ValueError(
                f"{needed_by}, the state {name}, which {dataset.root} does not record (its states: "
                f"{sorted(states)})"
            )
        out.append(states[name])
    return out


def flat_heading(dataset: Dataset) -> np.ndarray:
    """The ego car's heading (rad) at every frame of every episode of ``dataset``, in the order of its
    flat arrays, ``float32[frames]``: what a generator with ``heading`` is told in training."""
    yaw = _episode_states(dataset, "ego_yaw_rad", "model.heading tells a generator the ego car's heading")
    return np.concatenate(yaw).astype(np.float32)


def flat_travel(dataset: Dataset) -> np.ndarray:
    """How far the ego car has travelled along x since its episode's first frame, at every frame of
    ``dataset`` in the order of its flat arrays, ``float32[frames]``: what linear odometer dynamics
    learn a rolling car's law from (the camera follows the car along x). The frames' readings are
    within a row of pixels (0.06 m) a step, and a least-squares law fitted to readings that noisy
    takes part of the noise for a pull towards the mean speed."""
    positions = _episode_states(
        dataset,
        "ego_pos_m",
        "linear odometer dynamics learn from the ego car's travel (model.odometer_dynamics_form=network "
        "learns from the frames' readings)",
    )
    return np.concatenate([p[:, 0] - p[0, 0] for p in positions]).astype(np.float32)


def flat_ego(flat: Any, dataset: Dataset, cfg: WorldModelConfig) -> np.ndarray | None:
    """What ``odometer_at`` reads for a generator with an odometer: ``flat_odometer``, and with
    ``heading`` the heading beside it, ``float32[frames, 2]``; None for a generator without one."""
    if not cfg.odometer:
        return None
    distance = flat_odometer(flat, cfg.odometer_markings)
    return np.stack([distance, flat_heading(dataset)], axis=1) if cfg.heading else distance


def odometer_at(
    odometer: np.ndarray, flat: Any, episode: np.ndarray, t: np.ndarray, trail: int = 0
) -> np.ndarray:
    """``flat_odometer`` at frame ``t`` of each ``episode`` (0 where ``t`` is before the first frame:
    a text-to-video row); with ``trail=M``, at frames ``t-M+1 .. t``, ``float32[B, M]``, NaN before
    the first frame (the text-to-video row's last is 0). A ``flat_ego`` with a heading gives ``[B, M,
    2]``."""

    def seen(frames: np.ndarray) -> np.ndarray:  # frames at or after the first, shaped to broadcast
        return (frames >= 0).reshape(*frames.shape, *([1] * (odometer.ndim - 1)))

    if not trail:
        where = flat.frame_start[episode] + np.maximum(t, 0)
        return np.where(seen(t), odometer[where], 0.0).astype(np.float32)
    frames = t[:, None] - np.arange(trail - 1, -1, -1)[None]
    where = flat.frame_start[episode][:, None] + np.maximum(frames, 0)
    out = np.where(seen(frames), odometer[where], np.nan).astype(np.float32)
    out[t < 0, -1] = 0.0
    return out


def init_has_dynamics(init: Checkpoint | None, context: int, form: str) -> bool:
    """Whether a fine-tuning's checkpoint brings odometer dynamics the run keeps: its own, read off a
    context of the run's length and of the run's form (a lengthened context or another form refits
    them)."""
    return (
        init is not None
        and bool(init.config.get("odometer_dynamics", False))
        and init.config.get("context") == context
        and init.config.get("odometer_dynamics_form", "network") == form
    )


def dynamics_windows(
    odometer: np.ndarray, flat: Any, trail: int, context: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every window of a sampler's flat arrays with a known step and a next frame, as odometer
    dynamics learn from it (``worldsim.model.odometer_dynamics``): ``(trail[N, M], actions[N, K, A],
    next_step[N])``, the trail and the actions as the generator is given them (``odometer_at``,
    ``window_actions``), the step the distance from the last context frame to the next."""
    per_episode = np.maximum(flat.steps - 1, 0)  # last context frames 1 .. T-1
    episode = np.repeat(np.arange(len(flat.steps)), per_episode)
    t = np.concatenate([np.arange(1, n) for n in flat.steps]).astype(np.int64)
    trails = odometer_at(odometer, flat, episode, t, trail)
    actions = window_actions(flat, episode, t[:, None] + np.arange(-context + 1, 1))
    step = odometer_at(odometer, flat, episode, t + 1) - odometer_at(odometer, flat, episode, t)
    return torch.from_numpy(trails), torch.from_numpy(actions), torch.from_numpy(step)


def init_has_heading(init: Checkpoint | None, context: int) -> bool:
    """Whether a fine-tuning's checkpoint brings heading dynamics the run keeps (as ``init_has_dynamics``)."""
    return (
        init is not None and bool(init.config.get("heading", False)) and init.config.get("context") == context
    )


def heading_windows(
    ego: np.ndarray, flat: Any, trail: int, context: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every window of a sampler's flat arrays with a next frame, as heading dynamics learn from it
    (``worldsim.model.heading``): ``(trail[N, M, 2], step_m[N], actions[N, K, A], turn[N])``, the
    trail (``flat_ego`` with a heading) and the actions as the generator is given them, the
    distance to the next frame and the heading's change to it."""
    episode = np.repeat(np.arange(len(flat.steps)), flat.steps)  # last context frames 0 .. T-1
    t = np.concatenate([np.arange(n) for n in flat.steps]).astype(np.int64)
    trails = odometer_at(ego, flat, episode, t, trail)
    actions = window_actions(flat, episode, t[:, None] + np.arange(-context + 1, 1))
    change = odometer_at(ego, flat, episode, t + 1) - odometer_at(ego, flat, episode, t)
    return (
        torch.from_numpy(trails),
        torch.from_numpy(change[:, 0].copy()),
        torch.from_numpy(actions),
        torch.from_numpy(change[:, 1].copy()),
    )


def _fitted_on_cpu(module: torch.nn.Module, fit: Any, windows: tuple, seed: int) -> dict[str, float]:
    """``fit(module, *windows, seed=seed)`` on the CPU (the windows are there), the module then
    returned to its device; the fit's held-out figures."""
    device = next(module.parameters()).device
    fitted = fit(module.cpu(), *windows, seed=seed)
    module.to(device)
    return fitted


def fit_heading_dynamics(model: WorldModel, ego: np.ndarray, flat: Any, seed: int) -> dict[str, float]:
    """Fit ``model``'s heading dynamics to the dataset's yaw, its odometer readings (``ego``, the
    ``flat_ego`` of a generator with a heading) and the actions taken (``worldsim.model.heading``);
    its held-out figures."""
    cfg = model.cfg
    windows = heading_windows(ego, flat, cfg.odometer_trail, cfg.context)
    return _fitted_on_cpu(model.heading_dynamics, fit_heading, windows, seed)


def fit_odometer_dynamics(
    model: WorldModel, odometer: np.ndarray, flat: Any, seed: int, dataset: Dataset
) -> dict[str, float]:
    """Fit ``model``'s odometer dynamics and return their held-out figures
    (``worldsim.model.odometer_dynamics``): the linear law to the ego car's travel in ``dataset``
    (``flat_travel``), the network to the distances its odometer reads off every frame (``odometer``,
    ``flat_odometer``), each with the actions taken."""
    cfg = model.cfg
    if cfg.odometer_dynamics_form == "linear":
        windows = dynamics_windows(flat_travel(dataset), flat, cfg.odometer_trail, cfg.context)
        return _fitted_on_cpu(model.odometer_dynamics, fit_linear_dynamics, windows, seed)
    windows = dynamics_windows(odometer, flat, cfg.odometer_trail, cfg.context)
    return _fitted_on_cpu(model.odometer_dynamics, fit_dynamics, windows, seed)


def mean_frame(sampler: WindowSampler, n: int = 2048, seed: int = 7) -> np.ndarray:
    """The average frame of the dataset, ``uint8[H,W,3]``: the text-to-video starting point."""
    frames = sampler.flat.frames
    idx = np.random.default_rng(seed).integers(0, len(frames), min(n, len(frames)))
    return np.round(frames[idx].astype(np.float64).mean(0)).astype(np.uint8)


def _slice(
    batch: Any,
    lo: int,
    hi: int,
    flow_from: Dataset | None = None,
    rollout_target: str = "frame",
    odometer_m: np.ndarray | None = None,
) -> dict[str, Any]:
    """Rows ``lo:hi`` of a batch as tensors; with ``flow_from`` (the dataset, for its episodes' palettes)
    also the motion field a generator's flow learns (``worldsim.train.flow``). With
    ``rollout_target="motion"``, rows whose last context frame the model made (it differs from
    ``batch.last_truth``) learn MuJoCo's move over the step, from where that frame has each object,
    and are marked to teach the flow only (``frame_rows``); ``frame_scale`` (the batch's rows over
    the rows that keep their frame, counted over the whole global batch) makes each slice's frame
    loss a share of the mean over every kept row, so data-parallel ranks average to what one process
    computes. ``odometer_m`` (float32[B], ``odometer_at``): each row's distance travelled at its last
    context frame, for a generator with an odometer."""
    flow = {}
    if flow_from is not None:
        real = batch.context_mask[lo:hi, -1]  # text-to-video rows have no motion to learn
        palettes = episode_palettes(flow_from, batch.episode[lo:hi], real)
        last = batch.context[lo:hi, -1]
        moved_from = None
        if rollout_target == "motion" and batch.last_truth is not None:
            moved_from = batch.last_truth[lo:hi]
            made = (batch.last_truth != batch.context[:, -1]).any((1, 2, 3))
            flow["frame_rows"] = torch.from_numpy(~made[lo:hi])
            flow["frame_scale"] = len(made) / max(int((~made).sum()), 1)
        target, weight = object_flow(last, batch.targets[lo:hi, 0], palettes, moved_from)
        flow |= {"flow_target": torch.from_numpy(target), "flow_weight": torch.from_numpy(weight)}
    return {
        **flow,
        "context": torch.from_numpy(batch.context[lo:hi]),
        "actions": torch.from_numpy(batch.actions[lo:hi]),
        "target": torch.from_numpy(batch.targets[lo:hi, 0]),
        "mask": torch.from_numpy(batch.context_mask[lo:hi]),
        "captions": batch.captions[lo:hi],
        "reward": torch.from_numpy(batch.rewards[lo:hi, 0]),
        "terminated": torch.from_numpy(batch.terminated[lo:hi, 0]),
        "has_transition": torch.from_numpy(batch.context_mask[lo:hi, -1]),
        "frame_index": torch.from_numpy(batch.t[lo:hi] + 1),
        **({} if odometer_m is None else {"odometer_m": torch.from_numpy(odometer_m[lo:hi])}),
    }


def compute_losses(
    model: WorldModel,
    b: dict[str, Any],
    noise: dict[str, torch.Tensor],
    kind: str = "l2",
    huber_c: float = 0.03,
    undo_context_noise: bool = False,
    predicted_warp_share: float = 0.0,
    flow_kind: str = "l2",
) -> dict[str, torch.Tensor]:
    """Frame loss of the generator and the heads' losses on one batch slice; ``kind``, ``huber_c``,
    ``undo_context_noise``, ``predicted_warp_share`` and ``flow_kind`` as ``WorldModel.loss`` takes
    them."""
    device = next(model.parameters()).device
    prompt = model.encode_prompts(b["captions"])  # once: the frame loss trains it, the heads read it
    frame = model.loss(
        b["context"].to(device),
        b["actions"].to(device),
        b["target"].to(device),
        b["captions"],
        b["mask"].to(device),
        noise=noise,
        prompt=prompt,
        kind=kind,
        huber_c=huber_c,
        undo_context_noise=undo_context_noise,
        frame_index=b["frame_index"].to(device),
        odometer_m=b["odometer_m"].to(device) if "odometer_m" in b else None,
        scripts=scripts_of_prompts(b["captions"], model.cfg.family) if model.cfg.script_map else None,
        flow_target=b.get("flow_target"),
        flow_weight=b.get("flow_weight"),
        predicted_warp_share=predicted_warp_share,
        flow_kind=flow_kind,
        frame_rows=b.get("frame_rows"),
        frame_scale=b.get("frame_scale", 1.0),
    )
    real = b["has_transition"].to(device)  # text-to-video samples have no transition to score
    if not real.any():
        zero = frame * 0.0
        return {"frame": frame, "reward": zero, "termination": zero}
    prompt = prompt.detach()
    reward, term = model.heads.loss(
        to_float(b["context"][:, -1].to(device))[real],
        b["actions"][:, -1].to(device)[real],
        to_float(b["target"].to(device))[real],
        model.prompt_embedding(prompt)[real],
        b["reward"].to(device)[real],
        b["terminated"].to(device)[real],
    )
    return {"frame": frame, "reward": reward, "termination": term}


# ---------------------------------------------------------------------------------------------
# the run


def train(run: RunConfig) -> Path:
    """Train (or resume) a generator; returns the directory of the final EMA checkpoint."""
    cfg = run.train
    rank, world = _dist_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} DDP ranks")
    check_settings(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    # ---- the run to resume, or the checkpoint to start from, decides the architecture ---------------
    dataset = load_dataset(cfg.data)
    val = load_dataset(cfg.val_data) if cfg.val_data else None
    resume = latest_checkpoint(out)
    init = None if resume is not None or not cfg.init else load_checkpoint(cfg.init, family=dataset.family)
    model_cfg = None
    if resume is not None:
        ckpt = load_checkpoint(resume, family=dataset.family)
        started_from = ckpt.metadata.get("train", {}).get("init")
        if cfg.init and cfg.init != started_from:
            raise ValueError(
                f"{out} holds a run started from {started_from or 'scratch'}, not from train.init={cfg.init}; "
                "a fine-tuning run needs a train.out of its own"
            )
        model_cfg = WorldModelConfig.from_dict(ckpt.config)
    elif init is not None:
        model_cfg = WorldModelConfig.from_dict(init.config)
        if run.model.clock_frames not in (0, model_cfg.clock_frames):
            if model_cfg.clock_frames:
                raise ValueError(
                    f"{cfg.init} has a clock of {model_cfg.clock_frames} frames; fine-tuning keeps it "
                    f"(model.clock_frames={run.model.clock_frames} asks for another)"
                )
            model_cfg.clock_frames = run.model.clock_frames  # fine-tuning may add a clock
        if cfg.fresh_flow:
            if not model_cfg.flow_channels:
                raise ValueError(
                    f"train.fresh_flow restarts the flow of a generator that has one; {cfg.init} has none "
                    "(add one with model.flow_channels)"
                )
            # a new flow U-Net, trained from scratch: the run's widths (or the old ones) and grid
            model_cfg.flow_channels = list(run.model.flow_channels or model_cfg.flow_channels)
            model_cfg.flow_unshuffle = run.model.flow_unshuffle
        asked = (list(run.model.flow_channels), run.model.flow_grid)
        has = (list(model_cfg.flow_channels), model_cfg.flow_grid)
        if run.model.flow_channels and asked != has:
            if model_cfg.flow_channels:
                raise ValueError(
                    f"{cfg.init} has a flow of widths {has[0]} on a grid unshuffled {has[1]}x; fine-tuning "
                    f"keeps it (model.flow_channels and model.flow_unshuffle ask for {asked[0]}, {asked[1]}x; "
                    "train.fresh_flow=true starts a new one)"
                )
            model_cfg.flow_channels = list(run.model.flow_channels)  # and a flow
            model_cfg.flow_unshuffle = run.model.flow_unshuffle
        if cfg.fresh_unet:
            if not model_cfg.flow_channels:
                raise ValueError(
                    f"train.fresh_unet needs a checkpoint with a flow to draw frames while the new U-Net "
                    f"learns; {cfg.init} has none"
                )
            # the flow keeps its grid (an unset flow unshuffle is the old U-Net's)
            model_cfg.flow_unshuffle = model_cfg.flow_grid
            model_cfg.unet = copy.deepcopy(run.model.unet)  # the run's widths, trained from scratch
        if run.model.flow_motion and not model_cfg.flow_motion:
            if not model_cfg.flow_channels:
                raise ValueError(
                    f"model.flow_motion hands a flow the context's moves; {cfg.init} has no flow "
                    "(add one with model.flow_channels)"
                )
            model_cfg.flow_motion = True  # and hand the flow the moves
            model_cfg.flow_carry_fixed = run.model.flow_carry_fixed  # learned from zero, or fixed
        elif run.model.flow_carry_fixed not in (None, model_cfg.flow_carry_fixed):
            if not model_cfg.flow_motion:
                raise ValueError(
                    "model.flow_carry_fixed fixes the carry of a flow told the moves: add model.flow_motion=true"
                )
            was = (
                "learned" if model_cfg.flow_carry_fixed is None else f"fixed at {model_cfg.flow_carry_fixed}"
            )
            raise ValueError(
                f"{cfg.init}'s flow reads the moves with a carry {was}; fine-tuning keeps it "
                f"(model.flow_carry_fixed={run.model.flow_carry_fixed} asks for another)"
            )
        if run.model.odometer and not model_cfg.odometer:
            model_cfg.odometer = True  # fine-tuning may add an odometer (its input starts at zero)
            model_cfg.odometer_markings = run.model.odometer_markings or odometer_markings(
                dataset.family, model_cfg.width, model_cfg.height
            )
        if run.model.odometer_trail and run.model.odometer_trail != model_cfg.odometer_trail:
            if model_cfg.odometer_trail:
                raise ValueError(
                    f"{cfg.init} reads a trail of {model_cfg.odometer_trail} distances; fine-tuning keeps it "
                    f"(model.odometer_trail={run.model.odometer_trail} asks for another)"
                )
            model_cfg.odometer_trail = run.model.odometer_trail  # its input starts at zero
        if run.model.context > model_cfg.context:
            if model_cfg.flow_channels:
                raise ValueError(
                    f"{cfg.init} has a flow, which reads the context too; lengthening its context "
                    f"(model.context={run.model.context}, it reads {model_cfg.context}) is not supported"
                )
            model_cfg.context = run.model.context  # the older frames' weights start at zero
        if run.model.odometer_dynamics:
            # fitted before the run in the run's form (the frame model is unchanged); dynamics the
            # checkpoint has in that form are kept, in another form refitted
            model_cfg.odometer_dynamics = True
            model_cfg.odometer_dynamics_form = run.model.odometer_dynamics_form
        if run.model.object_dynamics and not model_cfg.object_dynamics:
            # fitted before the run (the frame model is unchanged); a checkpoint's own are kept
            model_cfg.object_dynamics = True
            model_cfg.object_dynamics_width = run.model.object_dynamics_width
            model_cfg.object_max, model_cfg.object_properties = object_counts(dataset)
        if run.model.first_frame_layout and not model_cfg.first_frame_layout:
            # fitted before the run (the frame model is unchanged); a checkpoint's own is kept
            model_cfg.first_frame_layout = True
            model_cfg.first_frame_channels = list(run.model.first_frame_channels)
            model_cfg.script_map_camera = model_cfg.script_map_camera or prompt_camera(
                "first_frame_layout", dataset.family, model_cfg
            )
        elif (
            run.model.first_frame_layout
            and list(run.model.first_frame_channels) != model_cfg.first_frame_channels
        ):  # asked for again, with other widths
            raise ValueError(
                f"{cfg.init} draws its first frames with a net of widths {model_cfg.first_frame_channels}; "
                f"fine-tuning keeps it (model.first_frame_channels={list(run.model.first_frame_channels)} "
                "asks for another)"
            )
        if run.model.heading and not model_cfg.heading:
            model_cfg.heading = True  # its dynamics fitted before the run, its input starting at zero
        if run.model.script_map and not model_cfg.script_map:
            # fine-tuning may add a script map (the U-Net's weights on it start at zero)
            model_cfg.script_map = True
            model_cfg.script_map_camera = run.model.script_map_camera or ScriptMapConfig(
                **script_map_camera(dataset.family, model_cfg.width, model_cfg.height)
            )
        if run.model.flow_dither and model_cfg.flow_channels:
            model_cfg.flow_dither = True  # and dither a flow's moves (no weights change)
        if run.model.flow_still_colours:  # no weights; a generator without a flow refuses them
            model_cfg.flow_still_colours = [list(c) for c in run.model.flow_still_colours]
        if run.model.object_start_path:  # no weights; a generator without dynamics refuses it
            model_cfg.object_start_path = True
            model_cfg.script_map_camera = model_cfg.script_map_camera or prompt_camera(
                "object_start_path", dataset.family, model_cfg
            )
        # The noise levels training draws are a training setting, not the architecture: the run's own.
        for name in TRAINING_NOISE_SETTINGS:
            was, now = getattr(model_cfg.edm, name), getattr(run.model.edm, name)
            if was != now and rank == 0:
                print(
                    f"fine-tuning with model.edm.{name}={now} ({cfg.init} was trained with {was})", flush=True
                )
            setattr(model_cfg.edm, name, now)
    context = model_cfg.context if model_cfg is not None else run.model.context
    if not (model_cfg or run.model).flow_channels:  # settings that only a flow gives a meaning
        for name, asked in (
            ("predicted_warp_share", cfg.predicted_warp_share > 0),
            ("flow_loss", cfg.flow_loss != "l2"),
            ("rigid_context_share", cfg.rigid_context_share > 0),
            ("rollout_target", cfg.rollout_target != "frame"),
        ):
            if asked:
                raise ValueError(
                    f"train.{name}={getattr(cfg, name)} needs a generator with a flow (model.flow_channels)"
                )
    elif cfg.undo_context_noise:  # the warp finds regions by flat colour, which the noise breaks
        raise ValueError(
            "train.undo_context_noise is for generators without a flow: the warp would find its regions "
            "and still scenery in the noisy last frame"
        )

    # ---- data ------------------------------------------------------------------------------------
    sampler = WindowSampler(dataset, context, motion_share=cfg.motion_share)
    # per rollout length h, windows with a real frame after the h generated ones
    rollout_samplers = {
        h: WindowSampler(dataset, context, horizon=h + 1, motion_share=cfg.motion_share)
        for h in range(1, cfg.rollout_steps + 1)
        if cfg.rollout_share > 0
    }
    if model_cfg is None:
        model_cfg = build_model_config(run.model, dataset, sampler)
    if (model_cfg.height, model_cfg.width) != dataset.frame_shape[:2]:
        raise ValueError(
            f"the generator makes {model_cfg.height}x{model_cfg.width} frames, the dataset {cfg.data} "
            f"holds {dataset.frame_shape[0]}x{dataset.frame_shape[1]}"
        )
    model = WorldModel(model_cfg).to(device)
    if init is not None:
        load_init(init, model, cfg.fresh_unet, cfg.fresh_flow)
    elif resume is None:
        model.empty_frame.copy_(torch.from_numpy(mean_frame(sampler)))
    # the odometer's readings (and the heading) of every frame: read once, for the fits and the windows
    odometer = flat_ego(sampler.flat, dataset, model_cfg)
    if (
        resume is None
        and model_cfg.odometer_dynamics
        and not init_has_dynamics(init, model_cfg.context, model_cfg.odometer_dynamics_form)
    ):
        distances = odometer[:, 0] if model_cfg.heading else odometer
        fitted = fit_odometer_dynamics(model, distances, sampler.flat, cfg.seed, dataset)
        if rank == 0:
            print(f"odometer dynamics fitted: {json.dumps(fitted)}", flush=True)
            (out / "odometer_dynamics.json").write_text(json.dumps(fitted, indent=2))
    if resume is None and model_cfg.heading and not init_has_heading(init, model_cfg.context):
        fitted = fit_heading_dynamics(model, odometer, sampler.flat, cfg.seed)
        if rank == 0:
            print(f"heading dynamics fitted: {json.dumps(fitted)}", flush=True)
            (out / "heading_dynamics.json").write_text(json.dumps(fitted, indent=2))
    if resume is None and model_cfg.object_dynamics and not (init and init.config.get("object_dynamics")):
        tracks = dataset_tracks(dataset, model_cfg.object_max)
        fit_settings = (cfg.object_fit_steps, cfg.object_fit_rollout_steps, cfg.object_fit_horizon)
        fitted = _fitted_on_cpu(model.object_dynamics, fit_object_dynamics, (tracks, *fit_settings), cfg.seed)
        if rank == 0:
            print(f"object dynamics fitted: {json.dumps(fitted)}", flush=True)
            (out / "object_dynamics.json").write_text(json.dumps(fitted, indent=2))
    if (
        resume is None
        and model_cfg.first_frame_layout
        and not (init and init.config.get("first_frame_layout"))
    ):
        flat = sampler.flat
        first = (
            model.tokenizer,
            model.empty_frame.cpu().numpy(),
            flat.frames[flat.frame_start],
            list(flat.captions),
            dataset.family,
            model_cfg.script_map_camera,
            cfg.first_frame_fit_steps,
        )
        fit = partial(fit_first_frame, progress=rank == 0)
        fitted = _fitted_on_cpu(model.first_frame, fit, first, cfg.seed)
        if rank == 0:
            print(f"first frame fitted: {json.dumps(fitted)}", flush=True)
            (out / "first_frame.json").write_text(json.dumps(fitted, indent=2))
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch_rng = np.random.default_rng(cfg.seed)  # identical on every rank: all draw the same global batch
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)  # shared too: each rank slices one draw
    step = 0
    if resume is not None:
        ckpt.load_into(ema)
        state = load_train_state(resume, optimizer, generators={"batch": batch_rng, "noise": noise_gen})
        model.load_state_dict({k: v.to(device) for k, v in state.extra["weights"].items()})
        step = state.step
        if rank == 0:
            print(f"resumed from {resume} at step {step}", flush=True)
    elif world > 1:  # every rank starts from rank 0's initial weights
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, 0)
        ema.load_state_dict(model.state_dict())

    meta = {
        "family": dataset.family,
        "frame_size": (model_cfg.height, model_cfg.width),
        "data_manifest_sha256": dataset_manifest_sha256(cfg.data),
    }

    def save(path: Path, with_state: bool) -> None:
        if rank != 0:
            return
        save_checkpoint(
            path,
            ema,
            model_cfg.to_dict(),
            step=step,
            metadata={"train": asdict(cfg), "world_size": world},
            optimizer=optimizer if with_state else None,
            extra_state={"weights": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
            if with_state
            else None,
            generators={"batch": batch_rng, "noise": noise_gen} if with_state else None,
            **meta,
        )

    log_path = out / "log.csv"
    log_file = open(log_path, "a", newline="") if rank == 0 else None  # noqa: SIM115
    writer = csv.writer(log_file) if log_file else None
    if writer and log_path.stat().st_size == 0:
        writer.writerow(["step", "seconds", "loss_frame", "loss_reward", "loss_termination", "lr", "eval"])
    if rank == 0:
        (out / "config.json").write_text(
            json.dumps({"train": asdict(cfg), "model": model_cfg.to_dict()}, indent=2)
        )

    # ---- the loop -----------------------------------------------------------------------------------
    empty_frame = model.empty_frame.cpu().numpy()
    n_rolled = rolled_rows(cfg)
    n_rigid = rigid_rows(cfg)
    n_entering = entering_rows(cfg)
    entering = entering_windows(dataset) if n_entering else None
    if entering is not None and len(entering[0]) == 0:
        raise ValueError(
            f"train.entering_share={cfg.entering_share}, but nothing comes into view in {cfg.data}"
        )
    per_rank = cfg.batch_size // world
    start = time.perf_counter()
    progress = _progress(rank, cfg.steps, step)
    while step < cfg.steps:
        batch = sampler.sample(cfg.batch_size - n_rolled - n_entering, batch_rng)
        if n_entering:
            pick = batch_rng.integers(0, len(entering[0]), n_entering)
            batch = concat_batches(batch, sampler.gather(entering[0][pick], entering[1][pick]))
        if n_rolled:
            batch = concat_batches(
                batch,
                own_rollouts(ema, rollout_samplers, cfg, rank, world, batch_rng, noise_gen, odometer),
            )
        batch = with_first_frames(batch, sampler, empty_frame, cfg.first_frame_prob, batch_rng)
        if n_rigid:
            batch = with_rigid_contexts(batch, n_rigid, dataset)
        noise = model.draw_noise(cfg.batch_size, noise_gen)
        if world > 1 and n_rolled:  # each row keeps its noise: one process computes the same
            order = dealt_to_ranks(cfg.batch_size, world)
            batch, noise = take_rows(batch, order), {k: v[order] for k, v in noise.items()}
        lo, hi = rank * per_rank, (rank + 1) * per_rank
        noise = {k: v[lo:hi] for k, v in noise.items()}
        losses = compute_losses(
            model,
            _slice(
                batch,
                lo,
                hi,
                dataset if model_cfg.flow_channels else None,
                cfg.rollout_target,
                None
                if odometer is None
                else odometer_at(odometer, sampler.flat, batch.episode, batch.t, model_cfg.odometer_trail),
            ),
            noise,
            cfg.frame_loss,
            cfg.huber_c,
            cfg.undo_context_noise,
            cfg.predicted_warp_share,
            cfg.flow_loss,
        )
        total = losses["frame"] + cfg.heads_weight * (losses["reward"] + losses["termination"])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        _all_reduce_grads(model, world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 1.0 - cfg.ema)
        step += 1
        progress.update(1)
        seconds = time.perf_counter() - start
        out_of_time = cfg.time_budget_min is not None and seconds > 60 * cfg.time_budget_min
        if writer and (step % cfg.log_every == 0 or step == cfg.steps):
            writer.writerow(
                [step, f"{seconds:.1f}", *(f"{losses[k].item():.5f}" for k in losses), f"{lr:.2e}", ""]
            )
            log_file.flush()
            progress.set_postfix(loss=f"{losses['frame'].item():.4f}")
        if rank == 0 and val is not None and (step % cfg.eval_every == 0):
            report = quick_eval(ema, val, cfg.eval_episodes, cfg.eval_horizon)
            writer.writerow([step, f"{seconds:.1f}", "", "", "", "", json.dumps(report)])
            log_file.flush()
        if step % cfg.ckpt_every == 0 or out_of_time or step == cfg.steps:
            save(checkpoint_dir(out, step), with_state=True)
            if rank == 0:
                prune_checkpoints(out, keep=cfg.keep)
        if out_of_time:
            break
    progress.close()
    final = out / "final"
    save(final, with_state=False)
    if log_file:
        log_file.close()
    if world > 1:
        dist.barrier()
    return final


def check_settings(cfg: TrainConfig) -> None:
    """Refuse settings that would fail late (at the first step) or silently do nothing."""
    if cfg.frame_loss not in LOSSES:
        raise ValueError(f"train.frame_loss must be one of {LOSSES}, got {cfg.frame_loss!r}")
    if cfg.fresh_unet and not cfg.init:
        raise ValueError("train.fresh_unet starts a fine-tuning's change U-Net afresh: it needs train.init")
    if cfg.fresh_flow and not cfg.init:
        raise ValueError("train.fresh_flow starts a fine-tuning's flow U-Net afresh: it needs train.init")
    if cfg.flow_loss not in LOSSES:
        raise ValueError(f"train.flow_loss must be one of {LOSSES}, got {cfg.flow_loss!r}")
    if cfg.huber_c <= 0:
        raise ValueError(
            f"train.huber_c must be > 0 (the loss has no gradient at 0 otherwise), got {cfg.huber_c}"
        )
    if not 0.0 <= cfg.predicted_warp_share <= 1.0:
        raise ValueError(f"train.predicted_warp_share must be in [0, 1], got {cfg.predicted_warp_share}")
    if cfg.rollout_target not in ROLLOUT_TARGETS:
        raise ValueError(f"train.rollout_target must be one of {ROLLOUT_TARGETS}, got {cfg.rollout_target!r}")
    if cfg.rollout_target != "frame" and cfg.rollout_share == 0:
        raise ValueError(
            f"train.rollout_target={cfg.rollout_target} shapes the rolled-out rows: set train.rollout_share > 0"
        )
    if not 0.0 <= cfg.rollout_share <= 1.0:
        raise ValueError(f"train.rollout_share must be in [0, 1], got {cfg.rollout_share}")
    if not 0.0 <= cfg.rigid_context_share <= 1.0:
        raise ValueError(f"train.rigid_context_share must be in [0, 1], got {cfg.rigid_context_share}")
    if not 0.0 <= cfg.entering_share <= 1.0:
        raise ValueError(f"train.entering_share must be in [0, 1], got {cfg.entering_share}")
    if rigid_rows(cfg) + rolled_rows(cfg) + entering_rows(cfg) > cfg.batch_size:
        raise ValueError(
            f"train.rigid_context_share, rollout_share and entering_share ask for {rigid_rows(cfg)} + "
            f"{rolled_rows(cfg)} + {entering_rows(cfg)} rows of a batch of {cfg.batch_size}"
        )
    if cfg.rollout_share > 0 and (cfg.rollout_steps < 1 or rolled_rows(cfg) == 0):
        raise ValueError(
            f"train.rollout_share={cfg.rollout_share} with rollout_steps={cfg.rollout_steps} rolls out "
            f"{rolled_rows(cfg)} of {cfg.batch_size} rows: rollout_steps must be >= 1 and the share at "
            f"least one row"
        )


def rolled_rows(cfg: TrainConfig) -> int:
    """How many rows of each global batch continue from the model's own rollout."""
    return round(cfg.rollout_share * cfg.batch_size)


def entering_rows(cfg: TrainConfig) -> int:
    """How many rows of each global batch are windows where an object comes into view."""
    return round(cfg.entering_share * cfg.batch_size)


def entering_windows(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(episode, t)`` of every window whose target (frame ``t + 1``) shows an object, found by its
    colour, that its last context frame (``t``) does not: the moment something enters the view,
    which a model that rarely sees it never learns to draw (README, "The odometer on Drive")."""
    from worldsim.metrics.objects import extract_objects, palette_for

    episodes, ts = [], []
    for i in range(len(dataset)):
        e = dataset.episode(i)
        seen = extract_objects(e.frames, palette_for(e.spec)).visible  # [T+1, N]
        t = np.flatnonzero((seen[1:] & ~seen[:-1]).any(1))
        episodes.append(np.full(len(t), i)), ts.append(t)
    return np.concatenate(episodes).astype(np.int64), np.concatenate(ts).astype(np.int64)


def rigid_rows(cfg: TrainConfig) -> int:
    """How many rows of each global batch learn from contexts remade as a flow makes frames."""
    return round(cfg.rigid_context_share * cfg.batch_size)


def own_rollouts(
    ema: WorldModel,
    samplers: dict[int, WindowSampler],
    cfg: TrainConfig,
    rank: int,
    world: int,
    rng: np.random.Generator,
    noise_gen: torch.Generator,
    odometer: np.ndarray | None = None,
) -> WindowBatch:
    """The rolled-out share of a global batch (its last rows): windows whose context ends with
    1..``rollout_steps`` frames the EMA model made itself (``train.rollouts``), drawn from
    ``samplers[steps]`` so every transition can be the real target. Each rank rolls out only the rows
    it will train on (row ``i`` of the global batch goes to rank ``i % world``: ``dealt_to_ranks``, so
    every rank carries its share of the rollouts); the draws are the global batch's, so ranks agree
    with one process. ``odometer`` (``flat_odometer``) gives a generator with an odometer each
    window's distance to count on from."""
    n = rolled_rows(cfg)
    steps = int(rng.integers(1, cfg.rollout_steps + 1))
    sampler = samplers[steps]
    windows = sampler.sample(n, rng)
    noise = [ema.draw_sampling_noise(n, noise_gen) for _ in range(steps)]
    position = np.arange(cfg.batch_size - n, cfg.batch_size)
    distance = None
    if odometer is not None:
        distance = odometer_at(odometer, sampler.flat, windows.episode, windows.t, ema.cfg.odometer_trail)
    return with_own_rollouts(windows, ema, steps, position % world == rank, noise, distance)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Warm-up, constant, cool-down ("warmup-stable-decay"): the rate rises linearly over ``warmup``
    steps, holds, and falls linearly to 0 over the last ``cooldown`` steps. A constant rate keeps the
    weights wandering around a minimum; the cool-down settles them, and because it is tied to the end,
    a run can be extended (resumed with more ``steps``) before its cool-down starts."""
    lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
    if cfg.cooldown > 0:
        lr *= min(1.0, max(cfg.steps - step, 0) / cfg.cooldown)
    return lr


def quick_eval(model: WorldModel, val: Dataset, episodes: int, horizon: int) -> dict[str, float]:
    """Two cheap signals on held-out data. Rollouts: centroid error of ``horizon``-step rollouts from
    the first K real frames (the generator's own context length, not the report's fixed start), and
    of repeating the last context frame (their ratio is the first bar a model must clear). One step:
    mean absolute error (grey levels) of next frames predicted from real context, against repeating
    the last frame; it moves long before rollouts do."""
    from worldsim.train.fidelity import rollout_errors

    errs = rollout_errors(model, val, range(min(episodes, len(val))), horizon)
    sampler = WindowSampler(val, model.cfg.context, pad_start=False)
    windows = sampler.sample(64, np.random.default_rng(5))
    odometer = None
    if model.cfg.odometer:
        odometer = flat_ego(sampler.flat, val, model.cfg)
        odometer = torch.from_numpy(
            odometer_at(odometer, sampler.flat, windows.episode, windows.t, model.cfg.odometer_trail)
        )
    with torch.no_grad():
        prompt = model.encode_prompts(windows.captions)
        pred = model.predict_next(
            torch.from_numpy(windows.context),
            torch.from_numpy(windows.actions),
            prompt,
            context_noise=0.0,
            generator=torch.Generator().manual_seed(0),
            frame_index=torch.from_numpy(windows.t + 1),
            odometer_m=odometer,
            scripts=scripts_of_prompts(windows.captions, model.cfg.family) if model.cfg.script_map else None,
        )
    target = windows.targets[:, 0].astype(np.int16)
    return {
        "centroid_px": errs["model_px"],
        "frozen_px": errs["frozen_px"],
        "frozen_ratio": errs["model_px"] / max(errs["frozen_px"], 1e-9),
        "one_step_l1": float(np.abs(pred.cpu().numpy().astype(np.int16) - target).mean()),
        "one_step_l1_frozen": float(np.abs(windows.context[:, -1].astype(np.int16) - target).mean()),
    }


def _progress(rank: int, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=rank != 0, desc="train", unit="step", mininterval=5)
