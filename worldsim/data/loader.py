"""Reading datasets: checked, lazily loaded episodes and training windows.

``load_dataset(path)`` checks the manifest and every shard's size and sha256, then reads episodes on
demand (``dataset.episode(i)``) and keeps them in memory: datasets are small (400 episodes of 200
64x64 frames are about 1 GB raw, 20 MB on disk).

Window alignment (``WindowSampler`` / ``windows``), for an episode with frames ``f_0 .. f_T`` and
actions ``a_0 .. a_{T-1}`` (``a_t`` is taken at ``f_t`` and leads to ``f_{t+1}``), a window with
``K`` context frames and ``H`` future steps ending its context at frame ``t`` holds::

    context     f_{t-K+1} .. f_t              uint8  [B, K, H_px, W_px, 3]
    actions     a_{t-K+1} .. a_{t+H-1}        float32[B, K+H-1, 2]
    targets     f_{t+1} .. f_{t+H}            uint8  [B, H, H_px, W_px, 3]
    rewards     r_t .. r_{t+H-1}              float32[B, H]
    terminated  d_t .. d_{t+H-1}              bool   [B, H]

so ``targets[:, h]`` follows ``actions[:, K-1+h]`` applied to the frame before it (``context[:, -1]``
for ``h = 0``), and ``rewards[:, h]`` / ``terminated[:, h]`` belong to that same transition. The
first ``K-1`` actions are the ones that led from one context frame to the next. With
``pad_start=True`` windows may start before the reset frame: missing context frames repeat ``f_0``,
missing actions are zeros, and ``context_mask`` is False there, so the first steps of an episode
(and episodes shorter than ``K``, like a crash at step 2) are trained on too. Windows never cross
the end of an episode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.data.format import STATE_PREFIX, DatasetError, read_manifest, read_shard


@dataclass(frozen=True)
class Episode:
    """One recorded episode of ``steps`` transitions (layout in ``worldsim.data.format``)."""

    index: int
    frames: np.ndarray  # uint8[T+1, H, W, 3]
    actions: np.ndarray  # float32[T, 2]
    rewards: np.ndarray  # float32[T]
    terminated: np.ndarray  # bool[T]
    truncated: np.ndarray  # bool[T]
    states: dict[str, np.ndarray]  # float64[T+1, ...] per key, SI units
    caption: str
    spec_dict: dict[str, Any]
    env_seed: int

    @property
    def steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def spec(self) -> Any:
        """The episode's ``SceneSpec``."""
        from worldsim.scenes import spec_from_dict

        return spec_from_dict(self.spec_dict)


class Dataset:
    """A checked dataset directory; ``episode(i)`` reads the ``i``-th listed shard once, then caches."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self._cache: dict[int, Episode] = {}
        self._flat: _Flat | None = None

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        f = self.manifest["frame"]
        return (f["height"], f["width"], f["channels"])

    @property
    def fps(self) -> int:
        return self.manifest["fps"]

    @property
    def complete(self) -> bool:
        """Whether every requested episode was collected (False while a collection is unfinished)."""
        return bool(self.manifest.get("complete", False))

    @property
    def num_steps(self) -> int:
        return sum(e["steps"] for e in self.manifest["shards"])

    def __len__(self) -> int:
        return len(self.manifest["shards"])

    def __iter__(self) -> Iterator[Episode]:
        return (self.episode(i) for i in range(len(self)))

    def episode(self, i: int) -> Episode:
        """The ``i``-th episode in manifest order (``0 <= i < len(self)``; its collection index is
        ``episode(i).index``)."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range; the dataset has {len(self)} episodes")
        if i not in self._cache:
            self._cache[i] = self._read(i)
        return self._cache[i]

    def _read(self, i: int) -> Episode:
        entry = self.manifest["shards"][i]
        arrays = read_shard(self.root, entry)
        name = self.root / entry["file"]
        states = {k[len(STATE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
        if set(states) != set(self.manifest["state_keys"]):
            raise DatasetError(
                f"shard {name} has state keys {sorted(states)}, the manifest says {sorted(self.manifest['state_keys'])}"
            )
        if arrays["frames"].shape[1:] != self.frame_shape or arrays["actions"].shape[0] != entry["steps"]:
            raise DatasetError(
                f"shard {name} holds frames {list(arrays['frames'].shape)} and {arrays['actions'].shape[0]} "
                f"steps; the manifest says {list(self.frame_shape)} frames and {entry['steps']} steps"
            )
        meta = json.loads(str(arrays["meta_json"]))
        return Episode(
            index=int(meta["index"]),
            frames=arrays["frames"],
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            terminated=arrays["terminated"],
            truncated=arrays["truncated"],
            states=states,
            caption=str(arrays["caption"]),
            spec_dict=json.loads(str(arrays["spec_json"])),
            env_seed=int(meta["env_seed"]),
        )

    def load_all(self) -> None:
        """Read every episode into memory now (a training loop wants no disk reads later)."""
        for i in range(len(self)):
            self.episode(i)

    def flat(self) -> _Flat:
        """All episodes concatenated, for fast window gathers; built once."""
        if self._flat is None:
            self._flat = _Flat.build(self)
        return self._flat

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"Dataset({str(self.root)!r}, family={self.family!r}, episodes={len(self)}, steps={self.num_steps}, {state})"


def load_dataset(path: str | Path, verify: bool = True) -> Dataset:
    """Open the dataset at ``path``: manifest checked now; with ``verify`` every shard's size and
    sha256 too (about 1 s per GB), so damage shows at once rather than mid-training. Episodes are
    read lazily and checked again when read."""
    root = Path(path)
    dataset = Dataset(root, read_manifest(root))
    if verify:
        from worldsim.data.format import check_shard_bytes

        for entry in dataset.manifest["shards"]:
            shard = root / entry["file"]
            try:
                data = shard.read_bytes()
            except FileNotFoundError:
                raise DatasetError(
                    f"shard {shard} listed in the manifest is missing; re-run the collect command that made "
                    "this dataset to regenerate it"
                ) from None
            check_shard_bytes(shard, data, entry)
    return dataset


# -- training windows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Flat:
    """Every episode's frames, actions, rewards and terminations back to back, with offsets."""

    frames: np.ndarray  # uint8[sum(T+1), H, W, 3]
    actions: np.ndarray  # float32[sum(T), 2]
    rewards: np.ndarray  # float32[sum(T)]
    terminated: np.ndarray  # bool[sum(T)]
    frame_start: np.ndarray  # int64[E]
    action_start: np.ndarray  # int64[E]
    steps: np.ndarray  # int64[E]
    captions: tuple[str, ...]

    @staticmethod
    def build(dataset: Dataset) -> _Flat:
        if len(dataset) == 0:
            raise DatasetError(f"{dataset.root} has no episodes")
        episodes = list(dataset)
        steps = np.array([e.steps for e in episodes], dtype=np.int64)
        flat = _Flat(
            frames=np.concatenate([e.frames for e in episodes]),
            actions=np.concatenate([e.actions for e in episodes]),
            rewards=np.concatenate([e.rewards for e in episodes]),
            terminated=np.concatenate([e.terminated for e in episodes]),
            frame_start=np.concatenate([[0], np.cumsum(steps + 1)[:-1]]).astype(np.int64),
            action_start=np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64),
            steps=steps,
            captions=tuple(e.caption for e in episodes),
        )
        # Episodes now live once, in the flat arrays: re-point the cache at views of them.
        for i, e in enumerate(episodes):
            f0, a0, t = flat.frame_start[i], flat.action_start[i], steps[i]
            dataset._cache[i] = replace(
                e,
                frames=flat.frames[f0 : f0 + t + 1],
                actions=flat.actions[a0 : a0 + t],
                rewards=flat.rewards[a0 : a0 + t],
                terminated=flat.terminated[a0 : a0 + t],
            )
        return flat


def window_actions(flat: Any, episode: np.ndarray, act_t: np.ndarray) -> np.ndarray:
    """The actions at steps ``act_t[B, N]`` of each ``episode[B]`` of a sampler's flat arrays,
    ``float32[B, N, 2]``, zeros before the episode's first step (a window at its start is padded)."""
    actions = flat.actions[flat.action_start[episode][:, None] + np.maximum(act_t, 0)]
    actions[act_t < 0] = 0.0
    return actions


@dataclass(frozen=True)
class WindowBatch:
    """A batch of training windows; alignment in the module docstring."""

    context: np.ndarray  # uint8[B, K, H_px, W_px, 3]
    context_mask: np.ndarray  # bool[B, K], False where the window starts before the reset frame
    actions: np.ndarray  # float32[B, K+H-1, 2]; actions[:, K-1+h] leads to targets[:, h]
    targets: np.ndarray  # uint8[B, H, H_px, W_px, 3]  (H = horizon)
    rewards: np.ndarray  # float32[B, H]
    terminated: np.ndarray  # bool[B, H]
    captions: list[str]  # [B]
    episode: np.ndarray  # int64[B], position of the episode in the dataset
    t: np.ndarray  # int64[B], frame index of the last context frame
    # uint8[B, H_px, W_px, 3]: MuJoCo's frame at the last context position, where the model made
    # that context frame itself (train.rollouts); None when every context frame is MuJoCo's
    last_truth: np.ndarray | None = None


class WindowSampler:
    """Random windows over every valid position of every episode.

    ``context`` = K frames, ``horizon`` = H future steps (H = 1 is next-frame prediction). Windows are
    drawn uniformly, except a ``motion_share`` of each batch, drawn with probability proportional to
    the number of pixels that change in the window's first transition. Motion is rare where it
    matters most: in Balls, the drop at the start of an episode (76 % of its first 10 transitions
    change more than 80 pixels) is 5 % of all transitions, and 13 % of transitions change nothing.
    """

    def __init__(
        self,
        dataset: Dataset,
        context: int,
        horizon: int = 1,
        pad_start: bool = True,
        motion_share: float = 0.0,
    ) -> None:
        if context < 1 or horizon < 1:
            raise ValueError(f"context and horizon must be >= 1, got context={context}, horizon={horizon}")
        if not 0.0 <= motion_share <= 1.0:
            raise ValueError(f"motion_share must be in [0, 1], got {motion_share}")
        self.dataset, self.context, self.horizon, self.pad_start = dataset, context, horizon, pad_start
        self.motion_share = motion_share
        self.flat = dataset.flat()
        # t, the last context frame, runs over [t_min, T - H] in each episode
        t_min = 0 if pad_start else context - 1
        counts = np.maximum(self.flat.steps - horizon - t_min + 1, 0)
        if counts.sum() == 0:
            raise DatasetError(
                f"no episode of {dataset.root} is long enough for context={context}, horizon={horizon} "
                f"(longest has {int(self.flat.steps.max())} steps)"
            )
        self._episode = np.repeat(np.arange(len(counts)), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._t = np.arange(counts.sum()) - np.repeat(starts, counts) + t_min
        self._motion_cdf = np.cumsum(self.moved_pixels()) if motion_share > 0 else None
        if self._motion_cdf is not None and self._motion_cdf[-1] == 0:
            raise DatasetError(f"motion_share={motion_share}, but nothing moves in {dataset.root}")

    def __len__(self) -> int:
        """Number of distinct windows."""
        return len(self._t)

    def moved_pixels(self, threshold: int = 5, chunk: int = 4096) -> np.ndarray:
        """Per window, the pixels whose value changes by more than ``threshold`` (of 255) from the
        last context frame to the first target."""
        f = self.flat
        now = f.frame_start[self._episode] + self._t
        out = np.empty(len(now), np.int64)
        for lo in range(0, len(now), chunk):
            i = now[lo : lo + chunk]
            diff = np.abs(f.frames[i + 1].astype(np.int16) - f.frames[i].astype(np.int16))
            out[lo : lo + chunk] = (diff.max(-1) > threshold).sum((1, 2))
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> WindowBatch:
        if self._motion_cdf is None:
            pick = rng.integers(0, len(self._t), batch_size)
        else:
            moving = round(self.motion_share * batch_size)
            uniform = rng.integers(0, len(self._t), batch_size - moving)
            by_motion = np.searchsorted(self._motion_cdf, rng.random(moving) * self._motion_cdf[-1], "right")
            pick = np.concatenate([uniform, by_motion])
        return self.gather(self._episode[pick], self._t[pick])

    def gather(self, episode: np.ndarray, t: np.ndarray) -> WindowBatch:
        """The windows whose last context frame is ``t[b]`` in episode ``episode[b]``."""
        f, k, h = self.flat, self.context, self.horizon
        episode, t = np.asarray(episode, np.int64), np.asarray(t, np.int64)
        ctx_t = t[:, None] + np.arange(-k + 1, 1)  # [B, K]
        act_t = t[:, None] + np.arange(-k + 1, h)  # [B, K+H-1]
        next_t = t[:, None] + np.arange(h)  # [B, H]: transitions t .. t+H-1
        fs, as_ = f.frame_start[episode][:, None], f.action_start[episode][:, None]
        actions = window_actions(f, episode, act_t)
        return WindowBatch(
            context=f.frames[fs + np.maximum(ctx_t, 0)],
            context_mask=ctx_t >= 0,
            actions=actions,
            targets=f.frames[fs + next_t + 1],
            rewards=f.rewards[as_ + next_t],
            terminated=f.terminated[as_ + next_t],
            captions=[f.captions[e] for e in episode],
            episode=episode,
            t=t,
        )


def windows(
    dataset: Dataset,
    context: int,
    horizon: int = 1,
    batch_size: int = 32,
    rng: np.random.Generator | None = None,
    pad_start: bool = True,
) -> Iterator[WindowBatch]:
    """An endless stream of ``WindowBatch``es drawn uniformly over all windows (see the module
    docstring for the alignment); take as many as a training run needs."""
    rng = rng if rng is not None else np.random.default_rng()
    sampler = WindowSampler(dataset, context, horizon, pad_start)
    while True:
        yield sampler.sample(batch_size, rng)
