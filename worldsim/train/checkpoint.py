"""Checkpoints: a trained generator on disk, safe to load and safe to resume from.

A checkpoint is a directory::

    <checkpoint>/
      config.json                what it is: format, version, family, architecture, file checksums
      model.safetensors          the model's state_dict (all an inference user needs)
      train_state.safetensors    optional: optimizer tensors (Adam moments, step counters), RNG states
      train_state.json           optional: the non-tensor rest (param_groups, RNG ints, extra state)

Nothing is pickled: ``torch.load`` of an untrusted file runs arbitrary code, and the shipped
checkpoints are downloaded with the package. Tensors go to safetensors, everything else to JSON.

``config.json`` (``FORMAT_VERSION`` 1) holds ``format`` (always ``"worldsim-checkpoint"``),
``format_version``, ``family`` (scene family the model was trained on), ``architecture`` (the model
config dict that rebuilds the network), ``frame_size`` (``{"height", "width"}`` or null),
``data_manifest_sha256`` (sha256 of the training dataset's ``manifest.json`` bytes, or null),
``step``, ``metadata`` (anything the caller adds), ``tensor_aliases`` (tied weights stored once),
``files`` (``{name: {"bytes", "sha256"}}`` for every other file) and ``created_by`` (versions).
The checksums catch a truncated or altered file even where safetensors would still parse it.

Writes are atomic: the whole directory is written into a hidden temporary directory next to the
target, each file fsynced, then renamed into place. A run killed at any moment leaves either the
previous checkpoint or the new one, never half of one; :func:`latest_checkpoint` only ever returns
a checkpoint whose every file matches its checksum.

Training loops use :func:`checkpoint_dir` (``<run>/checkpoints/step_000500``),
:func:`latest_checkpoint` to resume, :func:`load_train_state` to restore optimizer and RNGs, and
:func:`prune_checkpoints` to keep the disk bounded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from worldsim.durable import current_umask, fsync_dir, recorded_mismatch, sha256_bytes

__all__ = [
    "CONFIG",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MODEL",
    "TRAIN_STATE",
    "TRAIN_STATE_JSON",
    "Checkpoint",
    "CheckpointError",
    "TrainState",
    "checkpoint_dir",
    "dataset_manifest_sha256",
    "latest_checkpoint",
    "load_checkpoint",
    "load_train_state",
    "prune_checkpoints",
    "save_checkpoint",
    "verify_checkpoint",
]

FORMAT_NAME = "worldsim-checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL = "model.safetensors"
TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_JSON = "train_state.json"
CHECKPOINTS_SUBDIR = "checkpoints"

_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_SUFFIX = ".tmp"
_OLD_SUFFIX = ".old"  # a checkpoint being replaced; put back if its replacement never arrived
_DEL_SUFFIX = ".del"  # a checkpoint being deleted
_ZIP_MAGIC = b"PK\x03\x04"
_SAVE_HINT = "write checkpoints with worldsim.train.checkpoint.save_checkpoint"
_DAMAGED_HINT = (
    "the checkpoint is damaged; use an earlier one (latest_checkpoint(run_dir) skips damaged ones) "
    "or save it again"
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, foreign, corrupt, of another version or family."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: what :func:`load_checkpoint` returns.

    ``state_dict`` has every key the model had when saved (tied weights share one tensor again);
    ``config`` is the architecture dict passed to :func:`save_checkpoint`.
    """

    path: Path
    family: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    step: int
    frame_size: tuple[int, int] | None  # (height, width)
    data_manifest_sha256: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    has_train_state: bool = False

    def load_into(self, model: nn.Module, *, strict: bool = True) -> nn.Module:
        """Copy the weights into ``model``; a key or shape mismatch names this checkpoint, since it
        almost always means the model was built from a different architecture config."""
        try:
            model.load_state_dict(self.state_dict, strict=strict)
        except RuntimeError as e:
            raise CheckpointError(
                f"the weights in {self.path / MODEL} do not fit this model ({e}); build the model from "
                "the checkpoint's own architecture config (Checkpoint.config)"
            ) from e
        return model


@dataclass
class TrainState:
    """What :func:`load_train_state` gives back besides restoring optimizer and RNGs in place."""

    step: int
    extra: dict[str, Any] = field(default_factory=dict)


# -- paths in a run directory ---------------------------------------------------------------------


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where a training run keeps its checkpoint of ``step``: ``<run_dir>/checkpoints/step_000500``."""
    if step < 0:
        raise ValueError(f"step is {step}; steps count up from 0")
    return Path(run_dir) / CHECKPOINTS_SUBDIR / f"step_{step:06d}"


def _checkpoints_root(run_dir: Path) -> Path:
    sub = run_dir / CHECKPOINTS_SUBDIR
    return sub if sub.is_dir() else run_dir


def _step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``step_N`` directory of a run, oldest first (by N, not by name)."""
    root = _checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def dataset_manifest_sha256(dataset_dir: str | os.PathLike) -> str:
    """The training-data fingerprint a checkpoint records: sha256 of the dataset's manifest bytes."""
    path = Path(dataset_dir) / "manifest.json"
    try:
        return sha256_bytes(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} does not exist; pass the dataset directory the model was trained on"
        ) from None


# -- saving -----------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: Any,
    *,
    family: str,
    frame_size: tuple[int, int] | None = None,
    data_manifest_sha256: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    extra_state: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
    global_rng: bool = True,
) -> Path:
    """Write ``model`` (and, for resuming, its training state) as a checkpoint directory at ``path``.

    ``config`` is the architecture (a dict or a config dataclass) that rebuilds ``model``; it must be
    JSON data (tuples come back as lists). ``frame_size`` is ``(height, width)``.

    The train state is written only when ``optimizer``, ``extra_state`` or ``generators`` is given,
    so an inference checkpoint stays as small as its weights. It holds the optimizer state,
    ``extra_state`` (any tree of tensors, arrays, numbers, strings, lists, tuples and dicts, e.g. an
    LR scheduler's ``state_dict()``; it round-trips exactly), the state of each named generator and,
    with ``global_rng``, the global torch (CPU and CUDA), numpy and python RNG states, which is what
    makes a resumed run continue bit for bit.

    An existing checkpoint at ``path`` is replaced. Returns ``path``.
    """
    path = Path(path)
    if not isinstance(family, str) or not family:
        raise CheckpointError(
            f"family is {family!r}; pass the scene family the model was trained on, e.g. 'balls'"
        )
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step is {step!r}; it must be a non-negative int")
    if data_manifest_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", data_manifest_sha256):
        raise CheckpointError(
            f"data_manifest_sha256 is {data_manifest_sha256!r}; pass dataset_manifest_sha256(dataset_dir)"
        )
    model = _unwrap(model)

    tensors, aliases = _model_tensors(model.state_dict())
    files: dict[str, bytes] = {
        MODEL: safetensors.torch.save(
            tensors, metadata={"format": "pt", "worldsim": FORMAT_NAME, "family": family}
        )
    }
    if optimizer is not None or extra_state is not None or generators is not None:
        state_json, state_tensors = _train_state(optimizer, extra_state, generators, global_rng)
        files[TRAIN_STATE] = safetensors.torch.save(
            state_tensors, metadata={"format": "pt", "worldsim": FORMAT_NAME}
        )
        files[TRAIN_STATE_JSON] = _json_bytes(state_json)

    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "family": family,
        "architecture": _plain_json(config, "config"),
        "frame_size": _frame_size_json(frame_size),
        "data_manifest_sha256": data_manifest_sha256,
        "step": step,
        "metadata": _plain_json(dict(metadata or {}), "metadata"),
        "tensor_aliases": aliases,
        "files": {name: {"bytes": len(data), "sha256": sha256_bytes(data)} for name, data in files.items()},
        "created_by": {"torch": torch.__version__, "safetensors": _version("safetensors")},
    }
    files[CONFIG] = _json_bytes(info)  # last, so a reader of the temp dir never sees config without data
    _write_dir_atomically(path, files)
    return path


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers, so keys carry no prefix."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _model_tensors(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Own, contiguous CPU copies of the state_dict tensors, and ``{alias: stored key}`` for tensors
    that are the very same view of one storage (tied weights), which safetensors refuses twice."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor (a module's "
                "get_extra_state?); model checkpoints store tensors only: keep such settings in the "
                "architecture config"
            )
        if value.is_sparse or value.device.type == "meta":
            raise CheckpointError(
                f"state_dict entry {key!r} is a {value.layout}/{value.device} tensor; store dense tensors"
            )
        ident = (
            value.device,
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            tuple(value.shape),
            value.stride(),
            value.dtype,
        )
        if value.numel() > 0 and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = _own_cpu(value)
    return tensors, aliases


def _own_cpu(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy sharing memory with nothing (safetensors stores whole storages)."""
    return torch.empty(t.shape, dtype=t.dtype, device="cpu").copy_(t.detach())


def _train_state(
    optimizer: torch.optim.Optimizer | None,
    extra_state: Mapping[str, Any] | None,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None,
    global_rng: bool,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    if optimizer is not None:
        state["optimizer_class"] = type(optimizer).__name__
        state["optimizer"] = _encode(optimizer.state_dict(), "optimizer", tensors)
    if extra_state is not None:
        state["extra"] = _encode(dict(extra_state), "extra", tensors)
    gens = {}
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            gens[name] = {"kind": "torch", "state": _encode(gen.get_state(), f"generators.{name}", tensors)}
        elif isinstance(gen, np.random.Generator):
            gens[name] = {
                "kind": "numpy",
                "state": _encode(gen.bit_generator.state, f"generators.{name}", tensors),
            }
        else:
            raise CheckpointError(
                f"generators[{name!r}] is a {type(gen).__name__}; pass torch.Generator or numpy.random.Generator"
            )
    state["generators"] = gens
    if global_rng:
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),  # noqa: NPY002  (legacy code may use it; resume must be exact)
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state["global_rng"] = _encode(rng, "global_rng", tensors)
    return state, tensors


# -- loading ----------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike,
    *,
    family: str | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read and check the checkpoint at ``path`` (its directory, or a file inside it).

    Checks that it is a worldsim checkpoint of this format version, trained on ``family`` (when
    given), and that ``model.safetensors`` matches its recorded size and sha256; any failure raises
    :class:`CheckpointError` naming the file and what to do. The train state is not read (see
    :func:`load_train_state`), so an inference copy may omit it.
    """
    path = _checkpoint_path(path)
    info = _read_info(path)
    _check_family(path, info, family)
    data = _verified_bytes(path, info, MODEL)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise CheckpointError(
            f"{path / MODEL} is not a readable safetensors file ({e}); {_DAMAGED_HINT}"
        ) from e
    device = torch.device(map_location)
    state_dict = {k: v.to(device) for k, v in tensors.items()}
    for alias, key in info.get("tensor_aliases", {}).items():
        if key not in state_dict:
            raise CheckpointError(
                f"{path / CONFIG} ties {alias!r} to {key!r}, which {MODEL} lacks; {_DAMAGED_HINT}"
            )
        state_dict[alias] = state_dict[key]
    frame = info.get("frame_size")
    return Checkpoint(
        path=path,
        family=info["family"],
        config=info.get("architecture") or {},
        state_dict=state_dict,
        step=int(info.get("step", 0)),
        frame_size=(frame["height"], frame["width"]) if frame else None,
        data_manifest_sha256=info.get("data_manifest_sha256"),
        metadata=info.get("metadata") or {},
        has_train_state=all(
            n in info["files"] and (path / n).is_file() for n in (TRAIN_STATE, TRAIN_STATE_JSON)
        ),
    )


def load_train_state(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
    global_rng: bool = True,
) -> TrainState:
    """Restore, in place, what :func:`save_checkpoint` saved to resume: ``optimizer``'s state, each
    named generator's state and (with ``global_rng``) the global torch, numpy and python RNGs.

    Returns the step to continue from and the ``extra_state`` tree, exactly as saved.
    """
    path = _checkpoint_path(path)
    info = _read_info(path)
    if TRAIN_STATE not in info["files"] or TRAIN_STATE_JSON not in info["files"]:
        raise CheckpointError(
            f"{path} has no train state (it was saved without an optimizer, e.g. for inference); "
            "resume from a training checkpoint (latest_checkpoint(run_dir)) or start a new run from its weights"
        )
    tensors = safetensors.torch.load(_verified_bytes(path, info, TRAIN_STATE))
    try:
        state = json.loads(_verified_bytes(path, info, TRAIN_STATE_JSON))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / TRAIN_STATE_JSON} is not valid JSON ({e}); {_DAMAGED_HINT}") from e

    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError(
                f"{path / TRAIN_STATE_JSON} holds no optimizer state (saved with optimizer=None)"
            )
        saved_class = state.get("optimizer_class")
        if saved_class != type(optimizer).__name__:
            raise CheckpointError(
                f"{path} holds {saved_class} state, but the optimizer to restore is a "
                f"{type(optimizer).__name__}; build the same optimizer as the run that saved it"
            )
        try:
            optimizer.load_state_dict(_decode(state["optimizer"], tensors))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"the optimizer state in {path} does not fit this optimizer ({e}); build the optimizer "
                "over the same parameters and param groups as the run that saved it"
            ) from e

    saved_gens = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved_gens:
            raise CheckpointError(
                f"{path} saved no generator named {name!r} (it has {sorted(saved_gens)}); "
                "pass the same generator names to save_checkpoint and load_train_state"
            )
        saved = saved_gens[name]
        value = _decode(saved["state"], tensors)
        if isinstance(gen, torch.Generator) and saved["kind"] == "torch":
            gen.set_state(value)
        elif isinstance(gen, np.random.Generator) and saved["kind"] == "numpy":
            gen.bit_generator.state = value
        else:
            raise CheckpointError(
                f"generator {name!r} was saved as a {saved['kind']} generator, got a {type(gen).__name__}"
            )

    if global_rng and "global_rng" in state:
        rng = _decode(state["global_rng"], tensors)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])  # noqa: NPY002
        random.setstate(rng["python"])
        if "cuda" in rng:
            if torch.cuda.is_available() and torch.cuda.device_count() == len(rng["cuda"]):
                torch.cuda.set_rng_state_all(rng["cuda"])
            else:
                warnings.warn(
                    f"{path} saved the RNG state of {len(rng['cuda'])} CUDA devices, which this "
                    "machine does not have; CUDA randomness will differ from the original run",
                    stacklevel=2,
                )
    return TrainState(step=int(info.get("step", 0)), extra=_decode(state.get("extra", {}), tensors))


def _checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint directory ``path`` names, or a clear error for anything that is not one."""
    path = Path(path)
    if path.is_file():
        if path.name in (CONFIG, MODEL, TRAIN_STATE, TRAIN_STATE_JSON):
            return path.parent
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
            raise CheckpointError(
                f"{path} is a pickle (torch.save) file, not a worldsim checkpoint; worldsim never unpickles "
                "because that can run arbitrary code. A worldsim checkpoint is a directory with "
                f"{MODEL} and {CONFIG}; {_SAVE_HINT}"
            )
        raise CheckpointError(
            f"{path} is a file, not a worldsim checkpoint; pass a checkpoint directory (it holds {MODEL} "
            f"and {CONFIG}), as written by save_checkpoint"
        )
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a directory written by save_checkpoint "
            f"(it holds {MODEL} and {CONFIG})"
        )
    return path


def _read_info(path: Path) -> dict[str, Any]:
    """The checked ``config.json`` of the checkpoint directory ``path``."""
    config = path / CONFIG
    if not config.is_file():
        hint = ""
        if _step_dirs(path):
            hint = "; it looks like a run directory: pass latest_checkpoint(run_dir) instead"
        else:
            pickles = sorted(p.name for p in path.glob("*") if p.suffix in (".pt", ".pth", ".ckpt", ".bin"))
            if pickles:
                hint = f"; it holds {', '.join(pickles)}, which worldsim does not unpickle: {_SAVE_HINT}"
        raise CheckpointError(f"{path} is not a worldsim checkpoint: {config} does not exist{hint}")
    try:
        info = json.loads(config.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config} is not valid JSON ({e}); {_DAMAGED_HINT}") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f'{config} is not a worldsim checkpoint config (no "format": "{FORMAT_NAME}"); '
            f"pass a directory written by save_checkpoint"
        )
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        fix = "upgrade worldsim to read it" if newer else "re-train it, or re-save it with this worldsim"
        raise CheckpointError(
            f"{config} has checkpoint format_version {version!r}, but this worldsim reads version "
            f"{FORMAT_VERSION}; {fix}"
        )
    lacking = [k for k in ("family", "files", "step") if k not in info]
    if lacking or not isinstance(info["files"], dict) or MODEL not in info["files"]:
        raise CheckpointError(
            f"{config} lacks {', '.join(lacking) or 'the checksum of ' + MODEL}; {_DAMAGED_HINT}"
        )
    return info


def _check_family(path: Path, info: Mapping[str, Any], family: str | None) -> None:
    if family is not None and info["family"] != family:
        raise CheckpointError(
            f"checkpoint {path} is for {info['family']!r}, asked for {family!r}; load a checkpoint "
            f"trained on {family!r} (or train one: `worldsim train scene={family}`)"
        )


def _verified_bytes(path: Path, info: Mapping[str, Any], name: str) -> bytes:
    """The bytes of ``name``, checked against the size and sha256 that ``config.json`` records."""
    entry = info["files"].get(name)
    file = path / name
    if entry is None:
        raise CheckpointError(f"{path / CONFIG} records no checksum for {name}; {_DAMAGED_HINT}")
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing; {_DAMAGED_HINT}") from None
    problem = recorded_mismatch(file, data, entry, CONFIG)
    if problem:
        raise CheckpointError(f"{problem}; {_DAMAGED_HINT}")
    return data


def verify_checkpoint(path: str | os.PathLike, *, family: str | None = None) -> dict[str, Any]:
    """Check that ``path`` is a complete checkpoint: a valid config and every file it lists present
    with its recorded size and sha256. Returns the config; raises :class:`CheckpointError`."""
    path = _checkpoint_path(path)
    info = _read_info(path)
    _check_family(path, info, family)
    for name in info["files"]:
        _verified_bytes(path, info, name)
    return info


# -- a run's checkpoints ----------------------------------------------------------------------------


def latest_checkpoint(
    run_dir: str | os.PathLike,
    *,
    family: str | None = None,
    need_train_state: bool = False,
) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none.

    Looks at ``step_N`` directories in ``<run_dir>/checkpoints`` (or in ``run_dir`` itself when it
    has no ``checkpoints`` folder), newest step first, and returns the first that
    :func:`verify_checkpoint` accepts; damaged ones are skipped with a warning, so a run that was
    killed resumes from its last good checkpoint. Temporary directories are never considered.
    """
    for step, path in reversed(_step_dirs(Path(run_dir))):
        try:
            info = verify_checkpoint(path, family=family)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint of step {step}: {e}", stacklevel=2)
            continue
        if need_train_state and TRAIN_STATE not in info["files"]:
            continue
        return path
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep: int = 2) -> list[Path]:
    """Delete a run's checkpoints older than its ``keep`` newest complete ones, and the temporary
    directories that killed writes left behind (a checkpoint a killed replace had moved aside is put
    back instead). Returns what was deleted.

    Damaged checkpoints newer than the kept ones are left for inspection. Call it from the one
    process that writes the run's checkpoints (rank 0).
    """
    if keep < 1:
        raise ValueError(f"keep is {keep}; keep at least the newest checkpoint, so a run can resume")
    run_dir = Path(run_dir)
    removed: list[Path] = []
    root = _checkpoints_root(run_dir)
    for p in sorted(root.glob(".step_*")) if root.is_dir() else []:
        if not p.is_dir():
            continue
        if p.name.endswith(_OLD_SUFFIX):
            original = root / p.name[1:].split(".")[0]
            if not original.exists() and _is_complete(p):
                os.replace(p, original)  # killed between the two renames of a replace: undo it
                continue
        elif not p.name.endswith((_TMP_SUFFIX, _DEL_SUFFIX)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    kept: list[int] = []
    for step, path in reversed(_step_dirs(run_dir)):
        if len(kept) < keep:
            if _is_complete(path):
                kept.append(step)
        elif step < kept[-1]:
            _remove_dir(path)
            removed.append(path)
    return removed


def _is_complete(path: Path) -> bool:
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


# -- atomic directory writes ------------------------------------------------------------------------


def _write_dir_atomically(path: Path, files: Mapping[str, bytes]) -> None:
    """Make ``path`` a directory holding exactly ``files``, so that at every moment ``path`` is
    either absent, the old directory, or the complete new one.

    Replacing an existing directory takes two renames (old aside, new in); a crash between them
    leaves the old one as ``.<name>.<random>.old`` next to it, which :func:`prune_checkpoints` puts
    back. Fresh step directories of a training run never hit that window.
    """
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; checkpoints are for sharing
        for name, data in files.items():
            _write_file(tmp / name, data)
        fsync_dir(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=_OLD_SUFFIX))
            os.replace(path, old)  # onto the empty dir just made; a name nobody else can take
        os.rename(tmp, path)
        fsync_dir(parent)
    except BaseException:
        if old is not None and not path.exists() and old.exists():
            os.replace(old, path)  # put the previous checkpoint back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _remove_dir(path: Path) -> None:
    """Delete a checkpoint so that no half-deleted ``step_N`` is ever visible: rename it to a hidden
    name first (atomic), then delete that."""
    hidden = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=_DEL_SUFFIX))
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# -- JSON ---------------------------------------------------------------------------------------------


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _frame_size_json(frame_size: tuple[int, int] | None) -> dict[str, int] | None:
    if frame_size is None:
        return None
    if len(frame_size) != 2 or not all(isinstance(v, int) and v > 0 for v in frame_size):
        raise CheckpointError(f"frame_size is {frame_size!r}; pass (height, width) as positive ints")
    return {"height": frame_size[0], "width": frame_size[1]}


def _plain_json(obj: Any, where: str) -> Any:
    """``obj`` as plain JSON data (dataclasses and mappings become dicts, sequences lists), or an
    error naming the offending entry; for human-readable config and metadata."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where} has the key {k!r}; JSON keys must be strings")
            out[k] = _plain_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, Sequence) and not isinstance(obj, (bytes, bytearray)):
        return [_plain_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}; checkpoint config and metadata must be JSON data "
        "(numbers, strings, lists, dicts, dataclasses)"
    )


# Tagged JSON for train state: exact round trip of the trees optimizers and schedulers produce
# (int keys, tuples, tensors) without pickle. Tensors go to safetensors under a path-like key.
_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__")


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": _put(tensors, key, _own_cpu(obj))}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CheckpointError(f"train state {key!r} is an object array; store numeric arrays")
        return {"__ndarray__": _put(tensors, key, torch.from_numpy(np.ascontiguousarray(obj).copy()))}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not (len(obj) == 1 and next(iter(obj)) in _TAGS):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {
            "__dict__": [
                [_encode(k, f"{key}.key{i}", tensors), _encode(v, f"{key}.{k}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    raise CheckpointError(
        f"train state {key!r} is a {type(obj).__name__}; it must be tensors, arrays, numbers, strings, "
        "lists, tuples and dicts"
    )


def _put(tensors: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> str:
    unique, n = key, 1
    while unique in tensors:
        unique, n = f"{key}#{n}", n + 1
    tensors[unique] = value
    return unique


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag in ("__tensor__", "__ndarray__"):
            if value not in tensors:
                raise CheckpointError(f"train state refers to tensor {value!r}, which {TRAIN_STATE} lacks")
            return tensors[value] if tag == "__tensor__" else tensors[value].numpy()
        if tag == "__tuple__":
            return tuple(_decode(v, tensors) for v in value)
        if tag == "__dict__":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in value}
    return {k: _decode(v, tensors) for k, v in obj.items()}
