"""Each object's next move from where it and its neighbours were: a small learned physics of the flat
colour objects a prompt names, in the frame's pixels.

A flow U-Net reads a ball's speed and its contacts off the context's pixels, and is imprecise where
balls touch: one step from MuJoCo's frames, at the fast bounces of Balls' first second, its move is
off by 1.1-1.8 px on held-out worlds and 0.8-1.0 px on its training worlds (README, "When Balls'
error is made"). Each object is one flat colour, so its track is cheap to read exactly: the centroid
of its colour in every context frame. A network on those tracks (the object's position, its last
K - 1 moves, its size in pixels, its physical properties as the prompt gives them, the action on the
agent, and the same of its two nearest neighbours) predicts the next move; the warp then moves the
object's region whole by it, in place of the flow's field there, and the change U-Net, trained on
warps by the true move, draws the rest (``WorldModel.predict_next``).

The network is fitted apart from the frame model, to the tracks of a dataset's episodes
(``fit_object_dynamics``): first one step from the true tracks, then continued through its own
rollouts of a few steps, so that what it reads back is what it made. Nothing of MuJoCo's state
enters at sampling: the tracks are read off the frames the generator is given or made, the
properties off the prompt (``describe_objects``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch
from torch import nn

TOL_LEVELS = 6
"""A pixel shows an object's colour when it is within this many grey levels of it in every channel
(about the warp's ``COLOUR_TOL``): flat colours differ by tens of levels, and a generator drifts a few."""

NEIGHBOURS = 2
"""How many of the nearest other objects each object reads (Balls has at most three)."""

MOVE_SCALE_PX = 5.0  # moves are a few pixels a step; features of order one
OFFSET_SCALE_PX = 20.0
COUNT_SCALE_PX = 100.0


def shows_colour(frames: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``bool[B, ...]``: the pixels of ``frames[B, ..., 3]`` (integer RGB) within ``TOL_LEVELS`` of
    ``colour[B, 3]`` (one per world) in every channel: where an object of that colour is drawn."""
    shape = (colour.shape[0], *[1] * (frames.ndim - 2), 3)
    diff = frames.to(torch.int16) - colour.to(device=frames.device, dtype=torch.int16).view(shape)
    return diff.abs().amax(-1) <= TOL_LEVELS


def object_tracks(frames_uint8: torch.Tensor, colours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each object is in each frame: the centroid ``(u, v)`` (pixel centres at +0.5, as the
    colour extractor of the metrics counts them) of the pixels within ``TOL_LEVELS`` of its colour,
    ``float[B, T, N, 2]`` (NaN where none), and their count ``float[B, T, N]``.

    ``frames_uint8[B, T, H, W, 3]``; ``colours[B, N, 3]`` integer RGB, one row per object of each
    world (a padding row is ``absent_colour``, which no pixel matches)."""
    if frames_uint8.ndim != 5 or frames_uint8.shape[-1] != 3 or frames_uint8.dtype != torch.uint8:
        raise ValueError(
            f"object_tracks takes frames uint8[B, T, H, W, 3], got {frames_uint8.dtype} {tuple(frames_uint8.shape)}"
        )
    b, t, h, w, _ = frames_uint8.shape
    device = frames_uint8.device
    frames = frames_uint8.to(torch.int16)
    u = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    v = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    centres, counts = [], []
    for n in range(colours.shape[1]):
        mask = shows_colour(frames, colours[:, n]).float()  # [B, T, H, W]
        count = mask.sum((2, 3))
        cu = (mask.sum(2) * u).sum(-1) / count.clamp_min(1.0)
        cv = (mask.sum(3) * v).sum(-1) / count.clamp_min(1.0)
        centre = torch.stack([cu, cv], -1)
        centres.append(torch.where((count > 0)[..., None], centre, torch.nan))
        counts.append(count)
    return torch.stack(centres, 2), torch.stack(counts, 2)


def absent_colour() -> list[int]:
    """The colour of a padding row: -100 in every channel, which no uint8 pixel is within reach of."""
    return [-100, -100, -100]


@dataclass(frozen=True)
class ObjectDescription:
    """What a prompt says of each of its objects, padded to ``max_objects`` rows: colour (uint8 RGB;
    padding ``absent_colour``), physical properties (the family's ``properties``), whether the row
    is an object and whether it is the agent (the first object, which the action drives)."""

    colours: np.ndarray  # int[N, 3]
    properties: np.ndarray  # float32[N, P]
    present: np.ndarray  # bool[N]
    agent: np.ndarray  # bool[N]


def describe_objects(spec: Any, max_objects: int) -> ObjectDescription:
    """The objects of ``spec`` (a parsed prompt) as object dynamics read them: the first
    ``max_objects`` (a prompt may name more than the training data did; those the flow moves). A
    family whose prompts give no physical properties (``Family.properties`` is None) is refused."""
    from worldsim.scenes import family_of
    from worldsim.scenes.colours import rgb_uint8

    fam = family_of(spec)
    if fam.properties is None:
        raise ValueError(
            f"{fam.name}'s prompts give no physical properties of their objects: no object dynamics"
        )
    infos = fam.objects(spec)[:max_objects]
    props = np.asarray(fam.properties(spec), dtype=np.float32)[:max_objects]
    colours = np.array([absent_colour()] * max_objects)
    properties = np.zeros((max_objects, props.shape[1]), np.float32)
    colours[: len(infos)] = [rgb_uint8(i.colour) for i in infos]
    properties[: len(infos)] = props
    present = np.arange(max_objects) < len(infos)
    return ObjectDescription(colours, properties, present, np.arange(max_objects) == 0)


@lru_cache(maxsize=65536)
def described_prompt(text: str, family: str, max_objects: int) -> np.ndarray:
    """``describe_objects`` of a prompt as one flat row, per object its colour, properties and the
    present and agent flags (``float32[max_objects * (5 + P)]``; parsed once per distinct prompt:
    training asks every batch). Read only: the row is shared between calls."""
    from worldsim.scenes import parse_prompt

    d = describe_objects(parse_prompt(text, family), max_objects)
    rows = np.concatenate([d.colours, d.properties, d.present[:, None], d.agent[:, None]], 1)
    return rows.astype(np.float32).reshape(-1)


def start_path_px(text: str, family: str, max_objects: int, steps: int, camera: Any) -> np.ndarray:
    """Where each object a prompt names was ``1..steps`` control steps before the start, on the free
    path the prompt starts it on (``worldsim.scenes.free_path``), as pixel offsets from where it
    starts, seen through ``camera`` (a fixed ``worldsim.model.script_map.ScriptMapConfig``):
    ``float32[max_objects, steps, 2]``, row j - 1 the offset j steps before (zero for padding rows).

    A rollout from an episode's one real frame has no track for its first K - 1 steps, and the flow,
    which then moves the objects, lets them fall behind (10-step errors of 4-15 px on Balls, README).
    The prompt gives each ball's start velocity, and gravity gives its parabola: the moves along it
    before the start are moves like those the dynamics were fitted to (the path goes on through a
    floor or a wall in its way: ``Family.free_path``)."""
    key = json.dumps(camera.to_dict() if hasattr(camera, "to_dict") else camera, sort_keys=True)
    return _start_path_px(text, family, max_objects, steps, key)


@lru_cache(maxsize=65536)
def _start_path_px(text: str, family: str, max_objects: int, steps: int, camera_json: str) -> np.ndarray:
    from worldsim.model.script_map import ScriptMapConfig, project_boxes
    from worldsim.scenes import free_path, parse_prompt

    camera = ScriptMapConfig(**json.loads(camera_json))
    spec = parse_prompt(text, family)
    times = -np.arange(steps + 1) / camera.control_hz  # the start, then 1..steps steps before it
    centres = np.stack([free_path(spec, t) for t in times], 1)[:max_objects]  # [N, steps + 1, 3]
    points = np.zeros((*centres.shape[:2], 6))  # footprints of no size: their box is the point
    points[..., :2], points[..., 2], points[..., 3] = centres[..., :2], centres[..., 2], centres[..., 2]
    box = project_boxes(points.reshape(1, -1, 6), np.zeros(1), camera)[0].reshape(*centres.shape[:2], 4)
    uv = np.stack([box[..., 0] + box[..., 1], box[..., 2] + box[..., 3]], -1) / 2
    out = np.zeros((max_objects, steps, 2), np.float32)
    out[: len(uv)] = uv[:, 1:] - uv[:, :1]
    out.flags.writeable = False  # shared between calls
    return out


def fill_before_start(
    centroid: torch.Tensor, mask: torch.Tensor, before: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A context's tracks ``centroid[B, K, N, 2]`` with the frames before an episode's start (the
    leading padding ``mask[B, K]`` marks False) filled from the first real frame by ``before[B, N,
    K - 1, 2]`` (``start_path_px``: the offset j steps before the start in row j - 1), and which
    frames are now whole, ``bool[B, K]``. A context whose padding is not all before its real frames,
    or that has no real frame, is left as it is."""
    b, k = mask.shape
    mask = mask.bool()
    i = torch.arange(k, device=mask.device)
    first = mask.float().argmax(1)  # the first real frame: the episode's start
    leading = mask.any(1) & (mask == (i[None] >= first[:, None])).all(1)
    steps_before = first[:, None] - i[None]  # [B, K]: > 0 on the padding
    pad = (steps_before > 0) & leading[:, None]
    row = (steps_before - 1).clamp(0, k - 2)
    n = centroid.shape[2]
    offset = torch.gather(before.transpose(1, 2), 1, row[..., None, None].expand(b, k, n, 2))
    anchor = torch.gather(centroid, 1, first.view(b, 1, 1, 1).expand(b, 1, n, 2))
    filled = torch.where(pad[..., None, None], anchor + offset.to(centroid.dtype), centroid)
    return filled, mask | pad


class ObjectDynamics(nn.Module):
    """The next move ``[B, N, 2]`` (pixels) of every object from its track and its neighbours'."""

    def __init__(
        self,
        context: int,
        max_objects: int,
        properties: int,
        action_dim: int,
        width: int,
        frame_hw: tuple[int, int],
    ) -> None:
        super().__init__()
        if context < 2:
            raise ValueError("object dynamics read moves between context frames: a context of at least 2")
        self.context, self.max_objects, self.frame_hw = context, max_objects, frame_hw
        self.neighbours = min(NEIGHBOURS, max_objects - 1)
        moves = 2 * (context - 1)
        self.own_dim = 2 + moves + 1 + properties + 1 + action_dim
        self.other_dim = 1 + 2 + moves + 1 + properties
        self.register_buffer("property_mean", torch.zeros(properties))
        self.register_buffer("property_scale", torch.ones(properties))
        self.net = nn.Sequential(
            nn.Linear(self.own_dim + self.neighbours * self.other_dim, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(
        self,
        centroid: torch.Tensor,
        count: torch.Tensor,
        properties: torch.Tensor,
        present: torch.Tensor,
        agent: torch.Tensor,
        action: torch.Tensor,
    ) -> torch.Tensor:
        """``centroid[B, K, N, 2]`` (every present object seen in every frame), ``count[B, N]`` its
        pixels in the last frame, ``properties[B, N, P]``, ``present`` and ``agent`` bool ``[B, N]``,
        ``action[B, A]`` the action from the last frame to the next. Absent objects move by zero."""
        b, k, n, _ = centroid.shape
        centroid = torch.where(present[:, None, :, None], centroid, 0.0)
        last = centroid[:, -1]
        moves = (centroid[:, 1:] - centroid[:, :-1]).permute(0, 2, 1, 3).reshape(b, n, 2 * (k - 1))
        props = (properties - self.property_mean) / self.property_scale
        is_agent = agent.float()[..., None]
        size = count[..., None] / COUNT_SCALE_PX
        scale = torch.tensor(self.frame_hw[::-1], dtype=last.dtype, device=last.device)
        own = torch.cat(
            [last / scale, moves / MOVE_SCALE_PX, size, props, is_agent, action[:, None] * is_agent], -1
        )
        feats = [own]
        if self.neighbours:
            offset = last[:, None, :, :] - last[:, :, None, :]  # [B, i, j, 2]: j's position from i's
            dist = offset.norm(dim=-1).masked_fill(
                ~present[:, None, :] | torch.eye(n, dtype=torch.bool, device=last.device), math.inf
            )
            order = dist.argsort(-1)[..., : self.neighbours]  # [B, N, neighbours], nearest first

            def pick(x: torch.Tensor) -> torch.Tensor:  # [B, i, j, F] -> the neighbours' rows
                return torch.gather(x, 2, order[..., None].expand(b, n, self.neighbours, x.shape[-1]))

            theirs = torch.cat([moves / MOVE_SCALE_PX, size, props], -1)
            here = torch.isfinite(torch.gather(dist, 2, order))[..., None].float()
            slots = torch.cat(
                [
                    here,
                    pick(offset / OFFSET_SCALE_PX),
                    pick(theirs[:, None].expand(b, n, n, theirs.shape[-1])),
                ],
                -1,
            )
            feats.append((slots * here).reshape(b, n, self.neighbours * self.other_dim))
        return self.net(torch.cat(feats, -1)) * present[..., None].float()

    def rollout(
        self,
        centroid: torch.Tensor,
        count: torch.Tensor,
        properties: torch.Tensor,
        present: torch.Tensor,
        agent: torch.Tensor,
        actions: torch.Tensor,
    ) -> torch.Tensor:
        """Positions ``[B, R, N, 2]`` after each of ``R`` steps from a context ``centroid[B, K, N, 2]``,
        each move read back as the next step's track; ``actions[B, R, A]`` the actions of the steps."""
        track, made = centroid, []
        for r in range(actions.shape[1]):
            nxt = track[:, -1] + self(track, count, properties, present, agent, actions[:, r])
            made.append(nxt)
            track = torch.cat([track[:, 1:], nxt[:, None]], 1)
        return torch.stack(made, 1)


@dataclass
class TrackSet:
    """Every episode's object tracks as the fit reads them, padded to the longest episode:
    ``centroid[E, T, N, 2]`` (NaN where unseen or past the end), ``count[E, T, N]``,
    ``actions[E, T, A]`` (the action from frame t to t + 1), ``properties[E, N, P]``, ``present``
    and ``agent`` ``[E, N]``, ``frames[E]`` the frames each episode has."""

    centroid: torch.Tensor
    count: torch.Tensor
    actions: torch.Tensor
    properties: torch.Tensor
    present: torch.Tensor
    agent: torch.Tensor
    frames: torch.Tensor

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, rows: torch.Tensor) -> TrackSet:
        return TrackSet(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def dataset_tracks(dataset: Any, max_objects: int) -> TrackSet:
    """The tracks of every episode of ``dataset`` (``worldsim.data.loader.Dataset``), read off its
    frames by ``object_tracks`` as sampling reads them, with each prompt's description."""
    tracks, counts, actions, described = [], [], [], []
    for i in range(len(dataset)):
        e = dataset.episode(i)
        d = describe_objects(e.spec, max_objects)
        c, n = object_tracks(torch.from_numpy(e.frames)[None], torch.from_numpy(d.colours)[None])
        tracks.append(c[0])
        counts.append(n[0])
        actions.append(torch.from_numpy(e.actions))
        described.append(d)
    frames = torch.tensor([len(t) for t in tracks])
    longest, e_count = int(frames.max()), len(tracks)
    centroid = torch.full((e_count, longest, max_objects, 2), torch.nan)
    count = torch.zeros(e_count, longest, max_objects)
    acted = torch.zeros(e_count, longest, actions[0].shape[1])
    for i, (c, n, a) in enumerate(zip(tracks, counts, actions, strict=True)):
        centroid[i, : len(c)], count[i, : len(n)], acted[i, : len(a)] = c, n, a
    return TrackSet(
        centroid,
        count,
        acted,
        torch.from_numpy(np.stack([d.properties for d in described])),
        torch.from_numpy(np.stack([d.present for d in described])),
        torch.from_numpy(np.stack([d.agent for d in described])),
        frames,
    )


def _windows(
    tracks: TrackSet, rows: torch.Tensor, start: torch.Tensor, span: int
) -> tuple[torch.Tensor, ...]:
    """Windows of ``span`` frames from ``start`` of episodes ``rows`` where every present object is
    seen in every frame: ``(centroid[B, span, N, 2], count[B, N] at the last context frame,
    properties, present, agent, actions[B, span, A])``."""
    idx = (start[:, None] + torch.arange(span)).clamp(max=tracks.centroid.shape[1] - 1)
    c = tracks.centroid[rows[:, None], idx]
    present = tracks.present[rows]
    seen = (~torch.isnan(c).any(-1) | ~present[:, None]).all(-1).all(-1) & (
        start + span <= tracks.frames[rows]
    )
    return tuple(
        x[seen]
        for x in (
            c.nan_to_num(0.0),
            tracks.count[rows[:, None], idx],
            tracks.properties[rows],
            present,
            tracks.agent[rows],
            tracks.actions[rows[:, None], idx],
        )
    )


def _batch(tracks: TrackSet, size: int, span: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    rows = torch.randint(0, len(tracks), (size,), generator=gen)
    start = (torch.rand(size, generator=gen) * (tracks.frames[rows] - span + 1).clamp_min(1)).long()
    return _windows(tracks, rows, start, span)


def rollout_error_px(module: ObjectDynamics, tracks: TrackSet, start: int, horizon: int) -> float:
    """Mean distance (px) from the true track of each present object over ``horizon`` steps rolled out
    from the ``K`` frames before ``start``, over the episodes long enough (NaN if none)."""
    k = module.context
    rows = torch.arange(len(tracks))
    c, count, props, present, agent, actions = _windows(
        tracks, rows, torch.full_like(rows, start - k), k + horizon
    )
    if not len(c):
        return math.nan
    with torch.no_grad():
        made = module.rollout(
            c[:, :k], count[:, k - 1], props, present, agent, actions[:, k - 1 : k - 1 + horizon]
        )
    err = (made - c[:, k:]).norm(dim=-1)
    mask = present[:, None].expand_as(err)
    return float(err[mask].mean())


def fit_object_dynamics(
    module: ObjectDynamics,
    tracks: TrackSet,
    one_step: int = 20000,
    rollout: int = 4000,
    horizon: int = 8,
    batch: int = 512,
    seed: int = 0,
    held_out: float = 0.1,
) -> dict[str, float]:
    """Fit ``module`` to ``tracks``: ``one_step`` Adam steps on one-step moves from the true tracks
    (learning rate 2e-3, warmed up over a tenth, then a cosine), then ``rollout`` steps through its own ``horizon``-step rollouts
    (half the batch, 5e-4), the squared distance to the true positions. A ``held_out`` share of the
    episodes is kept out; returned are its one-step and 30-step rollout errors (from frame K) and
    those of carrying the last move on, to compare."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(tracks), generator=gen)
    cut = max(1, int(round(held_out * len(tracks)))) if len(tracks) > 1 else 0
    test, train = tracks.subset(order[:cut]), tracks.subset(order[cut:])
    props = train.properties[train.present]
    module.property_mean.copy_(props.mean(0))
    module.property_scale.copy_(props.std(0).clamp_min(1e-3) if len(props) > 1 else torch.ones_like(props[0]))
    k = module.context
    module.train().requires_grad_(True)
    for steps, span, lr, size in ((one_step, 1, 2e-3, batch), (rollout, horizon, 5e-4, max(1, batch // 2))):
        if steps <= 0:
            continue
        optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warm_cosine, steps=steps))
        for _ in range(steps):
            c, count, p, present, agent, actions = _batch(train, size, k + span, gen)
            if not len(c):
                continue
            made = module.rollout(
                c[:, :k], count[:, k - 1], p, present, agent, actions[:, k - 1 : k - 1 + span]
            )
            err = ((made - c[:, k:]) ** 2).sum(-1) * present[:, None].float()
            loss = err.sum() / (present.sum() * span).clamp_min(1)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    module.eval().requires_grad_(False)  # kept as fitted: the frame loss never reaches it
    figures = {"episodes": float(len(train)), "held_out_episodes": float(len(test))}
    if len(test):
        figures["one_step_px"] = rollout_error_px(module, test, k, 1)
        figures["rollout30_px"] = rollout_error_px(module, test, k, 30)
        figures["carry_one_step_px"] = _carry_error_px(test, k)
    return figures


def warm_cosine(i: int, steps: int) -> float:
    """The learning rate's factor at step ``i`` of ``steps``: a tenth warming up, then a cosine to 0."""
    return min(1.0, (i + 1) / max(1, steps // 10)) * 0.5 * (1.0 + math.cos(math.pi * i / steps))


def _carry_error_px(tracks: TrackSet, k: int) -> float:
    """The one-step error of carrying each object's last move on (the bar a fit must clear)."""
    rows = torch.arange(len(tracks))
    c, *_, present, _agent, _actions = _windows(tracks, rows, torch.zeros_like(rows), k + 1)
    if not len(c):
        return math.nan
    err = (2 * c[:, k - 1] - c[:, k - 2] - c[:, k]).norm(dim=-1)
    return float(err[present].mean())
