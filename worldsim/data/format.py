"""The on-disk dataset format: one directory, one manifest, one shard per episode.

Layout::

    <dataset>/
      manifest.json            what the dataset is and which shards belong to it
      episodes/ep_000000.npz   one episode per shard (episode index = collection index)
      episodes/ep_000001.npz
      .lock                    held (flock) while a collection writes here

``manifest.json`` (``FORMAT_VERSION`` 1) holds:

- ``format`` (always ``"worldsim-dataset"``) and ``format_version``;
- ``family`` (``"balls"``, ``"push"``, ``"drive"``), ``frame`` (``width``, ``height``, ``channels``),
  ``fps`` (control rate: one frame per action), ``action_space`` (``shape``, ``low``, ``high``,
  ``dtype``), ``state_keys`` (the ``state/<key>`` arrays of every shard);
- ``config``: how it was collected (``env_id``, ``family``, ``split``, ``policy``, ``seed``, ``width``,
  ``height``, ``backend``, ``max_steps``); ``episodes_requested``; ``complete``;
- ``episode_count`` and ``shards``: one entry per finished episode, sorted by ``index``:
  ``{"index", "file", "sha256", "bytes", "steps", "terminated", "env_seed"}``.

A shard is an ``.npz`` written with ``np.savez_compressed`` from plain arrays (no pickle; it is
read with ``allow_pickle=False``). For an episode of ``T`` steps:

==================  ======================  ==================================================
key                 dtype / shape            meaning
==================  ======================  ==================================================
``frames``          uint8 [T+1, H, W, 3]     frame 0 is the reset frame, frame t+1 follows action t
``actions``         float32 [T, 2]           action t is taken at frame t
``rewards``         float32 [T]              reward of transition t -> t+1
``terminated``      bool [T]                 the task ended at t+1 (only the last entry can be True)
``truncated``       bool [T]                 the time limit ended the episode at t+1
``state/<key>``     float64 [T+1, ...]       physical state (SI units) at each frame
``caption``         str (0-d unicode)        the episode's prompt; ``parse_prompt`` gives its spec
``spec_json``       str (0-d unicode)        ``spec_to_dict(spec)`` as JSON
``meta_json``       str (0-d unicode)        ``{"index", "env_seed", "format_version"}`` as JSON
==================  ======================  ==================================================

Every file is written to a temporary file in the same directory and moved into place with
``os.replace``, so a reader never sees half a file. Each shard's sha256 sits in the manifest: a
truncated or altered shard fails to load with an error that names it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.durable import current_umask, fsync_dir, recorded_mismatch

FORMAT_NAME = "worldsim-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EPISODES_DIR = "episodes"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"

ARRAY_KEYS = ("frames", "actions", "rewards", "terminated", "truncated")
TEXT_KEYS = ("caption", "spec_json", "meta_json")
STATE_PREFIX = "state/"


class DatasetError(RuntimeError):
    """A dataset that cannot be used as it is: corrupt, foreign, of another version or config."""


def shard_name(index: int) -> str:
    """The manifest-relative path of episode ``index``'s shard."""
    return f"{EPISODES_DIR}/ep_{index:06d}.npz"


# -- atomic files -------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files; a dataset is for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_temp_files(root: Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    count = 0
    for directory in (root, root / EPISODES_DIR):
        if directory.is_dir():
            for p in directory.glob(f".*{TMP_SUFFIX}"):
                p.unlink(missing_ok=True)
                count += 1
    return count


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on a dataset directory; the OS releases it if the process dies."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(
                f"{root} is being written by another collection (lock {root / LOCK} is held); "
                "wait for it to finish or use another output directory"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# -- shards -------------------------------------------------------------------------------------


def encode_episode(
    frames: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    states: Mapping[str, np.ndarray],
    caption: str,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> bytes:
    """The bytes of one episode shard (see the module docstring for the layout)."""
    arrays: dict[str, np.ndarray] = {
        "frames": np.ascontiguousarray(frames, dtype=np.uint8),
        "actions": np.asarray(actions, dtype=np.float32),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminated": np.asarray(terminated, dtype=bool),
        "truncated": np.asarray(truncated, dtype=bool),
        "caption": np.array(caption, dtype=np.str_),
        "spec_json": np.array(json.dumps(dict(spec), sort_keys=True), dtype=np.str_),
        "meta_json": np.array(json.dumps(dict(meta), sort_keys=True), dtype=np.str_),
    }
    for key, value in states.items():
        arrays[STATE_PREFIX + key] = np.asarray(value, dtype=np.float64)
    check_episode_arrays(arrays, "<episode being written>")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_episode(data: bytes, name: str) -> dict[str, np.ndarray]:
    """The arrays of a shard's bytes, checked for layout; ``name`` is used in error messages."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # zipfile, zlib and numpy raise a zoo of types on damaged files
        raise DatasetError(f"shard {name} is unreadable ({type(e).__name__}: {e}); {REDO_HINT}") from e
    check_episode_arrays(arrays, name)
    return arrays


REDO_HINT = (
    "delete the shard and re-run the same collect command to regenerate it "
    "(collection is deterministic and resumes by redoing missing or damaged episodes)"
)


def check_episode_arrays(arrays: Mapping[str, np.ndarray], name: str) -> None:
    """Raise ``DatasetError`` unless ``arrays`` has the shard layout with consistent lengths."""
    missing = [k for k in (*ARRAY_KEYS, *TEXT_KEYS) if k not in arrays]
    if missing:
        raise DatasetError(f"shard {name} lacks arrays {missing}; {REDO_HINT}")
    frames, actions = arrays["frames"], arrays["actions"]
    t = actions.shape[0] if actions.ndim == 2 else -1
    expect = {
        "frames": (np.uint8, frames.ndim == 4 and frames.shape[0] == t + 1 and frames.shape[-1] == 3),
        "actions": (np.float32, actions.ndim == 2 and t >= 1),
        "rewards": (np.float32, arrays["rewards"].shape == (t,)),
        "terminated": (np.bool_, arrays["terminated"].shape == (t,)),
        "truncated": (np.bool_, arrays["truncated"].shape == (t,)),
    }
    for key, (dtype, shape_ok) in expect.items():
        if arrays[key].dtype != dtype or not shape_ok:
            raise DatasetError(
                f"shard {name}: {key} is {arrays[key].dtype}{list(arrays[key].shape)}, which does not fit "
                f"{t} steps (frames {list(frames.shape)}, actions {list(actions.shape)}); {REDO_HINT}"
            )
    for key, value in arrays.items():
        if key.startswith(STATE_PREFIX) and (value.dtype != np.float64 or value.shape[:1] != (t + 1,)):
            raise DatasetError(
                f"shard {name}: {key} is {value.dtype}{list(value.shape)}, expected float64 with "
                f"{t + 1} rows (one per frame); {REDO_HINT}"
            )


def read_shard(root: Path, entry: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Read, verify (size and sha256 against the manifest ``entry``) and decode one shard."""
    path = root / entry["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"shard {path} listed in the manifest is missing; {REDO_HINT}") from None
    check_shard_bytes(path, data, entry)
    return decode_episode(data, str(path))


def check_shard_bytes(path: Path, data: bytes, entry: Mapping[str, Any]) -> None:
    problem = recorded_mismatch(path, data, entry, "the manifest")
    if problem:
        raise DatasetError(f"shard {problem}; {REDO_HINT}")


# -- manifest -----------------------------------------------------------------------------------


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def read_manifest(root: Path) -> dict[str, Any]:
    """The checked manifest of the dataset at ``root``; ``DatasetError`` if absent, foreign or of
    another format version."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{root} is not a worldsim dataset: {path} does not exist "
            "(create one with `worldsim collect scene=<family> out=<dir>`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(
            f"{path} is not valid JSON ({e}); if a collection was writing it, re-run that collect "
            "command to rebuild it"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f'{path} is not a worldsim dataset manifest (no "format": "{FORMAT_NAME}")')
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format_version {version!r}, but this worldsim reads version {FORMAT_VERSION}; "
            "re-collect the dataset with this version of worldsim (`worldsim collect ...`)"
        )
    required = ("family", "frame", "fps", "action_space", "state_keys", "config", "shards", "episode_count")
    lacking = [k for k in required if k not in manifest]
    if lacking:
        raise DatasetError(f"{path} lacks fields {lacking}; re-collect the dataset")
    if manifest["episode_count"] != len(manifest["shards"]):
        raise DatasetError(
            f"{path} says episode_count {manifest['episode_count']} but lists {len(manifest['shards'])} "
            "shards; re-run the collect command to rebuild it"
        )
    return manifest
