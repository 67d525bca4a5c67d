"""Scene families: specs that fully determine a world, samplers, the prompt grammar, MJCF builders.

``caption(spec)`` and ``parse_prompt(text)`` round-trip; ``sample(family, rng, split)`` draws a world
from the in-distribution (``"id"``) or out-of-distribution (``"ood"``) ranges.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from worldsim.scenes import balls, drive, push
from worldsim.scenes.base import CameraRig, Family, ObjectInfo
from worldsim.scenes.prompts import PromptError, split_family

FAMILIES: dict[str, Family] = {f.name: f for f in (balls.FAMILY, push.FAMILY, drive.FAMILY)}


def family_of(name_or_spec: Any) -> Family:
    """The family named ``name`` (``"balls"``, ``"push"``, ``"drive"``), or the family of a spec."""
    name = name_or_spec if isinstance(name_or_spec, str) else getattr(name_or_spec, "family", None)
    if name not in FAMILIES:
        raise ValueError(f"unknown scene family {name_or_spec!r}; families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def sample(family: str, rng: np.random.Generator, split: str = "id") -> Any:
    return family_of(family).sample(rng, split)


def caption(spec: Any) -> str:
    """The prompt that describes ``spec`` exactly."""
    return family_of(spec).caption(spec)


def parse_prompt(text: str, family: str | None = None) -> Any:
    """The spec a prompt describes. Raises ``PromptError`` showing the grammar if it cannot be parsed.

    ``family``, if given, must match the prompt's family (an env of one family rejects another's prompt).
    """
    name, body = split_family(text, list(FAMILIES))
    if family is not None and name != family:
        raise PromptError(f"prompt {text!r} describes a {name!r} scene, but a {family!r} scene was asked for")
    return FAMILIES[name].parse(body)


def spec_to_dict(spec: Any) -> dict:
    """A JSON-ready dict of a spec, tagged with its family."""
    return {"family": spec.family, **asdict(spec)}


def spec_from_dict(d: dict) -> Any:
    d = dict(d)
    return family_of(d.pop("family")).from_dict(d)


__all__ = [
    "FAMILIES",
    "CameraRig",
    "Family",
    "ObjectInfo",
    "PromptError",
    "caption",
    "family_of",
    "parse_prompt",
    "sample",
    "spec_from_dict",
    "spec_to_dict",
]
