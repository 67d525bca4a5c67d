"""The generators that ship with worldsim, one per scene family, and loading any generator.

Each shipped checkpoint is a directory ``worldsim/checkpoints/<family>/`` with ``model.safetensors``
and ``config.json`` (a few MB), reproduced by the command in the README's results section. They are
the default of ``worldsim dream`` and of the Dream envs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from worldsim.model.world_model import (
    WorldModel,
    WorldModelConfig,
    check_colours,
    check_precision,
    check_start_path,
    check_still_colours,
)
from worldsim.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SHIPPED_DIR = Path(__file__).resolve().parent
SAMPLING_SETTINGS = (
    "sampling_steps",
    "sampling_eta",
    "sampling_context_noise",
    "sampling_precision",
    "min_change_levels",
    "flow_dither",
    "flow_still_colours",
    "object_start_path",
)
"""The settings of a generator's config that hold no weights: sampling reads them (a flow's
``flow_dither`` and ``flow_still_colours`` shape training's warp too; ``object_start_path`` also
widens ``encode_prompts``' output), and a caller may change them on
a trained generator (``ship``, ``worldsim evaluate``'s ``sampling``) without touching its weights."""


def sampling_overrides(settings: dict[str, Any] | None) -> dict[str, Any]:
    """``settings`` without the unset (``None``) ones, checked: only ``SAMPLING_SETTINGS``, a known
    precision, at least one sampling step, a threshold in 0..255, colours as RGB triples, context noise >= 0."""
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    unknown = set(given) - set(SAMPLING_SETTINGS)
    if unknown:
        raise ValueError(
            f"not sampling settings of a generator: {sorted(unknown)} (known: {SAMPLING_SETTINGS})"
        )
    if "sampling_precision" in given:
        check_precision(given["sampling_precision"])
    if given.get("sampling_steps", 1) < 1:
        raise ValueError(f"sampling_steps must be at least 1, got {given['sampling_steps']}")
    if not 0 <= given.get("min_change_levels", 0) <= 255:
        raise ValueError(
            f"min_change_levels must be in 0..255 (grey levels), got {given['min_change_levels']}"
        )
    if given.get("sampling_eta", 0.0) < 0:
        raise ValueError(
            f"sampling_eta must be >= 0 (0: Euler's ODE, 1: ancestral), got {given['sampling_eta']}"
        )
    for flag in ("flow_dither", "object_start_path"):
        if not isinstance(given.get(flag, False), bool):
            raise ValueError(f"{flag} is true or false, got {given[flag]!r}")
    if "flow_still_colours" in given:
        given["flow_still_colours"] = check_colours(given["flow_still_colours"])
    if given.get("sampling_context_noise", 0.0) < 0:
        raise ValueError(f"sampling_context_noise must be >= 0, got {given['sampling_context_noise']}")
    return given


def with_sampling(model: WorldModel, settings: dict[str, Any] | None) -> WorldModel:
    """``model`` with ``settings`` (checked by ``sampling_overrides``) over its config's sampling
    settings; its weights are untouched."""
    given = sampling_overrides(settings)
    if "flow_still_colours" in given:
        check_still_colours(given["flow_still_colours"], model.cfg)
    if "object_start_path" in given:
        check_start_path(replace(model.cfg, object_start_path=given["object_start_path"]))
    for name, value in given.items():
        setattr(model.cfg, name, value)
    return model


def shipped(family: str) -> Path:
    """The shipped checkpoint of ``family``; a clear error if this copy of worldsim has none."""
    path = SHIPPED_DIR / family
    if not (path / "config.json").is_file():
        available = sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())
        raise CheckpointError(
            f"no shipped checkpoint for {family!r} (shipped: {available or 'none'}); train one with "
            f"`worldsim train scene={family}` and pass checkpoint=runs/{family}/final"
        )
    return path


def load_world_model(
    checkpoint: str | Path | None, family: str | None = None, device: str | torch.device = "cpu"
) -> WorldModel:
    """A generator in eval mode from a checkpoint directory, or the shipped one of ``family``."""
    path = shipped(family) if checkpoint is None else Path(checkpoint)
    ckpt = load_checkpoint(path, family=family, map_location=device)
    model = WorldModel(WorldModelConfig.from_dict(ckpt.config))
    return ckpt.load_into(model).to(device).eval()


def ship(
    checkpoint: str | Path,
    family: str,
    dest: str | Path | None = None,
    sampling: dict[str, Any] | None = None,
) -> Path:
    """Copy a trained generator (and its state probe, if it has one) into the package as the shipped
    checkpoint of ``family``, with float weights stored as float16: half the size, and the model
    computes in float32 after loading. ``sampling`` overrides sampling settings of the generator's
    config (``sampling_precision``, ``sampling_steps``, ...). Measure the shipped copy, not the run's."""
    from worldsim.model.probe import ProbeConfig, StateProbe
    from worldsim.train.probe import PROBE_DIR

    src = Path(checkpoint)
    dest = Path(dest) if dest is not None else SHIPPED_DIR / family
    parts = [("", lambda cfg: WorldModel(WorldModelConfig.from_dict(cfg)))]
    if (src / PROBE_DIR / "config.json").is_file():
        parts.append((PROBE_DIR, lambda cfg: StateProbe(ProbeConfig.from_dict(cfg))))
    sampling = sampling_overrides(sampling)
    for sub, build in parts:
        ckpt = load_checkpoint(src / sub, family=family)
        config = {**ckpt.config, **sampling} if sub == "" else ckpt.config
        module = ckpt.load_into(build(config)).half()
        save_checkpoint(
            dest / sub,
            module,
            config,
            family=family,
            frame_size=ckpt.frame_size,
            data_manifest_sha256=ckpt.data_manifest_sha256,
            # a copy shipped again from a shipped copy keeps the run it came from
            metadata={"shipped_from": str(src), **ckpt.metadata, "weights": "float16"},
            step=ckpt.step,
        )
    return dest
