"""Rollout collection: truth envs in parallel, a policy per world, one shard per episode.

``collect("drive", episodes=20, out=Path("data/drive"))`` runs ``num_envs`` copies of the truth env in
a Gymnasium ``AsyncVectorEnv`` and writes the dataset described in ``worldsim.data.format``.

Determinism: episode ``i`` depends only on ``(seed, i)``. Its env is reset with a seed and its
policy gets a fresh ``np.random.Generator``, both drawn from ``SeedSequence(seed, spawn_key=(i,))``,
whatever sub-env runs it. So ``num_envs`` does not change the data, a resumed collection writes the
same episodes an uninterrupted one would, and disjoint episode ranges collected on different
machines (``first_episode``) belong to one dataset.

Resume: the manifest is rewritten (atomically) after every finished episode. Re-running the same
command skips the episodes it lists whose shard still matches its checksum and redoes the rest,
which after a kill is only the episodes that were in flight.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import worldsim
from worldsim.data.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    DatasetError,
    atomic_write_bytes,
    check_shard_bytes,
    encode_episode,
    read_manifest,
    remove_temp_files,
    shard_name,
    write_manifest,
    writer_lock,
)
from worldsim.durable import sha256_bytes
from worldsim.physics.state import STATE_KEYS
from worldsim.scenes import family_of, parse_prompt, spec_to_dict

# Policies live outside the library (``policies/``); like Gymnasium's entry points, they are found
# by name when a collection starts, so importing worldsim never imports them.
POLICY_ENTRY_POINT = "policies:make_policy"

PolicyFactory = Callable[[str, str, np.random.Generator], Any]


@dataclass
class CollectConfig:
    """Settings of ``worldsim collect`` (``configs/collect.yaml`` holds the same defaults)."""

    scene: str = "balls"
    """Scene family (``balls``, ``push``, ``drive``) or a registered env id such as ``worldsim/Drive-v0``."""
    episodes: int = 100
    """Number of episodes to collect (indices ``first_episode`` .. ``first_episode + episodes - 1``)."""
    out: str = "data/balls"
    """Dataset directory; created if absent, resumed if it holds the same collection."""
    num_envs: int = 2
    """Parallel env worker processes."""
    split: str = "id"
    """Scene sampler: in-distribution ``id`` or out-of-distribution ``ood``."""
    policy: str = "mixture"
    """Policy kind given to ``policies.make_policy`` (``random``, ``smooth``, ``scripted``, ``mixture``)."""
    seed: int = 0
    """Root seed; episode i is seeded from (seed, i)."""
    width: int = 64
    """Frame width in pixels."""
    height: int = 64
    """Frame height in pixels."""
    backend: str = "mujoco"
    """Physics engine of the truth env (``mujoco`` or ``pybullet``)."""
    max_steps: int | None = None
    """Episode time limit in steps; ``None`` keeps the env's registered horizon."""
    first_episode: int = 0
    """Index of the first episode, to split one collection across machines by episode range."""
    progress: bool = True
    """Show a progress bar."""


# -- seeds ---------------------------------------------------------------------------------------


def episode_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """``(env reset seed, policy rng)`` of episode ``index``: independent streams of ``(seed, index)``."""
    env_ss, policy_ss = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    return int(env_ss.generate_state(1, np.uint32)[0]), np.random.default_rng(policy_ss)


# -- env side ------------------------------------------------------------------------------------


class _Snapshot:
    """What one sub-env reports per step, kept opaque so the vector env does not batch it.

    ``AsyncVectorEnv`` stacks ndarray infos into one array per key assuming every sub-env has the
    same shape; Balls states have one row per ball (1-3), so stacking would fail or, worse,
    broadcast one world's balls into another's. Passed as an object, each state stays whole.
    """

    __slots__ = ("caption", "spec", "state")

    def __init__(self, caption: str, state: dict[str, np.ndarray], spec: dict | None) -> None:
        self.caption, self.state, self.spec = caption, state, spec


class _SnapshotInfo(gym.Wrapper):
    """Replace ``info`` by ``{"snapshot": _Snapshot}``; the reset's snapshot carries the spec."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        scene = getattr(self.env.unwrapped, "scene", None)
        spec = spec_to_dict(scene) if scene is not None else None
        return obs, {"snapshot": _Snapshot(info["caption"], info["state"], spec)}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return (
            obs,
            reward,
            terminated,
            truncated,
            {"snapshot": _Snapshot(info["caption"], info["state"], None)},
        )


class _EnvFactory:
    """A picklable env constructor for the worker processes."""

    def __init__(self, env_id: str, kwargs: dict[str, Any]) -> None:
        self.env_id, self.kwargs = env_id, kwargs

    def __call__(self) -> gym.Env:
        import worldsim  # noqa: F401  (registers the ids in a spawned worker)

        return _SnapshotInfo(gym.make(self.env_id, **self.kwargs))


def resolve_scene(scene: str) -> tuple[str, str]:
    """``(env_id, family)`` of a family name (``"drive"``) or a registered truth env id."""
    match = re.fullmatch(r"worldsim/(\w+)-v\d+", scene)
    if match:
        env_id, family = scene, match.group(1).lower()
        if env_id not in gym.registry:
            raise ValueError(
                f"env id {env_id!r} is not registered; registered worldsim ids: {_worldsim_ids()}"
            )
    else:
        family, env_id = scene, f"worldsim/{scene.capitalize()}-v0"
    family_of(family)  # raises with the list of families
    return env_id, family


def _worldsim_ids() -> list[str]:
    return sorted(k for k in gym.registry if k.startswith("worldsim/"))


def _load_policy_factory() -> PolicyFactory:
    import importlib

    module, attr = POLICY_ENTRY_POINT.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise ImportError(
            f"collection needs the policies package ({POLICY_ENTRY_POINT}); run from the repository "
            "root or install worldsim, or pass policy_factory="
        ) from e


# -- one episode in the making -------------------------------------------------------------------


class _Rollout:
    """The growing record of one episode in one sub-env."""

    def __init__(self, index: int, env_seed: int, policy: Any) -> None:
        self.index, self.env_seed, self.policy = index, env_seed, policy
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.states: list[dict[str, np.ndarray]] = []
        self.caption = ""
        self.spec: dict | None = None

    def start(self, frame: np.ndarray, snap: _Snapshot) -> None:
        self.caption, self.spec = snap.caption, snap.spec
        self.frames.append(frame)
        self.states.append(snap.state)
        self.policy.reset(snap.state)

    def act(self) -> np.ndarray:
        return np.asarray(self.policy.act(self.states[-1]), dtype=np.float32)

    def add(
        self, action: np.ndarray, frame: np.ndarray, reward: float, term: bool, trunc: bool, snap: _Snapshot
    ):
        if snap.caption != self.caption:
            raise RuntimeError(
                f"episode {self.index}: caption changed mid-episode ({self.caption!r} -> {snap.caption!r})"
            )
        self.actions.append(action)
        self.frames.append(frame)
        self.rewards.append(reward)
        self.terminated.append(term)
        self.truncated.append(trunc)
        self.states.append(snap.state)

    def encode(self, family: str) -> bytes:
        spec = self.spec if self.spec is not None else spec_to_dict(parse_prompt(self.caption, family))
        states = {k: np.stack([s[k] for s in self.states]) for k in self.states[0]}
        return encode_episode(
            frames=np.stack(self.frames),
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards),
            terminated=np.asarray(self.terminated),
            truncated=np.asarray(self.truncated),
            states=states,
            caption=self.caption,
            spec=spec,
            meta={"index": self.index, "env_seed": self.env_seed, "format_version": FORMAT_VERSION},
        )


# -- manifest bookkeeping ------------------------------------------------------------------------


def _new_manifest(family: str, config: dict[str, Any], env: gym.vector.VectorEnv) -> dict:
    space = env.single_action_space
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "worldsim_version": worldsim.__version__,
        "family": family,
        "frame": {"width": config["width"], "height": config["height"], "channels": 3},
        "fps": int(env.metadata.get("render_fps", family_of(family).control_hz)),
        "action_space": {
            "shape": list(space.shape),
            "low": np.asarray(space.low).tolist(),
            "high": np.asarray(space.high).tolist(),
            "dtype": str(space.dtype),
        },
        "state_keys": list(STATE_KEYS[family]),
        "config": config,
        "episodes_requested": 0,
        "first_episode": 0,
        "complete": False,
        "episode_count": 0,
        "shards": [],
    }


def _check_same_collection(root: Path, old: dict, config: dict[str, Any]) -> None:
    differ = {k: (old["config"].get(k), v) for k, v in config.items() if old["config"].get(k) != v}
    if differ:
        lines = ", ".join(f"{k}: dataset has {a!r}, asked {b!r}" for k, (a, b) in differ.items())
        raise DatasetError(
            f"{root} already holds a different collection ({lines}); refusing to mix episodes. "
            "Use another `out` directory, or delete this one to start over."
        )


def _verified_shards(root: Path, manifest: dict) -> dict[int, dict]:
    """The manifest's shards that are intact on disk, by episode index; damaged ones are dropped."""
    good: dict[int, dict] = {}
    for entry in manifest["shards"]:
        path = root / entry["file"]
        try:
            check_shard_bytes(path, path.read_bytes(), entry)
        except (OSError, DatasetError) as e:
            warnings.warn(f"{e} -- it will be collected again", stacklevel=3)
            continue
        good[entry["index"]] = entry
    return good


def _publish(root: Path, manifest: dict, shards: dict[int, dict], requested: range) -> None:
    manifest["shards"] = [shards[i] for i in sorted(shards)]
    manifest["episode_count"] = len(shards)
    manifest["complete"] = all(i in shards for i in requested)
    write_manifest(root, manifest)


# -- collection ----------------------------------------------------------------------------------


def collect(
    scene: str,
    episodes: int,
    out: str | Path,
    num_envs: int = 2,
    split: str = "id",
    policy: str = "mixture",
    seed: int = 0,
    width: int = 64,
    height: int = 64,
    backend: str = "mujoco",
    progress: bool = True,
    max_steps: int | None = None,
    first_episode: int = 0,
    policy_factory: PolicyFactory | None = None,
    context: str | None = "spawn",
) -> Path:
    """Collect episodes ``first_episode .. first_episode + episodes - 1`` of ``scene`` into ``out``.

    ``scene`` is a family (``"drive"``) or a truth env id (``"worldsim/Drive-v0"``). Returns the
    dataset directory. Resumes a collection with the same settings found in ``out`` and refuses a
    directory that holds anything else. ``policy_factory(family, kind, rng)`` defaults to
    ``policies.make_policy``; ``context`` is the multiprocessing start method of the workers
    (``spawn`` by default: workers never inherit a parent's GL context or threads).
    """
    env_id, family = resolve_scene(scene)
    if episodes < 1 or num_envs < 1 or first_episode < 0:
        raise ValueError(
            f"need episodes >= 1, num_envs >= 1, first_episode >= 0; got {episodes}, {num_envs}, {first_episode}"
        )
    if max_steps is None:
        max_steps = gym.spec(env_id).max_episode_steps
    make_policy = policy_factory or _load_policy_factory()
    make_policy(family, policy, np.random.default_rng(0))  # fail now on an unknown kind, not in the loop
    root = Path(out)
    config = {
        "env_id": env_id,
        "family": family,
        "split": split,
        "policy": policy,
        "seed": int(seed),
        "width": int(width),
        "height": int(height),
        "backend": backend,
        "max_steps": None if max_steps is None else int(max_steps),
    }
    requested = range(first_episode, first_episode + episodes)

    with writer_lock(root):
        shards: dict[int, dict] = {}
        old: dict | None = None
        if (root / MANIFEST).exists():
            old = read_manifest(root)
            _check_same_collection(root, old, config)
            shards = _verified_shards(root, old)
        elif any(p.name != ".lock" for p in root.iterdir()):
            raise DatasetError(
                f"{root} is not empty and has no {MANIFEST}; refusing to write a dataset into it. "
                "Choose an empty or new `out` directory."
            )
        remove_temp_files(root)
        todo = [i for i in requested if i not in shards]

        if not todo:
            _publish(
                root,
                {**old, "episodes_requested": episodes, "first_episode": first_episode},
                shards,
                requested,
            )
            return root

        env_kwargs = {"obs": "pixels", "width": width, "height": height, "split": split, "backend": backend}
        if max_steps is not None:
            env_kwargs["max_episode_steps"] = int(max_steps)
        envs = gym.vector.AsyncVectorEnv(
            [_EnvFactory(env_id, env_kwargs)] * min(num_envs, len(todo)),
            autoreset_mode=gym.vector.AutoresetMode.DISABLED,
            context=context,
        )
        try:
            manifest = _new_manifest(family, config, envs)
            manifest.update(episodes_requested=episodes, first_episode=first_episode)
            _publish(root, manifest, shards, requested)
            _run(envs, family, policy, make_policy, seed, todo, root, manifest, shards, requested, progress)
        finally:
            envs.close()
    return root


def _run(
    envs: gym.vector.AsyncVectorEnv,
    family: str,
    kind: str,
    make_policy: PolicyFactory,
    seed: int,
    todo: list[int],
    root: Path,
    manifest: dict,
    shards: dict[int, dict],
    requested: range,
    progress: bool,
) -> None:
    """Step all sub-envs together; a finished sub-env writes its episode and starts the next one."""
    from tqdm.auto import tqdm

    n = envs.num_envs
    queue = list(reversed(todo))
    slots: list[_Rollout | None] = [None] * n

    def assign(j: int) -> int | None:
        if not queue:
            slots[j] = None
            return None
        index = queue.pop()
        env_seed, rng = episode_seeds(seed, index)
        slots[j] = _Rollout(index, env_seed, make_policy(family, kind, rng))
        return env_seed

    bar = tqdm(total=len(todo), unit="ep", desc=f"collect {family}", disable=not progress, smoothing=0.1)
    with bar:
        frames_done, t0 = 0, time.perf_counter()
        mask = np.ones(n, dtype=bool)
        seeds: list[int | None] = [assign(j) for j in range(n)]
        while any(s is not None for s in slots):
            if mask.any():
                obs, info = envs.reset(seed=seeds, options={"reset_mask": mask} if not mask.all() else None)
                for j in np.flatnonzero(mask):
                    if slots[j] is not None:
                        slots[j].start(obs[j], info["snapshot"][j])
            actions = np.zeros((n, *envs.single_action_space.shape), dtype=np.float32)
            for j, slot in enumerate(slots):
                if slot is not None:
                    actions[j] = slot.act()
            obs, rewards, terms, truncs, info = envs.step(actions)
            mask = np.zeros(n, dtype=bool)
            seeds = [None] * n
            for j, slot in enumerate(slots):
                if slot is None:
                    continue  # idle sub-env at the end of a collection: its steps are discarded
                slot.add(
                    actions[j],
                    obs[j],
                    float(rewards[j]),
                    bool(terms[j]),
                    bool(truncs[j]),
                    info["snapshot"][j],
                )
                if not (terms[j] or truncs[j]):
                    continue
                data = slot.encode(family)
                name = shard_name(slot.index)
                atomic_write_bytes(root / name, data)
                shards[slot.index] = {
                    "index": slot.index,
                    "file": name,
                    "sha256": sha256_bytes(data),
                    "bytes": len(data),
                    "steps": len(slot.actions),
                    "terminated": bool(terms[j]),
                    "env_seed": slot.env_seed,
                }
                _publish(root, manifest, shards, requested)
                frames_done += len(slot.frames)
                bar.update(1)
                bar.set_postfix(frames_per_s=f"{frames_done / (time.perf_counter() - t0):.0f}")
                seeds[j] = assign(j)
                mask[j] = seeds[j] is not None


# -- configuration -------------------------------------------------------------------------------


def collect_from_config(cfg: Mapping[str, Any]) -> Path:
    """Run ``collect`` from a config mapping (``configs/collect.yaml`` composed with overrides)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    known = {f.name for f in fields(CollectConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown collect settings {unknown}; settings: {sorted(known)}")
    settings = {**asdict(CollectConfig()), **cfg}
    return collect(**settings)


CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "collect.yaml"


def main(argv: list[str] | None = None) -> Path:
    """``python -m worldsim.data.collect scene=drive episodes=20 out=data/drive``: ``key=value``
    overrides over ``configs/collect.yaml`` (or the ``CollectConfig`` defaults if it is absent)."""
    import sys

    from omegaconf import OmegaConf

    argv = list(sys.argv[1:] if argv is None else argv)
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise SystemExit(
            f"expected key=value overrides, got {bad}; settings: {[f.name for f in fields(CollectConfig)]}"
        )
    base = OmegaConf.structured(CollectConfig)
    if CONFIG_PATH.is_file():
        base = OmegaConf.merge(base, OmegaConf.load(CONFIG_PATH))
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(argv))
    path = collect_from_config(cfg)
    print(f"dataset written to {path}")
    return path


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: worker processes unpickle classes
    # by their importable name (worldsim.data.collect), which must be the one the parent used.
    import importlib

    importlib.import_module("worldsim.data.collect").main()
