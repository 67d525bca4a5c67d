"""A first frame from the prompt alone, drawn over a map of where the prompt places each body.

Text-to-video asks a generator for frame 0 with no frame to go on. The frame U-Net learns it from
the share of its rows whose context is empty (``train.first_frame_prob``, 5 %), and it did not:
the Balls generator drew the data's mean frame and no ball, Push's a blur of colours, Drive's its
ego car 10 px off (README, "Text to video"). Its one conditioning vector gives each object's
place as a number, and a convolutional network has no easy way to put a disc where a number says.
The layout map takes that step for it, as Drive's script map does for the agents its prompt
scripts: every body the prompt places (``Family.layout``: the goal band and the balls; the goal
marker, the object and the pusher; the road and the cars), projected through the scene's camera
before it moves and painted in its colour (``worldsim.model.script_map.paint``). A small U-Net reads the map beside the generator's mean
frame and its own embedding of the prompt (a Push box's yaw, which the map's axis-aligned box does
not show) and draws the frame as a change from the map painted over the mean frame: the scenery
without the mean's ghosts, each body's true shape and size. The frame drawn is snapped to the flat
colours of the prompt's scene, as MuJoCo draws it (``snap_to_palette``). Nothing of the truth
enters: the map is the prompt and the camera.

Fitted apart from the frame model, to a dataset's first frames (``fit_first_frame``), before the
generator trains, then kept: the frame loss never reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache, partial

import numpy as np
import torch
from torch import nn

from worldsim.model.object_dynamics import object_tracks, warm_cosine
from worldsim.model.pixels import to_float, to_uint8
from worldsim.model.prompt import PAD, PromptEncoder, PromptEncoderConfig, PromptTokenizer
from worldsim.model.script_map import SCRIPT_MAP_CHANNELS, ScriptMapConfig, paint
from worldsim.model.unet import UNet, UNetConfig

OBJECT_WEIGHT = 10.0
"""Extra loss weight of a pixel whose true colour is not the mean frame's (the bodies, a few percent
of the frame: 1 + 10 there against 1 elsewhere): without it the scenery's many pixels outweigh them."""

NEAR_LEVELS = 24
"""A drawn pixel this near a colour of the scene (levels, in every channel) is that colour; one further
off is read as a blend of two (``snap_to_palette``)."""

DIFFERS = 0.1
"""A pixel differs from the mean frame when a channel is this far off, in [-1, 1] (13 levels)."""


class FirstFrameNet(nn.Module):
    """``F(mean_frame, layout_map, prompt)``: the first frame ``[B, 3, H, W]`` in [-1, 1], as the map
    painted over the mean frame plus a U-Net's change: the bodies start in their flat colours where
    the prompt puts them, and the net learns what the map gets wrong (the mean's ghosts, each body's
    outline and size, a box's turn). Its head starts at zero: an unfitted net draws the painted map."""

    def __init__(self, channels: Sequence[int], prompt: PromptEncoderConfig) -> None:
        super().__init__()
        self.prompt_encoder = PromptEncoder(prompt)
        self.unet = UNet(
            UNetConfig(
                in_channels=3 + SCRIPT_MAP_CHANNELS,
                out_channels=3,
                channels=list(channels),
                blocks_per_level=1,
                attention=False,
                cond_dim=prompt.out_dim,
                unshuffle=2,
            )
        )

    def forward(
        self, mean_frame: torch.Tensor, layout: torch.Tensor, ids: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        # Prompts are padded to the tokenizer's 128 tokens and run to about 50: the encoder masks the
        # padding, so cutting it at the batch's longest prompt changes nothing but the cost.
        n = max(1, int((ids != PAD).sum(1).max()))
        cond = self.prompt_encoder(ids[:, :n], values[:, :n])
        return painted(mean_frame, layout) + self.unet(torch.cat([mean_frame, layout], 1), cond)


def painted(mean_frame: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """The layout's colours over the mean frame, as far as they cover each pixel (``[B, 3, H, W]``)."""
    return mean_frame * (1 - layout[:, :1]) + layout[:, 1:]


@lru_cache(maxsize=65536)
def _layout_of_prompt(text: str, family: str) -> tuple:
    from worldsim.scenes import layout_of, parse_prompt

    return layout_of(parse_prompt(text, family))


def _constant(feet: tuple, t_s: float) -> tuple:
    return feet


def layout_maps(
    captions: Sequence[str],
    family: str,
    camera: ScriptMapConfig,
    height: int,
    width: int,
    device: torch.device,
) -> torch.Tensor:
    """``float[B, 4, H, W]``: each prompt's bodies where it starts them, as a script map paints them
    (coverage, then colour times coverage). A family whose prompts give no layout is refused."""
    scripts = [partial(_constant, _layout_of_prompt(c, family)) for c in captions]
    b = len(captions)
    return paint(scripts, torch.zeros(b), torch.zeros(b, device=device), camera, height, width)


def draw_first_frames(
    net: FirstFrameNet,
    tokenizer: PromptTokenizer,
    mean_frame: torch.Tensor,
    captions: Sequence[str],
    family: str,
    camera: ScriptMapConfig,
) -> torch.Tensor:
    """The first frames ``uint8[B, H, W, 3]`` ``net`` draws for ``captions`` over ``mean_frame``
    (``uint8[H, W, 3]``), in the flat colours of each prompt's scene (``snap_to_palette``)."""
    device = mean_frame.device
    h, w = mean_frame.shape[:2]
    mean = to_float(mean_frame)[None].expand(len(captions), -1, -1, -1)
    ids, values = tokenizer.encode(list(captions))
    out = net(mean, layout_maps(captions, family, camera, h, w, device), ids.to(device), values.to(device))
    return snap_to_palette(to_uint8(out), captions, family)


@lru_cache(maxsize=65536)
def _palette_of_prompt(text: str, family: str) -> np.ndarray:
    from worldsim.metrics.objects import palette_for
    from worldsim.scenes import parse_prompt

    return np.asarray(palette_for(parse_prompt(text, family)).rgb, np.int16)


def snap_to_palette(frames: torch.Tensor, captions: Sequence[str], family: str) -> torch.Tensor:
    """Each pixel of ``frames`` (``uint8[B, H, W, 3]``) set to a colour of its prompt's scene (the
    family's scenery and the prompt's objects, ``worldsim.metrics.objects.palette_for``). MuJoCo
    renders flat colours, every pixel within a level of one of them; a net draws a body's edge as a
    blend of it and what is behind, which the flow's warp, moving regions of one flat colour, would
    leave behind, and which the object check counts as a body out of size. A pixel within
    ``NEAR_LEVELS`` of a colour takes it; one further off is read as the blend of two palette
    colours that comes nearest it and takes the one it holds more of: an edge between the orange
    pole and the grey backdrop is orange or grey, never the yellow ball that the nearest single
    colour to it would be."""
    out = torch.empty_like(frames)
    for i, text in enumerate(captions):
        palette = torch.from_numpy(_palette_of_prompt(text, family)).to(frames.device).float()
        x = frames[i].reshape(-1, 1, 1, 3).float()  # [M, 1, 1, 3] against pairs (a, b) [C, C, 3]
        a, b = palette[:, None, :], palette[None, :, :]
        d = a - b
        share = (((x - b) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-6)).clamp(0, 1)  # of a, [M, C, C]
        residual = (x - (b + share[..., None] * d)).square().sum(-1)
        pair = residual.flatten(1).argmin(1)
        first, second = pair // len(palette), pair % len(palette)
        more_a = share.flatten(1).gather(1, pair[:, None])[:, 0] >= 0.5
        nearest = (x[:, 0] - palette).abs().amax(-1).min(-1)  # [M]: levels to the nearest colour
        chosen = torch.where(
            nearest.values <= NEAR_LEVELS, nearest.indices, torch.where(more_a, first, second)
        )
        out[i] = palette[chosen].round().to(torch.uint8).view(frames.shape[1:])
    return out


def fit_first_frame(
    net: FirstFrameNet,
    tokenizer: PromptTokenizer,
    mean_frame: np.ndarray,
    frames: np.ndarray,
    captions: Sequence[str],
    family: str,
    camera: ScriptMapConfig,
    steps: int = 3000,
    batch: int = 32,
    seed: int = 0,
    held_out: float = 0.1,
    progress: bool = True,
) -> dict[str, float]:
    """Fit ``net`` to episodes' first ``frames`` (``uint8[N, H, W, 3]``) and their ``captions``: AdamW
    at 1e-3 (a tenth warming up, then a cosine) on the per-pixel absolute error, weighted
    ``1 + OBJECT_WEIGHT`` where the truth is not the mean frame. A ``held_out`` share of the episodes is kept out; returned
    are its figures, and as bars those of the mean frame and of the map painted over it (what an
    unfitted net draws): the error in grey levels and, per body the prompt names, the share found
    and the centroid error in pixels (``first_frame_figures``). ``progress`` shows a bar: the fit
    takes minutes before a run's first step."""
    if len(frames) != len(captions) or not len(frames):
        raise ValueError(
            f"fit_first_frame needs one caption per frame, got {len(frames)} and {len(captions)}"
        )
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(frames), generator=gen).numpy()
    cut = max(1, int(round(held_out * len(frames)))) if len(frames) > 1 else 0
    test, train = order[:cut], order[cut:]
    h, w = mean_frame.shape[:2]
    mean = to_float(torch.from_numpy(mean_frame))
    truth = torch.from_numpy(frames)
    ids, values = tokenizer.encode(list(captions))
    # painted once: a map is the prompt's, the same at every step
    layouts = layout_maps(list(captions), family, camera, h, w, torch.device("cpu"))
    net.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warm_cosine, steps=max(1, steps)))
    from tqdm.auto import tqdm

    bar = tqdm(range(steps), desc="first frame fit", unit="step", mininterval=5, disable=not progress)
    for _ in bar:
        rows = train[torch.randint(0, len(train), (batch,), generator=gen).numpy()]
        target = to_float(truth[rows])
        out = net(mean.expand(len(rows), -1, -1, -1), layouts[rows], ids[rows], values[rows])
        weight = 1.0 + OBJECT_WEIGHT * ((target - mean).abs().amax(1, keepdim=True) > DIFFERS).float()
        loss = (weight * (out - target).abs()).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    net.eval().requires_grad_(False)  # kept as fitted: the frame loss never reaches it
    figures: dict[str, float] = {"episodes": float(len(train)), "held_out_episodes": float(len(test))}
    if len(test):
        with torch.no_grad():
            drawn = draw_first_frames(
                net, tokenizer, torch.from_numpy(mean_frame), [captions[i] for i in test], family, camera
            )
        caps = [captions[i] for i in test]
        figures.update(first_frame_figures(drawn.numpy(), frames[test], caps, family))
        bars = {
            "mean_frame": np.broadcast_to(mean_frame, frames[test].shape),
            # what an unfitted net draws, snapped as every drawn frame is
            "painted_map": snap_to_palette(
                to_uint8(painted(mean.expand(len(test), -1, -1, -1), layouts[test])), caps, family
            ).numpy(),
        }
        for name, bar in bars.items():
            figures.update(
                {f"{name}_{k}": v for k, v in first_frame_figures(bar, frames[test], caps, family).items()}
            )
    return figures


def first_frame_figures(
    drawn: np.ndarray, truth: np.ndarray, captions: Sequence[str], family: str
) -> dict[str, float]:
    """How far first frames ``drawn`` are from ``truth`` (both ``uint8[N, H, W, 3]``): the mean absolute
    error in grey levels, and over the bodies each caption names (found by their flat colours, as the
    metrics find them), the share ``drawn`` shows and the centroid error (pixels) of those it shows."""
    from worldsim.scenes import family_of, parse_prompt
    from worldsim.scenes.colours import rgb_uint8

    fam = family_of(family)
    found, errors = [], []
    for i, text in enumerate(captions):
        colours = torch.tensor([rgb_uint8(o.colour) for o in fam.objects(parse_prompt(text, family))])[None]
        pair = torch.from_numpy(np.stack([truth[i], drawn[i]]))[None]  # [1, 2, H, W, 3]
        centres, counts = object_tracks(pair, colours)
        seen = counts[0, 0] > 0
        shown = seen & (counts[0, 1] > 0)
        found += shown[seen].tolist()
        errors += (centres[0, 1] - centres[0, 0]).norm(dim=-1)[shown].tolist()
    return {
        "error_levels": float(np.abs(drawn.astype(np.int16) - truth.astype(np.int16)).mean()),
        "bodies_found": float(np.mean(found)) if found else math.nan,
        "centroid_px": float(np.mean(errors)) if errors else math.nan,
    }
