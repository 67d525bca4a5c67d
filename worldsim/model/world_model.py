"""The generator: an action- and prompt-conditioned next-frame sampler.

Given the K most recent frames, the K most recent actions (the last one is the action taken now)
and a prompt, it samples the next frame with EDM in a few Euler steps. It sees tensors only.

Design choices, each measured on Balls (see the README):
- The clean signal is the *change* from the last context frame (``target="delta"``): the static
  scene is exactly zero, so capacity and loss go to what moves, and backgrounds do not drift.
- The loss is weighted towards pixels that move (in the target or the context), because moving
  objects are a few percent of the pixels and a plain loss lets the model erase them.
- Context frames are noise-augmented in training, with the noise level given to the network; at
  sampling a small level is used. This is the proven cure for drift in long rollouts.
- A pixel changes only when the sample changes it by at least ``min_change_levels`` (8 of 255):
  in flat-colour scenes every real change is a change of colour, and the sampler's low-amplitude
  residual noise, left in, accumulates into drift over a long rollout.
- Frames enter the U-Net pixel-unshuffled (2x: 64x64 becomes 32x32x12 per frame), so the network
  runs at low resolution without an autoencoder that could blur small objects. (4x, a 16x16 grid,
  learned motion more slowly per CPU-second: balls move up to 10 px a step.)
- Half of each training batch is at ``sigma_max``: one-step sampling uses only that level, and the
  log-normal levels alone put about 5 % of samples there.
- A generator may be told the index of the frame it makes (``clock_frames``): an object that enters
  the view at a time the prompt sets (Drive's pedestrian starts crossing at ``start`` seconds, at
  ``x`` metres down the road) cannot be timed from the last K frames alone, and a model that cannot
  time it draws its mean: nothing.
- A generator may also be told how far its camera has travelled (``odometer``; ``worldsim.model.
  odometry``): Drive's pedestrian comes into view when the car is 9.7 m from it, which the road,
  the same everywhere, never shows. The rollout keeps the distance as it keeps the clock, from the
  dashes' scroll in the frames it makes. With ``odometer_trail=M`` it is also told the mean step
  over the last M frames: a speed that K frames of whole-pixel moves alias (the dashes move 4 or 5
  rows a step at 8 m/s), so that one step's error is not read back as a change of speed. With
  ``odometer_dynamics`` a rollout counts its distance by dynamics fitted to the dataset (a rolling
  car's linear law, ``worldsim.model.odometer_dynamics``) instead of re-reading each step off the
  frames it made: drawn a little short, a step re-read is a slower car, and over a minute the car
  stopped; an episode's first step is counted from the prompt's speed where the caller gives it.
  With ``heading`` the trail also carries the car's heading (``worldsim.model.heading``), counted
  from the steering by fitted dynamics: Drive's frames show the car across the road but not which
  way it points, and the steering over a whole episode sets that.
- A generator may move the last frame's pixels by a predicted forward displacement field before
  drawing the change (``flow_channels``; ``worldsim.model.warp``): an object whose next position it
  is unsure of then moves whole, to its mean position, instead of blending into the places it may
  be, and what stands still is copied exactly. The field is learned from the objects' centroid
  motion (``worldsim.train.flow``); the change is learned on top of the frame warped by that *true*
  field, so it learns to fill the holes a move leaves and to add what a warp cannot make, never to
  move an object itself (learned on the predicted field, it would learn to blend an unsure object).
- Sampling may run the U-Net in bfloat16 (``sampling_precision``): on a CPU with bf16 units it
  halves the cost of a step, and the frames it makes are scored like float32's (README). Where
  bfloat16 is not native, sampling runs in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldsim.model.edm import LOSSES, EDMConfig, draw_training_noise, sample, training_loss
from worldsim.model.first_frame import FirstFrameNet, draw_first_frames
from worldsim.model.heading import HEADING_FEATURES, HeadingDynamics, heading_features
from worldsim.model.heads import HeadsConfig, RewardTerminationHeads
from worldsim.model.motion import colour_moves
from worldsim.model.object_dynamics import (
    ObjectDynamics,
    described_prompt,
    fill_before_start,
    object_tracks,
    shows_colour,
    start_path_px,
)
from worldsim.model.odometer_dynamics import known_step, make_odometer_dynamics
from worldsim.model.odometry import OdometerConfig, odometer_m, step_m
from worldsim.model.pixels import to_float, to_uint8
from worldsim.model.prompt import PromptEncoder, PromptEncoderConfig, PromptTokenizer
from worldsim.model.script_map import SCRIPT_MAP_CHANNELS, Script, ScriptMapConfig, paint
from worldsim.model.unet import UNet, UNetConfig, fourier_features
from worldsim.model.warp import scenery_behind, warp


@dataclass
class WorldModelConfig:
    """Everything that defines a generator; saved as ``config.json`` with its checkpoint."""

    family: str = "balls"
    width: int = 64
    height: int = 64
    context: int = 4  # K frames of context
    action_dim: int = 2
    target: str = "delta"  # "delta": next frame minus last context frame; "frame": the next frame
    cond_dim: int = 256
    motion_weight: float = 20.0  # extra loss weight on pixels that move
    context_noise_max: float = 0.3  # training: context noise sigma ~ U(0, max) with probability p
    context_noise_prob: float = 0.7
    sampling_steps: int = 1
    sampling_eta: float = 0.0  # > 0 with several steps: ancestral sampling, fresh noise after each step
    sampling_context_noise: float = 0.02
    min_change_levels: int = 8  # a pixel changes only if the sample changes it by at least this (of 255)
    sampling_precision: str = "float32"  # "float32" or "bfloat16": the U-Net's arithmetic when sampling
    context_differences: bool = True  # also feed f_t - f_(t-1) of the context: motion, ready-made
    clock_frames: int = 0  # > 0: told the index of the frame it makes, saturating at this many frames
    flow_channels: list[int] = field(default_factory=list)  # non-empty: a flow U-Net of these widths warps
    flow_dither: bool = False  # round each region's move stochastically (expected move = the move)
    flow_still_colours: list[list[int]] = field(default_factory=list)  # uint8 RGB that never moves (``warp``)
    flow_unshuffle: int = 0  # the flow U-Net's pixel-unshuffle; 0: the change U-Net's (``unet.unshuffle``)
    flow_motion: bool = False  # the flow also reads each colour's moves in the context (``motion``)
    flow_carry_fixed: float | None = None  # with flow_motion: carry this share of the last move, not learned
    odometer: bool = False  # told the distance the camera has travelled, read off the road's markings
    odometer_markings: OdometerConfig | None = None  # the markings it reads (filled from the scene)
    odometer_trail: int = 0  # > 1: odometer_m is the distance at the last this many frames (a speed)
    odometer_dynamics: bool = False  # a rollout counts its distance by learned dynamics, not its frames
    odometer_dynamics_form: str = "linear"  # "linear" (a rolling car's law) or "network" (older checkpoints)
    heading: bool = False  # the trail also carries the car's heading, counted from the steering (``heading``)
    script_map: bool = False  # shown the agents the prompt scripts, drawn where they will be (``script_map``)
    script_map_camera: ScriptMapConfig | None = (
        None  # the camera maps of the prompt are drawn through (from the scene)
    )
    object_dynamics: bool = False  # objects move by learned dynamics of their tracks (``object_dynamics``)
    object_dynamics_width: int = 256  # the dynamics network's width
    object_max: int = 0  # objects a prompt names at most (from the scene, with object_dynamics)
    object_properties: int = 0  # physical properties the prompt gives each (from the scene)
    object_start_path: bool = False  # a one-frame start's tracks go back along the prompt's free paths
    first_frame_layout: bool = False  # text-to-video draws frame 0 over the prompt's layout (``first_frame``)
    first_frame_channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # that U-Net's widths
    vocab: list[str] = field(default_factory=lambda: ["<pad>", "<unk>", "<num>"])
    unet: UNetConfig = field(default_factory=UNetConfig)
    prompt: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    edm: EDMConfig = field(default_factory=EDMConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def flow_grid(self) -> int:
        """The pixel-unshuffle the flow U-Net works at: its own, or the change U-Net's."""
        return self.flow_unshuffle or self.unet.unshuffle

    @staticmethod
    def from_dict(d: dict) -> WorldModelConfig:
        d = dict(d)
        sub = {
            "unet": UNetConfig,
            "prompt": PromptEncoderConfig,
            "edm": EDMConfig,
            "heads": HeadsConfig,
            "odometer_markings": OdometerConfig,
            "script_map_camera": ScriptMapConfig,
        }
        for key, cls in sub.items():
            if key in d and isinstance(d[key], dict):
                d[key] = cls(**d[key])
        d.setdefault("odometer_dynamics_form", "network")  # the only form before the field was written
        return WorldModelConfig(**d)


PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    """``precision`` if it is a sampling precision the generator supports, else a ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"sampling precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively. Elsewhere bfloat16 is emulated, slower than
    float32, and sampling falls back to float32 (the frames are scored alike: README)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(
            getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


CLOCK_HARMONICS = 8

FIRST_FRAME_SEED = 20261207
"""The seed a first-frame net's initial weights are drawn from, apart from the run's stream."""

FLOW_SCALE_PX = 8.0
"""The flow U-Net's output times this is the displacement in pixels: a step's motion is a few pixels
(Balls' fastest drops move about 10), so the network works at unit scale."""

FLOW_LOSS_WEIGHT = 0.1
"""Weight of the flow's error (squared pixels) beside the frame loss. The flow U-Net has weights of its
own, which Adam steps alike at any weight; this sets how much the flow moves the shared conditioning."""

FLOW_CARRY_GAIN = 10.0
"""``flow_motion``'s carry is this times its parameter: the parameter starts at zero (a fine-tuned flow
starts as the function it was) and Adam moves a parameter by at most about the learning rate a step,
so at 2e-4 the carry could reach a coasting ball's ~0.97 within a few hundred steps. (On Balls it
went to 0.22 in 2,000 steps: the flow keeps reading speed off the pixels; README.)"""

FLOW_HUBER_C_PX = 0.1
"""The bend of the flow's pseudo-Huber error (``flow_kind="pseudo_huber"``), in pixels: a step's moves
are whole pixels in the warp, so errors above a tenth of one are counted by their size."""


def clock_features(frame_index: torch.Tensor, clock_frames: int) -> torch.Tensor:
    """``[B]`` frame indices to ``[B, 1 + 2 * CLOCK_HARMONICS]`` features of the episode's time, which
    saturates at ``clock_frames`` (after an episode's length, how long ago it began tells nothing the
    training data could show)."""
    tau = frame_index.float().clamp(0, clock_frames)[:, None] / clock_frames
    k = torch.arange(1, CLOCK_HARMONICS + 1, device=tau.device, dtype=torch.float32)[None]
    return torch.cat([tau, torch.sin(math.pi * k * tau), torch.cos(math.pi * k * tau)], dim=1)


ODOMETER_SCALE_M = 10.0
"""The odometer enters the conditioning as its distance over this and the square root of that: a
prompt's distances (Drive's pedestrian at ``x`` metres) enter the prompt encoder as their values, so
"how far is it still" is a difference the conditioning MLP can form."""


def odometer_features(odometer_m: torch.Tensor) -> torch.Tensor:
    """``[B]`` distances travelled (m) to ``[B, 2]`` features."""
    d = odometer_m.float()[:, None] / ODOMETER_SCALE_M
    return torch.cat([d, d.clamp_min(0.0).sqrt()], dim=1)


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer whose weights and bias start at zero: a conditioning input added this way
    changes nothing until it has learned, so fine-tuning can add it to a trained generator."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def distance_trail(odometer: torch.Tensor) -> torch.Tensor:
    """The distances of an odometer: ``odometer[B]`` or a trail ``[B, M]`` itself, or the distance
    channel of a trail that also carries the heading, ``[B, M, 2]``."""
    return odometer[..., 0] if odometer.ndim == 3 else odometer


def latest_distance(odometer: torch.Tensor) -> torch.Tensor:
    """The distance at the last context frame: ``odometer[B]`` itself, or a trail's last entry."""
    distances = distance_trail(odometer)
    return distances[:, -1] if distances.ndim == 2 else distances


def speed_features(trail_m: torch.Tensor) -> torch.Tensor:
    """A trail of distances ``[B, M]`` (oldest first; NaN before the episode's first frame) to ``[B,
    2]`` features: the mean step over the frames it holds (m a step; 0 with fewer than two) and the
    share of the trail they span."""
    valid = torch.isfinite(trail_m)
    m = trail_m.shape[1]
    first_at = valid.float().argmax(1, keepdim=True)  # the oldest frame it holds
    first = torch.where(valid, trail_m, 0.0).gather(1, first_at)[:, 0]
    span = torch.where(valid.any(1), m - 1 - first_at[:, 0], 0)  # frames from it to the last
    step = torch.where(span > 0, (trail_m[:, -1] - first) / span.clamp_min(1), 0.0)
    return torch.stack([step, span / max(m - 1, 1)], dim=1)


def check_colours(colours: list[list[int]]) -> list[list[int]]:
    """``colours`` if it is a list of uint8 RGB triples (``flow_still_colours``), else a ``ValueError``."""
    ok = isinstance(colours, list | tuple) and all(
        isinstance(c, list | tuple)
        and len(c) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        for c in colours
    )
    if not ok:
        raise ValueError(f"flow_still_colours is a list of [r, g, b] triples in 0..255, got {colours!r}")
    return [list(c) for c in colours]


def check_still_colours(colours: list[list[int]], cfg: WorldModelConfig) -> list[list[int]]:
    """``colours`` (``check_colours``) if a generator of ``cfg`` can keep them still: only a flow's
    warp leaves colours where they are. Checked when a generator is built and when a sampling
    setting gives a built one colours (``worldsim.checkpoints.with_sampling``)."""
    colours = check_colours(colours)
    if colours and not cfg.flow_channels:
        raise ValueError(
            "flow_still_colours are colours a flow's warp leaves still: this generator has no flow "
            "(it needs flow_channels)"
        )
    return colours


def check_start_path(cfg: WorldModelConfig) -> None:
    """A ``ValueError`` unless a generator of ``cfg`` can go back along its prompts' free paths
    (``object_start_path``): its objects move by dynamics, and the paths are projected through a
    fixed camera. Checked when a generator is built and when a sampling setting turns it on
    (``worldsim.checkpoints.with_sampling``)."""
    if not isinstance(cfg.object_start_path, bool):
        raise ValueError(f"object_start_path is true or false, got {cfg.object_start_path!r}")
    if not cfg.object_start_path:
        return
    from worldsim.scenes import family_with

    if not cfg.object_dynamics:
        raise ValueError("object_start_path fills the tracks object dynamics read: it needs object_dynamics")
    family_with(cfg.family, "free_path")  # refuses a family whose prompts give no free paths
    if cfg.script_map_camera is None or cfg.script_map_camera.follows:
        raise ValueError(
            "object_start_path projects the prompt's free paths through the scene's fixed camera: give "
            "script_map_camera, a camera that does not follow anything (training fills it from the scene)"
        )


def motion_mask(
    last: torch.Tensor, prev: torch.Tensor, target: torch.Tensor, dilate: int = 1
) -> torch.Tensor:
    """Pixels that change from ``prev`` to ``last`` or from ``last`` to ``target``, dilated: ``[B,1,H,W]``."""
    moving = ((last - prev).abs().amax(1, keepdim=True) > 0.02) | (
        (target - last).abs().amax(1, keepdim=True) > 0.02
    )
    m = moving.float()
    if dilate:
        m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
    return m


def flow_error(predicted: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Per-pixel error ``[B, 1, H, W]`` of a displacement field ``[B, 2, H, W]`` (pixels).

    ``"l2"``: the squared distance, whose minimiser is the mean move. Where a ball may bounce or
    fly on, the mean is a shortened move, and a rollout compounds the shortfall step after step.
    ``"pseudo_huber"``: ``sqrt(d^2 + c^2) - c`` of the distance ``d`` (``c = FLOW_HUBER_C_PX``),
    whose minimiser is the spatial median: the more likely of the two moves, at full length.
    Measured on Balls, the median did not restore the flow's speed and rolled out worse (README):
    the shortfall is not the mean under doubt.
    """
    if kind not in LOSSES:
        raise ValueError(f"the flow's error must be one of {LOSSES}, got {kind!r}")
    sq = (predicted - target).square().sum(1, keepdim=True)
    return sq if kind == "l2" else (sq + FLOW_HUBER_C_PX**2).sqrt() - FLOW_HUBER_C_PX


class WorldModel(nn.Module):
    """Frame generator (U-Net denoiser), prompt encoder, and separate reward/termination heads."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        check_precision(cfg.sampling_precision)
        self.cfg = cfg
        self.tokenizer = PromptTokenizer(cfg.vocab, cfg.prompt.max_tokens)
        cfg.prompt.vocab_size = len(cfg.vocab)
        context_channels = 3 * cfg.context + (3 * (cfg.context - 1) if cfg.context_differences else 0)
        # noisy change, context (and its differences), the warped last frame when there is a flow, and
        # the script map when there is one (inputs added later come last: fine-tuning can add them)
        cfg.unet.in_channels = (
            3
            + context_channels
            + (3 if cfg.flow_channels else 0)
            + (SCRIPT_MAP_CHANNELS if cfg.script_map else 0)
        )
        cfg.unet.cond_dim = cfg.cond_dim
        self.prompt_encoder = PromptEncoder(cfg.prompt)
        self.unet = UNet(cfg.unet)
        if cfg.flow_unshuffle < 0:
            raise ValueError(f"flow_unshuffle must be >= 0 (0: the U-Net's), got {cfg.flow_unshuffle}")
        check_still_colours(cfg.flow_still_colours, cfg)
        if cfg.flow_carry_fixed is not None and not cfg.flow_motion:
            raise ValueError(
                "flow_carry_fixed sets how much of the context's last move a flow carries: it needs flow_motion"
            )
        if cfg.flow_motion and not (cfg.flow_channels and cfg.context > 1):
            raise ValueError(
                "flow_motion hands a flow the moves between context frames: it needs "
                f"flow_channels and a context of 2 frames or more (context={cfg.context})"
            )
        if cfg.flow_channels:
            if cfg.target != "delta":
                raise ValueError(
                    f"a flow needs target='delta' (the change on top of the warp), got {cfg.target!r}"
                )
            # Its head starts at zero: no motion, so the warp is the identity and a generator given a
            # flow when fine-tuned starts as the function it was (``train.init``).
            moves = 2 * (cfg.context - 1) if cfg.flow_motion else 0
            self.flow_net = UNet(
                UNetConfig(
                    in_channels=context_channels + moves,
                    out_channels=2,
                    channels=list(cfg.flow_channels),
                    blocks_per_level=1,
                    attention=False,
                    cond_dim=cfg.cond_dim,
                    unshuffle=cfg.flow_grid,
                    groups=cfg.unet.groups,
                )
            )
            if cfg.flow_motion and cfg.flow_carry_fixed is None:
                # How much of the move just seen the flow carries on by itself: starts at zero (and so
                # do the flow's weights on the moves), so a flow given moves when fine-tuned starts as
                # the function it was; the network learns what changes the move (gravity, bounces).
                self.flow_carry = nn.Parameter(torch.zeros(()))
            elif cfg.flow_motion:
                # A fixed carry (1: things coast unless something acts): the network can only learn
                # the change of the move, not lean on re-reading speed off the pixels (README).
                self.register_buffer("flow_carry", torch.tensor(cfg.flow_carry_fixed / FLOW_CARRY_GAIN))
        k = cfg.context
        cond_in = 64 + 32 + cfg.prompt.out_dim + k * cfg.action_dim + k
        self.cond_mlp = nn.Sequential(
            nn.Linear(cond_in, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim)
        )
        if cfg.clock_frames < 0:
            raise ValueError(f"clock_frames must be >= 0, got {cfg.clock_frames}")
        if cfg.clock_frames:
            # Joins the conditioning MLP's hidden layer. It starts at zero, so a generator given a clock
            # when fine-tuned starts as the function it was (``train.init``).
            self.clock_in = zero_linear(1 + 2 * CLOCK_HARMONICS, cfg.cond_dim)
        if cfg.odometer:
            if cfg.odometer_markings is None:
                raise ValueError(
                    "an odometer reads a road's markings: give odometer_markings (training fills them "
                    "from the scene)"
                )
            # Zero at the start, as the clock: fine-tuning may add an odometer to a checkpoint.
            self.odometer_in = zero_linear(2, cfg.cond_dim)
        if cfg.odometer_trail:
            if not cfg.odometer or cfg.odometer_trail < 2:
                raise ValueError(
                    f"odometer_trail={cfg.odometer_trail} tells a generator its odometer's distance at the "
                    "last frames: it needs odometer=true and a trail of 2 frames or more"
                )
            # Zero at the start too: fine-tuning may add a trail to a generator with an odometer.
            self.speed_in = zero_linear(2, cfg.cond_dim)
        if cfg.odometer_dynamics:
            if not cfg.odometer_trail:
                raise ValueError(
                    "odometer_dynamics count a rollout's distance from the steps of its trail: it needs "
                    "odometer_trail (2 or more)"
                )
            # Fitted to the dataset before the generator trains (train.loop), then kept: the frame
            # loss never reaches it.
            self.odometer_dynamics = make_odometer_dynamics(
                cfg.odometer_dynamics_form, cfg.odometer_trail, cfg.context, cfg.action_dim
            )
            self.odometer_dynamics.requires_grad_(False)
        if cfg.heading:
            if not cfg.odometer_dynamics:
                raise ValueError(
                    "heading rides in the odometer's trail and is counted as its distance is: it needs "
                    "odometer_dynamics (and so odometer_trail)"
                )
            # Zero at the start, as the odometer's inputs: fine-tuning may add a heading.
            self.heading_in = zero_linear(HEADING_FEATURES, cfg.cond_dim)
            # Fitted to the dataset's yaw before the generator trains (train.loop), then kept.
            self.heading_dynamics = HeadingDynamics(cfg.context, cfg.action_dim)
            self.heading_dynamics.requires_grad_(False)
        if cfg.script_map:
            if cfg.script_map_camera is None:
                raise ValueError(
                    "a script map is drawn through the scene's camera: give script_map_camera (training "
                    "fills it from the scene)"
                )
            if cfg.script_map_camera.follows and not cfg.odometer:
                raise ValueError(
                    "a script map drawn through a camera that follows the car needs to know how far it "
                    "has travelled: add odometer=true"
                )
        if cfg.object_dynamics:
            if not cfg.flow_channels:
                raise ValueError(
                    "object dynamics replace a flow's field on the objects' pixels: they need flow_channels"
                )
            if cfg.object_max < 1 or cfg.object_properties < 1:
                raise ValueError(
                    "object dynamics read the objects a prompt names and their properties: give object_max "
                    f"and object_properties (training fills them from the scene), got {cfg.object_max} and "
                    f"{cfg.object_properties}"
                )
            # Fitted to the dataset's tracks before the generator trains (train.loop), then kept.
            self.object_dynamics = ObjectDynamics(
                cfg.context,
                cfg.object_max,
                cfg.object_properties,
                cfg.action_dim,
                cfg.object_dynamics_width,
                (cfg.height, cfg.width),
            )
            self.object_dynamics.requires_grad_(False)
        check_start_path(cfg)
        if cfg.first_frame_layout:
            if cfg.script_map_camera is None:
                raise ValueError(
                    "a first frame is drawn over the prompt's layout seen through the scene's camera, "
                    "before it has moved: give script_map_camera (training fills it from the scene)"
                )
            # Fitted to the dataset's first frames before the generator trains (train.loop), then kept.
            # Drawn from a seed of its own, so the generator's other weights and the run's later draws
            # are those of a generator without it (adding it changes nothing else of a run).
            with torch.random.fork_rng(devices=[]):  # its initial weights are drawn on the CPU
                torch.default_generator.manual_seed(FIRST_FRAME_SEED)
                self.first_frame = FirstFrameNet(cfg.first_frame_channels, cfg.prompt)
            self.first_frame.requires_grad_(False)
        self.heads = RewardTerminationHeads(cfg.heads, cfg.action_dim, cfg.prompt.out_dim)
        # What "no frame yet" looks like: the mean training frame (set by the training loop). Text-to-
        # video starts from K of these with an all-False context mask, so the first frame is drawn
        # from the prompt alone, as a change from the average scene.
        self.register_buffer("empty_frame", torch.zeros(cfg.height, cfg.width, 3, dtype=torch.uint8))

    # -- conditioning ---------------------------------------------------------------------------

    def encode_prompts(self, captions: list[str]) -> torch.Tensor:
        """What the generator reads from each prompt, ``[B, P]``: the learned embedding and, with object
        dynamics, each object's colour, properties and flags as the grammar parses them, then with
        ``object_start_path`` each object's pixel offsets 1..K-1 steps before the start
        (``start_path_px``; ``_object_description`` reads both back), after it. Callers hand it on
        whole, encoded under the sampling settings they sample with; ``prompt_embedding`` is the
        part the networks read."""
        ids, values = self.tokenizer.encode(captions)
        device = next(self.parameters()).device
        embedding = self.prompt_encoder(ids.to(device), values.to(device))
        if not self.cfg.object_dynamics:
            return embedding
        cfg = self.cfg
        rows = [described_prompt(c, cfg.family, cfg.object_max) for c in captions]
        if cfg.object_start_path:  # then where each object was before the start, in pixels
            steps = cfg.context - 1
            paths = (
                start_path_px(c, cfg.family, cfg.object_max, steps, cfg.script_map_camera) for c in captions
            )
            rows = [np.concatenate([r, p.reshape(-1)]) for r, p in zip(rows, paths, strict=True)]
        return torch.cat([embedding, torch.from_numpy(np.stack(rows)).to(device)], 1)

    def prompt_embedding(self, prompt: torch.Tensor) -> torch.Tensor:
        """The learned embedding part of ``encode_prompts``' output, which the networks read."""
        return prompt[:, : self.cfg.prompt.out_dim]

    def _object_description(self, prompt: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """``(colours int[B, N, 3], properties[B, N, P], present bool[B, N], agent bool[B, N],
        before[B, N, K - 1, 2] or None)`` from ``encode_prompts``' output (object dynamics only);
        ``before`` with ``object_start_path``."""
        cfg = self.cfg
        b, n, p = prompt.shape[0], cfg.object_max, cfg.object_properties
        described = n * (5 + p)
        path = n * (cfg.context - 1) * 2 if cfg.object_start_path else 0
        rest = prompt[:, cfg.prompt.out_dim :].float()
        if rest.shape[1] != described + path:
            raise ValueError(
                f"this generator reads {n} objects of {p} properties"
                + (" and their paths before the start" if path else "")
                + " from its prompts: pass encode_prompts' output whole (encoded with the same "
                "object_start_path)"
            )
        rows = rest[:, :described].view(b, n, 5 + p)
        return (
            rows[..., :3].round().long(),
            rows[..., 3 : 3 + p],
            rows[..., 3 + p] > 0.5,
            rows[..., 4 + p] > 0.5,
            rest[:, described:].view(b, n, cfg.context - 1, 2) if path else None,
        )

    def _cond(
        self,
        c_noise: torch.Tensor,
        ctx_sigma: torch.Tensor,
        prompt: torch.Tensor,
        actions: torch.Tensor,
        context_mask: torch.Tensor,
        frame_index: torch.Tensor | None,
        odometer: torch.Tensor | None = None,
    ) -> torch.Tensor:
        feats = [
            fourier_features(c_noise, 64),
            fourier_features(ctx_sigma, 32),
            self.prompt_embedding(prompt),
            actions.flatten(1),
            context_mask.float(),
        ]
        hidden = self.cond_mlp[0](torch.cat(feats, dim=1))
        if self.cfg.clock_frames:
            hidden = hidden + self.clock_in(clock_features(frame_index, self.cfg.clock_frames))
        if self.cfg.odometer:
            hidden = hidden + self.odometer_in(odometer_features(latest_distance(odometer)))
        if self.cfg.odometer_trail:
            hidden = hidden + self.speed_in(speed_features(distance_trail(odometer)))
        if self.cfg.heading:
            hidden = hidden + self.heading_in(heading_features(odometer))
        return self.cond_mlp[2](self.cond_mlp[1](hidden))

    def _odometer(self, odometer_m: torch.Tensor | float | None, b: int, device: torch.device):
        """``odometer_m`` as ``float[b]`` on ``device`` (with a trail, ``float[b, M]``, and with a
        heading ``float[b, M, 2]``: a distance given alone is a trail that holds nothing before it,
        heading 0); required of a generator with an odometer."""
        if not self.cfg.odometer:
            return None
        if odometer_m is None:
            raise ValueError(
                "this generator is told how far its camera has travelled (odometer): pass odometer_m, "
                "the distance at the last context frame (0 at an episode's first frame)"
            )
        dist = torch.as_tensor(odometer_m, device=device, dtype=torch.float32)
        dist = dist.expand(b) if dist.ndim == 0 else dist
        m = self.cfg.odometer_trail
        if m and dist.shape == (b,):
            dist = torch.cat([torch.full((b, m - 1), float("nan"), device=device), dist[:, None]], 1)
            # with a heading, a distance given alone is an episode's start: the car points along the road
            if self.cfg.heading:
                dist = torch.stack([dist, torch.where(torch.isfinite(dist), 0.0, float("nan"))], dim=2)
        want = (b, m, 2) if self.cfg.heading else (b, m) if m else (b,)
        last = dist[:, -1] if self.cfg.heading and dist.ndim == 3 else latest_distance(dist)
        if dist.shape != want or not torch.isfinite(last).all():
            raise ValueError(
                f"odometer_m must be one finite distance or one per world, shape ({b},)"
                + (f", or a trail of the last {m} per world, {want}, the last finite" if m else "")
                + (" (distance in m, heading in rad)" if self.cfg.heading else "")
                + f"; got {tuple(dist.shape)}"
            )
        return dist

    def start_odometer(self, b: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """What ``odometer_m`` is at an episode's first frame, for ``b`` worlds: 0 (with a trail,
        nothing before it)."""
        if not self.cfg.odometer_trail:
            return torch.zeros(b, device=device)
        return self._odometer(torch.zeros(b, device=device), b, torch.device(device))

    def advance_odometer(
        self,
        odometer: torch.Tensor,
        before_uint8: torch.Tensor,
        after_uint8: torch.Tensor,
        actions: torch.Tensor | None = None,
        start_step_m: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``odometer`` (``float[B]`` or a trail ``[B, M]``) one frame on, from frames ``before`` to
        ``after``: what a caller stepping a rollout itself keeps. The step is read off the two frames
        (``odometer_step``), or, for a generator with ``odometer_dynamics``, predicted from the trail
        and ``actions[B, K, A]`` (the window ``predict_next`` was given) wherever the trail holds a
        step. An episode's first step is read off the frames, or, where ``start_step_m[B]`` is
        finite (the step the prompt's speed makes, ``worldsim.scenes.start_step_m``), counted by the
        dynamics on from it: one generated step is read to a row of pixels (0.06 m) and drawn from
        the prompt alone, and the dynamics carry a first step's error for the whole rollout. With
        ``heading`` (a trail ``[B, M, 2]``) the heading moves on by its dynamics
        (``worldsim.model.heading``)."""
        distances = distance_trail(odometer)
        if self.cfg.odometer_dynamics:
            if actions is None or actions.shape[:2] != (odometer.shape[0], self.cfg.context):
                raise ValueError(
                    "this generator counts its distance by the odometer's dynamics: pass actions, the "
                    f"[B, {self.cfg.context}, {self.cfg.action_dim}] window predict_next was given"
                )
            actions = actions.to(odometer.device)
            known = known_step(distances)
            if start_step_m is not None:  # a step before the first frame at the prompt's speed
                start = torch.as_tensor(start_step_m, dtype=torch.float32, device=odometer.device)
                if start.shape != known.shape:
                    raise ValueError(
                        f"start_step_m must give one step per world, shape ({known.shape[0]},); "
                        f"got {tuple(start.shape)}"
                    )
                begins = ~known & torch.isfinite(start) & torch.isfinite(distances[:, -1])
                before_first = distances[:, -1] - start
                distances = distances.clone()
                distances[:, -2] = torch.where(begins, before_first, distances[:, -2])
                known = known | begins
            with torch.no_grad():
                step = self.odometer_dynamics(distances, actions)
            if not known.all():  # the frames are read only for the worlds at their first step
                read = self.odometer_step(before_uint8, after_uint8).to(odometer.device)
                step = torch.where(known, step, read)
        else:
            step = self.odometer_step(before_uint8, after_uint8).to(odometer.device)
        if self.cfg.heading:
            with torch.no_grad():
                turn = self.heading_dynamics(odometer, step, actions)
            nxt = torch.stack([distances[:, -1] + step, odometer[:, -1, 1] + turn], dim=1)
            return torch.cat([odometer[:, 1:], nxt[:, None]], dim=1)
        if odometer.ndim == 2:
            return torch.cat([odometer[:, 1:], odometer[:, -1:] + step[:, None]], dim=1)
        return odometer + step

    def odometer_step(self, before_uint8: torch.Tensor, after_uint8: torch.Tensor) -> torch.Tensor:
        """How far the camera went from frames ``before`` to ``after`` (``uint8[B, H, W, 3]``), in
        metres, as the generator's odometer counts it: zeros for a generator without one. A caller
        stepping a rollout itself adds it up (the rollouts here do)."""
        if not self.cfg.odometer:
            return torch.zeros(before_uint8.shape[0], device=before_uint8.device)
        return step_m(before_uint8, after_uint8, self.cfg.odometer_markings)

    def context_odometer(
        self, context_uint8: torch.Tensor, actions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The distance at the last frame of real frames ``uint8[B, T, H, W, 3]`` that begin at an
        episode's first frame: ``float[B]`` (with a trail, at the last M of them, ``[B, M]``, NaN
        before the first). A padded context's copies of a first frame would read as standing still:
        start those from ``start_odometer``. A generator with ``heading`` also needs the ``actions[B,
        T-1, A]`` taken between the frames: the heading is counted over them from 0 at the first frame
        (``[B, M, 2]``), each step's distance read off the frames."""
        b, device = context_uint8.shape[0], context_uint8.device
        if not self.cfg.odometer:
            return torch.zeros(b, device=device)
        dist = odometer_m(context_uint8, self.cfg.odometer_markings)
        m = self.cfg.odometer_trail
        if not m:
            return dist[:, -1]
        if self.cfg.heading:
            dist = self._counted_heading(dist, actions)
        pad = torch.full((b, max(m - dist.shape[1], 0), *dist.shape[2:]), float("nan"), device=device)
        return torch.cat([pad, dist[:, -m:]], dim=1)

    def _counted_heading(self, dist: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor:
        """Distances ``[B, T]`` read off an episode's first T frames with the heading counted over
        ``actions[B, T-1, A]`` from 0 at the first frame: ``[B, T, 2]``."""
        b, t = dist.shape
        k, a = self.cfg.context, self.cfg.action_dim
        if actions is None or tuple(actions.shape) != (b, t - 1, a):
            raise ValueError(
                "this generator is told its heading, counted from the steering since the episode's first "
                f"frame: pass the actions between the context's frames, [B, T-1, A] = ({b}, {t - 1}, {a}); "
                f"got {None if actions is None else tuple(actions.shape)}"
            )
        frames_device, device = dist.device, next(self.heading_dynamics.parameters()).device
        dist = dist.to(device)
        acts = torch.cat([torch.zeros(b, k - 1, a, device=device), actions.to(device).float()], dim=1)
        m = self.cfg.odometer_trail
        trail = torch.full((b, m, 2), float("nan"), device=device)
        trail[:, -1] = torch.stack([dist[:, 0], torch.zeros_like(dist[:, 0])], dim=1)
        headings = [trail[:, -1, 1]]
        for i in range(t - 1):
            step = dist[:, i + 1] - dist[:, i]
            with torch.no_grad():
                turn = self.heading_dynamics(trail, step, acts[:, i : i + k])
            nxt = torch.stack([dist[:, i + 1], trail[:, -1, 1] + turn], dim=1)
            trail = torch.cat([trail[:, 1:], nxt[:, None]], dim=1)
            headings.append(nxt[:, 1])
        return torch.stack([dist, torch.stack(headings, dim=1)], dim=2).to(frames_device)

    def _script_map(
        self,
        scripts: Sequence[Script] | None,
        index: torch.Tensor | None,
        odometer: torch.Tensor | None,
        context_uint8: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> torch.Tensor | None:
        """The script map of the frame made (``worldsim.model.script_map``), ``[B, 4, H, W]``, or
        ``None`` for a generator without one. The camera is placed one step on from the last
        context frame: the odometer's distance plus the step between the last two frames. A context
        with one real frame (an episode's start) has no step to read, and the map lags the car by
        that first step: training sees the same, and only an agent in view at the first frame (an
        out-of-distribution lead car 10-13 m ahead) is drawn a few pixels behind."""
        if not self.cfg.script_map:
            return None
        b = context_uint8.shape[0]
        if scripts is None or len(scripts) != b:
            raise ValueError(
                "this generator is shown the agents its prompts script (script_map): pass scripts, one "
                f"per world (worldsim.scenes.script_of(spec)); got {None if scripts is None else len(scripts)} "
                f"for {b} worlds"
            )
        if index is None:
            raise ValueError(
                "a script map draws the agents where the script puts them at the frame's time: pass "
                "frame_index"
            )
        camera = (
            torch.zeros(b, device=context_uint8.device) if odometer is None else latest_distance(odometer)
        )
        if self.cfg.odometer and self.cfg.context > 1:
            moved = context_mask[:, -2] & context_mask[:, -1]
            step = self.odometer_step(context_uint8[:, -2], context_uint8[:, -1])
            if self.cfg.odometer_dynamics:  # the trail's last step: the distance the rollout counted
                distances = distance_trail(odometer)
                step = torch.where(known_step(distances), distances[:, -1] - distances[:, -2], step)
            camera = camera + moved * torch.nan_to_num(step)
        return paint(scripts, index, camera, self.cfg.script_map_camera, self.cfg.height, self.cfg.width)

    def _frame_index(self, frame_index: torch.Tensor | int | None, b: int, device: torch.device):
        """``frame_index`` as ``int64[b]`` on ``device``; required of a generator with a clock."""
        if frame_index is None:
            if self.cfg.clock_frames:
                raise ValueError(
                    f"this generator is told the index of the frame it makes (clock_frames="
                    f"{self.cfg.clock_frames}): pass frame_index"
                )
            return None
        index = torch.as_tensor(frame_index, device=device).long()
        index = index.expand(b) if index.ndim == 0 else index
        if index.shape != (b,) or (index < 0).any():
            raise ValueError(
                f"frame_index must be one index >= 0 or one per world, shape ({b},); got {tuple(index.shape)} "
                f"with minimum {int(index.min()) if index.numel() else None}"
            )
        return index

    def _context_channels(self, context: torch.Tensor) -> torch.Tensor:
        """The context as the networks read it: ``[B, K, 3, H, W]`` to ``[B, C, H, W]``."""
        b, k, c, h, w = context.shape
        pixels = context.permute(0, 3, 4, 1, 2)  # [B, H, W, K, 3]
        parts = [pixels.reshape(b, h, w, k * c)]
        if self.cfg.context_differences and k > 1:
            # Velocities are what a next frame depends on most; differences hand them to the first layer.
            parts.append((pixels[:, :, :, 1:] - pixels[:, :, :, :-1]).reshape(b, h, w, (k - 1) * c))
        return torch.cat(parts, dim=3).permute(0, 3, 1, 2)

    def _flow(self, ctx: torch.Tensor, cond_args: tuple, moves: torch.Tensor | None = None) -> torch.Tensor:
        """The displacement field ``[B, 2, H, W]`` in pixels (u, v) from the context channels and, with
        ``flow_motion``, the colours' moves in the clean context (``colour_moves``); it reads the
        conditions as the denoiser does, at a fixed noise level."""
        b = ctx.shape[0]
        cond = self._cond(torch.zeros(b, device=ctx.device), *cond_args)
        if not self.cfg.flow_motion:
            return FLOW_SCALE_PX * self.flow_net(ctx, cond).float()
        if moves is None:
            raise ValueError("this generator's flow reads the context's moves (flow_motion): pass moves")
        field = FLOW_SCALE_PX * self.flow_net(torch.cat([ctx, moves / FLOW_SCALE_PX], 1), cond).float()
        return field + FLOW_CARRY_GAIN * self.flow_carry * moves[:, -2:]

    def _still_scenery(
        self, context: torch.Tensor, context_mask: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The colours the warp never moves (``flow_still_colours``) as ``[S, 3]`` in [-1, 1], and the
        scenery the clean context ``[B, K, 3, H, W]`` saw behind each pixel in the frames
        ``context_mask`` marks real (``scenery_behind``);
        (None, None) without still colours. Read from the config at each call: a sampling setting
        may be changed on a loaded generator."""
        if not self.cfg.flow_still_colours:
            return None, None
        colours = torch.tensor(self.cfg.flow_still_colours, dtype=torch.float32, device=device) / 127.5 - 1.0
        return colours, scenery_behind(context, colours, context_mask)

    def _object_moves(
        self,
        flow: torch.Tensor,
        context_uint8: torch.Tensor,
        context_mask: torch.Tensor,
        action: torch.Tensor,
        prompt: torch.Tensor,
    ) -> torch.Tensor:
        """``flow`` with each object's pixels in the last frame set to the move its dynamics predict
        (``object_dynamics``), where it was seen in every context frame the mask marks real, and all
        of them are real; elsewhere (an object just entering, a rollout's first frames) the flow's.
        With ``object_start_path`` the frames before an episode's start (the context's leading
        padding) hold each object where the prompt's free path had it (``fill_before_start``), so
        the dynamics move the objects from the first step."""
        colours, properties, present, agent, before = self._object_description(prompt)
        centroid, count = object_tracks(context_uint8, colours)
        whole = context_mask.bool()
        if before is not None:
            centroid, whole = fill_before_start(centroid, whole, before)
        tracked = present & ~torch.isnan(centroid).any(-1).any(1) & whole.all(1, keepdim=True)
        moves = self.object_dynamics(
            centroid.nan_to_num(0.0), count[:, -1], properties, tracked, agent, action.float()
        )
        last = context_uint8[:, -1]
        out = flow.clone()
        for n in range(self.cfg.object_max):
            on = shows_colour(last, colours[:, n]) & tracked[:, n].view(-1, 1, 1)
            out = torch.where(on[:, None], moves[:, n].view(-1, 2, 1, 1), out)
        return out

    def _moves(self, context_uint8: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor | None:
        """The colours' moves the flow reads (``flow_motion``), from the context before any noise."""
        return colour_moves(context_uint8, context_mask) if self.cfg.flow_motion else None

    def _net(
        self,
        ctx: torch.Tensor,
        cond_args: tuple,
        warped: torch.Tensor | None = None,
        script_map: torch.Tensor | None = None,
    ):
        """The raw network ``F(x, c_noise)`` for fixed context channels (``_context_channels``),
        conditions ``(ctx_sigma, prompt, actions, context_mask, frame_index)``, with a flow the
        warped last frame and with a script map the map, as EDM calls it."""
        extra = [ctx] + [x for x in (warped, script_map) if x is not None]

        def net(x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            cond = self._cond(c_noise.expand(x.shape[0]), *cond_args)
            # one copy of the input, channels-last as the context is (the stem reads it fastest so)
            x = x.contiguous(memory_format=torch.channels_last)
            return self.unet(torch.cat([x, *extra], dim=1), cond)

        return net

    # -- training -------------------------------------------------------------------------------

    def draw_noise(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """All randomness of ``loss`` for a batch, drawn at once: data-parallel ranks draw the global
        batch's noise with a shared generator and each takes its slice, so N ranks compute exactly
        what one process computes."""
        cfg, k = self.cfg, self.cfg.context
        return {
            "context_use": torch.rand(batch_size, generator=generator) < cfg.context_noise_prob,
            "context_level": torch.rand(batch_size, generator=generator),
            "context_noise": torch.randn(batch_size, k, 3, cfg.height, cfg.width, generator=generator),
            **draw_training_noise((batch_size, 3, cfg.height, cfg.width), generator),
            **self._draw_dither(batch_size, generator, "cpu"),
            **self._draw_warp_pick(batch_size, generator),
        }

    def _draw_warp_pick(self, batch_size: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Which rows learn their change on top of the *predicted* warp (``loss``'s
        ``predicted_warp_share``): drawn last and only with a flow, so generators without one draw
        what they drew before."""
        if not self.cfg.flow_channels:
            return {}
        return {"warp_pick": torch.rand(batch_size, generator=generator)}

    def loss(
        self,
        context_uint8: torch.Tensor,
        actions: torch.Tensor,
        target_uint8: torch.Tensor,
        captions: list[str],
        context_mask: torch.Tensor,
        noise: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        prompt: torch.Tensor | None = None,
        kind: str = "l2",
        huber_c: float = 0.03,
        undo_context_noise: bool = False,
        frame_index: torch.Tensor | None = None,
        odometer_m: torch.Tensor | None = None,
        scripts: Sequence[Script] | None = None,
        flow_target: torch.Tensor | None = None,
        flow_weight: torch.Tensor | None = None,
        predicted_warp_share: float = 0.0,
        flow_kind: str = "l2",
        frame_rows: torch.Tensor | None = None,
        frame_scale: float = 1.0,
    ) -> torch.Tensor:
        """EDM loss of the next frame (plus, with a flow, ``FLOW_LOSS_WEIGHT`` times the flow's
        weighted mean error in pixels, ``flow_error``). ``context_uint8[B,K,H,W,3]``, ``actions[B,K,A]`` (the last
        one leads to the target), ``target_uint8[B,H,W,3]``, ``context_mask[B,K]``,
        ``frame_index[B]`` the target's index in its episode (needed with a clock), ``odometer_m[B]`` the
        distance travelled at the last context frame (needed with an odometer; with a trail ``[B, M]``,
        at the last M frames, NaN before the episode's first), ``scripts`` one
        ``Script`` per row (needed with a script map); ``noise`` from
        ``draw_noise`` (drawn here with ``generator`` when not given); ``prompt`` the captions'
        embeddings when the caller already has them (encoded here otherwise); ``kind`` and
        ``huber_c`` choose the error (``edm.training_loss``). A generator with a flow needs
        ``flow_target[B,2,H,W]`` (the true displacement in pixels, ``train.flow.object_flow``) and
        ``flow_weight[B,1,H,W]``; the change it learns is the one left after the true warp, or, in a
        ``predicted_warp_share`` of the rows, after the warp by the field the flow predicts (no
        gradient through it): sampling draws the change on a predicted warp, whose whole-pixel misses
        and split regions a change trained only on true warps never saw. ``flow_kind`` chooses the
        flow's error as ``flow_error`` takes it. ``frame_rows`` (bool[B]): the rows whose frame is
        learned; the others teach a flow only (their frame loss counts as zero in the mean over the
        B rows). ``frame_scale`` multiplies the frame term (not the flow's): the caller, which knows
        how many rows are kept across data-parallel ranks, makes it the mean over the kept rows.

        ``undo_context_noise`` (a generator without a flow only: the warp reads flat colours): the
        change to learn is taken from the *noise-augmented* last context frame, so undoing the noise
        is part of it. Taken from the clean frame (the default), the model learns that what is not
        clean in its context is not its business, and at sampling it carries its own residue (faint
        ghosts where objects were) forward for ever; taken from the noisy one, it learns to put a
        frame back to the clean scene. Sampling is the same either way and adds the
        change to the un-noised last frame: the sampling context noise (0.02, 2.6 grey levels) the
        change would undo is mostly below ``min_change_levels`` and dropped; a few pixels in a
        thousand pass. (Sampling such a model with no context noise scored alike: README.)"""
        cfg = self.cfg
        if undo_context_noise and cfg.flow_channels:
            raise ValueError(
                "undo_context_noise is for generators without a flow: the warp would find its regions "
                "and still scenery in the noisy last frame"
            )
        device = context_uint8.device
        context, target = to_float(context_uint8), to_float(target_uint8)
        b = context.shape[0]
        noise = noise if noise is not None else self.draw_noise(b, generator)
        noise = {k: v.to(device) for k, v in noise.items()}
        last, prev = context[:, -1], context[:, -2] if cfg.context > 1 else context[:, -1]
        weight = 1.0 + cfg.motion_weight * motion_mask(last, prev, target)
        ctx_sigma = noise["context_level"] * cfg.context_noise_max * noise["context_use"].float()
        noisy_ctx = context + ctx_sigma.view(b, 1, 1, 1, 1) * noise["context_noise"]
        ref = noisy_ctx[:, -1] if undo_context_noise else last
        prompt = self.encode_prompts(captions) if prompt is None else prompt
        index = self._frame_index(frame_index, b, device)
        odometer = self._odometer(odometer_m, b, device)
        cond_args = (ctx_sigma, prompt, actions, context_mask, index, odometer)
        script_map = self._script_map(
            scripts, index, odometer, context_uint8.to(device), context_mask.to(device)
        )
        ctx = self._context_channels(noisy_ctx)
        flow_loss, warped = None, None
        if cfg.flow_channels:
            if flow_target is None or flow_weight is None:
                raise ValueError(
                    "this generator has a flow (flow_channels): pass flow_target and flow_weight"
                )
            flow_target, flow_weight = flow_target.to(device).float(), flow_weight.to(device).float()
            predicted = self._flow(ctx, cond_args, self._moves(context_uint8.to(device), context_mask))
            err = flow_error(predicted, flow_target, flow_kind)
            flow_loss = (flow_weight * err).sum() / flow_weight.sum().clamp_min(1.0)
            field = flow_target
            if predicted_warp_share > 0:
                pick = (noise["warp_pick"] < predicted_warp_share).view(b, 1, 1, 1)
                field = torch.where(pick, predicted.detach().float(), flow_target)
            warped = warp(
                ref, field, noise.get("dither"), *self._still_scenery(context, context_mask, device)
            )
            ref = warped
        clean = target - ref if cfg.target == "delta" else target
        net = self._net(ctx, cond_args, warped, script_map)
        draws = {"level": noise["level"], "at_max": noise["at_max"], "noise": noise["noise"]}
        if frame_rows is not None:
            weight = weight * frame_rows.to(device).view(b, 1, 1, 1)
        frame = training_loss(net, clean, cfg.edm, weight=weight, draws=draws, kind=kind, huber_c=huber_c)
        frame = frame * frame_scale
        return frame if flow_loss is None else frame + FLOW_LOSS_WEIGHT * flow_loss

    # -- sampling -------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_next(
        self,
        context_uint8: torch.Tensor,
        actions: torch.Tensor,
        prompt: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        steps: int | None = None,
        context_noise: float | None = None,
        generator: torch.Generator | None = None,
        noise: dict[str, torch.Tensor] | None = None,
        precision: str | None = None,
        frame_index: torch.Tensor | int | None = None,
        odometer_m: torch.Tensor | float | None = None,
        scripts: Sequence[Script] | None = None,
    ) -> torch.Tensor:
        """Sample next frames ``uint8[B,H,W,3]`` from ``context_uint8[B,K,H,W,3]``, ``actions[B,K,A]``
        and prompt embeddings ``prompt[B,P]`` (from ``encode_prompts``, computed once per rollout).
        ``frame_index`` (``[B]`` or one for all) is the index in the episode of the frame made, 0 for
        the reset frame; a generator with a clock or a script map needs it, others ignore it. ``odometer_m`` (the same)
        is the distance the camera has travelled at the last context frame (``odometer_step``), 0 at
        the reset frame; a generator with an odometer needs it, others ignore it. ``scripts``, one
        ``Script`` per world (``worldsim.scenes.script_of``), the agents each prompt scripts: a
        generator with a script map needs them, others ignore them.
        ``steps``, ``context_noise`` and ``precision`` default to the config's sampling settings.

        All randomness comes from ``generator``, or from ``noise`` (``draw_sampling_noise``) when the
        caller draws it: a batch of worlds with one stream each samples what each world alone would.
        """
        cfg = self.cfg
        device = prompt.device
        context_uint8 = context_uint8.to(device)
        clean = to_float(context_uint8)  # before the context noise: the warp reads it
        context = clean
        b = context.shape[0]
        steps = steps or cfg.sampling_steps
        noise = noise if noise is not None else self.draw_sampling_noise(b, generator, device, steps)
        if cfg.sampling_eta > 0 and steps > 1 and "renoise" not in noise:
            raise ValueError(
                f"ancestral sampling (sampling_eta {cfg.sampling_eta}) in {steps} steps needs the noise's "
                "'renoise': draw it with draw_sampling_noise(..., steps)"
            )
        if context_mask is None:
            context_mask = torch.ones(b, cfg.context, dtype=torch.bool, device=device)
        context_mask = context_mask.to(device)
        moves = self._moves(context_uint8, context_mask)
        sigma_c = cfg.sampling_context_noise if context_noise is None else context_noise
        ctx_sigma = torch.full((b,), float(sigma_c), device=device)
        if sigma_c > 0:
            context = context + sigma_c * noise["context"].to(device)
        index = self._frame_index(frame_index, b, device)
        odometer = self._odometer(odometer_m, b, device)
        cond_args = (ctx_sigma, prompt, actions.to(device).float(), context_mask, index, odometer)
        script_map = self._script_map(scripts, index, odometer, context_uint8, context_mask)
        ctx = self._context_channels(context)
        last = clean[:, -1]
        shape = (b, 3, cfg.height, cfg.width)
        bf16 = check_precision(precision or cfg.sampling_precision) == "bfloat16" and bfloat16_is_fast(device)
        base = last
        if cfg.flow_channels:  # the change is drawn on top of the last frame moved by the predicted field
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                flow = self._flow(ctx, cond_args, moves)
            if cfg.object_dynamics:
                flow = self._object_moves(
                    flow, context_uint8, context_mask, actions[:, -1].to(device), prompt
                )
            # the warp in float32: bfloat16 would round a 60 px coordinate by up to 0.25
            dither = noise["dither"].to(device) if "dither" in noise else None
            base = warp(last, flow, dither, *self._still_scenery(clean, context_mask, device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            net = self._net(ctx, cond_args, base if cfg.flow_channels else None, script_map)
            out = sample(
                net,
                shape,
                cfg.edm,
                steps,
                device=device,
                noise=noise["sample"].to(device),
                eta=cfg.sampling_eta,
                renoise=noise["renoise"].to(device) if "renoise" in noise else None,
            ).float()
        delta = out if cfg.target == "delta" else out - base
        if cfg.min_change_levels > 0:
            # Scenes are flat colours: a real change of a pixel is a change of colour, tens of levels.
            # Smaller changes are the sampler's residual noise; left in, it accumulates into drift.
            moved = delta.abs().amax(dim=1, keepdim=True) >= cfg.min_change_levels / 127.5
            delta = delta * moved
        return to_uint8(base + delta)

    @torch.no_grad()
    def reward_termination(
        self,
        frame_uint8: torch.Tensor,
        action: torch.Tensor,
        next_uint8: torch.Tensor,
        prompt: torch.Tensor,
        precision: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads on generated transitions: ``reward[B]`` and ``termination_logit[B]`` from
        ``frame_uint8`` and ``next_uint8`` (``[B,H,W,3]``), ``action[B,A]`` and ``prompt[B,P]``, at the
        sampling precision (default the config's). In bfloat16 the heads take about half the time and
        their outputs move by about 0.005 (README)."""
        device = prompt.device
        bf16 = check_precision(precision or self.cfg.sampling_precision) == "bfloat16" and bfloat16_is_fast(
            device
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            reward, logit = self.heads(
                to_float(frame_uint8.to(device)),
                action.to(device).float(),
                to_float(next_uint8.to(device)),
                self.prompt_embedding(prompt),
            )
        return reward.float(), logit.float()

    def draw_sampling_noise(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        steps: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The randomness of one ``predict_next`` in ``steps`` sampling steps (default the config's):
        context noise, the sampler's starting noise and, for ancestral sampling, its fresh noise."""
        cfg, gen_device = self.cfg, _gen_device(generator, device)
        shape = (batch_size, cfg.context, 3, cfg.height, cfg.width)
        steps = steps or cfg.sampling_steps
        return {
            "context": torch.randn(shape, generator=generator, device=gen_device),
            "sample": torch.randn(
                batch_size, 3, cfg.height, cfg.width, generator=generator, device=gen_device
            ),
            **self._draw_dither(batch_size, generator, gen_device),
            **self._draw_renoise(batch_size, steps, generator, gen_device),
        }

    def _draw_renoise(
        self, batch_size: int, steps: int, generator: torch.Generator | None, device
    ) -> dict[str, torch.Tensor]:
        """Ancestral sampling's fresh noise, one draw per step after the first; drawn last, so a
        generator that samples by Euler's ODE draws exactly what it drew before."""
        if not (self.cfg.sampling_eta > 0 and steps > 1):
            return {}
        shape = (batch_size, steps - 1, 3, self.cfg.height, self.cfg.width)
        return {"renoise": torch.randn(shape, generator=generator, device=device)}

    def _draw_dither(
        self, batch_size: int, generator: torch.Generator | None, device
    ) -> dict[str, torch.Tensor]:
        """A generator with a dithered flow rounds each region's move stochastically (``warp``); drawn
        last, so a generator without one draws exactly what it drew before dithering existed."""
        if not (self.cfg.flow_channels and self.cfg.flow_dither):
            return {}
        shape = (batch_size, 2, self.cfg.height, self.cfg.width)
        return {"dither": torch.rand(shape, generator=generator, device=device)}

    @torch.no_grad()
    def rollout(
        self,
        context_uint8: torch.Tensor,
        past_actions: torch.Tensor,
        future_actions: torch.Tensor,
        captions: list[str],
        steps: int | None = None,
        generator: torch.Generator | None = None,
        context_mask: torch.Tensor | None = None,
        noise: list[dict[str, torch.Tensor]] | None = None,
        frame_index: torch.Tensor | int | None = None,
        odometer_m: torch.Tensor | float | None = None,
        scripts: Sequence[Script] | None = None,
        start_step_m: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Autoregressive rollout: ``future_actions[B,T,A]`` applied from a real or generated context.

        ``past_actions[B,K-1,A]`` are the actions between the context frames; ``context_mask[B,K]``
        marks padded context frames (False) as at the start of an episode; ``noise``, when the caller
        draws it, one ``draw_sampling_noise`` per step (else ``generator`` is drawn from);
        ``frame_index`` the index of the first frame made and ``odometer_m`` the distance at the last
        context frame (``predict_next``; the rollout adds up the distance of each frame it makes, by
        ``odometer_step``) and ``scripts`` the agents each prompt scripts; ``start_step_m`` the step
        each prompt's speed makes, for worlds that start at an episode's first frame
        (``advance_odometer``). Returns the
        ``T`` generated frames ``uint8[B,T,H,W,3]``.
        """
        device = next(self.parameters()).device
        prompt = self.encode_prompts(captions)
        ctx = context_uint8.to(device)
        b, k = ctx.shape[0], self.cfg.context
        mask = (
            torch.ones(b, k, dtype=torch.bool, device=device)
            if context_mask is None
            else context_mask.to(device)
        )
        acts = torch.cat([past_actions.to(device).float(), future_actions.to(device).float()], dim=1)
        index = self._frame_index(frame_index, b, device)
        odometer = self._odometer(odometer_m, b, device)
        frames = []
        for t in range(future_actions.shape[1]):
            draw = None if noise is None else noise[t]
            nxt = self.predict_next(
                ctx,
                acts[:, t : t + k],
                prompt,
                mask,
                steps=steps,
                generator=generator,
                noise=draw,
                frame_index=None if index is None else index + t,
                odometer_m=odometer,
                scripts=scripts,
            )
            if odometer is not None:
                odometer = self.advance_odometer(odometer, ctx[:, -1], nxt, acts[:, t : t + k], start_step_m)
            frames.append(nxt)
            ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
            mask = torch.cat([mask[:, 1:], torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)
        return torch.stack(frames, dim=1)

    def empty_context(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K copies of ``empty_frame`` and an all-False mask: the context of text-to-video."""
        k = self.cfg.context
        frames = self.empty_frame.expand(batch_size, k, *self.empty_frame.shape).clone()
        return frames, torch.zeros(batch_size, k, dtype=torch.bool, device=frames.device)

    @torch.no_grad()
    def first_frames(
        self,
        captions: list[str],
        steps: int | None = None,
        generator: torch.Generator | None = None,
        scripts: Sequence[Script] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-to-video: a first frame from each prompt alone, returned as a start context
        (``uint8[B,K,H,W,3]``: the frame repeated, and a mask that is True only for the last), the
        same padding a real episode's first window has. With ``first_frame_layout`` the frame is
        drawn over the prompt's layout (``worldsim.model.first_frame``; deterministic, so ``steps``,
        ``generator`` and ``scripts`` go unused), else sampled from an empty context."""
        b, k = len(captions), self.cfg.context
        if self.cfg.first_frame_layout:
            first = draw_first_frames(
                self.first_frame,
                self.tokenizer,
                self.empty_frame,
                captions,
                self.cfg.family,
                self.cfg.script_map_camera,
            )
        else:
            empty, mask = self.empty_context(b)
            actions = torch.zeros(b, k, self.cfg.action_dim, device=empty.device)
            first = self.predict_next(
                empty,
                actions,
                self.encode_prompts(captions),
                mask,
                steps=steps,
                generator=generator,
                frame_index=0,
                odometer_m=0.0,
                scripts=scripts,
            )
        context = first[:, None].expand(b, k, *first.shape[1:]).clone()
        mask = torch.zeros(b, k, dtype=torch.bool, device=first.device)
        mask[:, -1] = True
        return context, mask


def _gen_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device | str:
    return generator.device if generator is not None else device
