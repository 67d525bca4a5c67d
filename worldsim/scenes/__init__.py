"""Scene families: specs that fully determine a world, samplers, the prompt grammar, MJCF builders.

``caption(spec)`` and ``parse_prompt(text)`` round-trip; ``sample(family, rng, split)`` draws a world
from the in-distribution (``"id"``) or out-of-distribution (``"ood"``) ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from functools import lru_cache, partial
from typing import Any

import numpy as np

from worldsim.scenes import balls, drive, push
from worldsim.scenes.base import CameraRig, Family, Footprint, ObjectInfo
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


def script_of(spec: Any) -> Callable[[float], tuple[Footprint, ...]]:
    """Where the agents ``spec``'s prompt scripts, and the markers it fixes, are at a time in seconds
    (none in a family that places none): what a generator's script map draws
    (``worldsim.model.script_map``)."""
    scripted = family_of(spec).scripted
    return partial(scripted, spec) if scripted is not None else _no_agents


def _no_agents(t_s: float) -> tuple[Footprint, ...]:
    return ()


def layout_of(spec: Any) -> tuple[Footprint, ...]:
    """Every body ``spec``'s prompt places, where it starts, back to front: what a generator's first
    frame from the prompt alone is drawn over (``worldsim.model.first_frame``), seen by the scene's
    camera before it moves. A family that does not say is refused."""
    return family_with(spec, "layout").layout(spec)


def free_path(spec: Any, t_s: float) -> np.ndarray:
    """Each object's position ``[objects, 3]`` (metres) ``t_s`` seconds from the start on the free
    path ``spec``'s prompt starts it on (``Family.free_path``). A family whose prompts start nothing
    moving freely is refused."""
    return np.asarray(family_with(spec, "free_path").free_path(spec, t_s), dtype=float)


def start_step_m(spec: Any) -> float:
    """How far the followed camera moves in one control step at the speed ``spec``'s prompt starts it
    with (Drive: the ego car's), NaN in a family whose camera follows nothing moving: what a
    generator's odometer dynamics count an episode's first step on from
    (``WorldModel.advance_odometer``)."""
    fam = family_of(spec)
    return float("nan") if fam.start_speed_mps is None else float(fam.start_speed_mps(spec)) / fam.control_hz


@lru_cache(maxsize=65536)
def _script_of_prompt(text: str, family: str) -> Callable[[float], tuple[Footprint, ...]]:
    return script_of(parse_prompt(text, family))


def scripts_of_prompts(texts: list[str], family: str) -> list[Callable[[float], tuple[Footprint, ...]]]:
    """``script_of`` each prompt's spec (parsed once per distinct prompt: training asks every batch)."""
    return [_script_of_prompt(t, family) for t in texts]


def script_map_camera(family: str, width: int, height: int) -> dict:
    """The camera a script map is drawn through (``scene_camera``), for a family that places agents
    or markers as time goes on (``Family.scripted``)."""
    fam = family_of(family)
    if fam.scripted is None:
        placing = [name for name, f in FAMILIES.items() if f.scripted is not None]
        raise ValueError(
            f"a script map draws what a prompt places; {family!r} scripts none ({', '.join(placing)} do)"
        )
    return scene_camera(family, width, height)


def layout_camera(family: str, width: int, height: int) -> dict:
    """The camera a prompt's start layout is drawn through (``scene_camera``), for a family whose
    prompts lay one out (``Family.layout``)."""
    family_with(family, "layout")
    return scene_camera(family, width, height)


def free_path_camera(family: str, width: int, height: int) -> dict:
    """The camera a prompt's free paths are projected through (``scene_camera``), for a family whose
    prompts start objects on them (``Family.free_path``) seen by a fixed camera."""
    family_with(family, "free_path")
    return scene_camera(family, width, height)


_LACKING = {"layout": "give no start layout", "free_path": "start nothing on a free path"}


def family_with(name_or_spec: Any, hook: str) -> Family:
    """The family of ``name_or_spec`` if its prompts give what its optional field ``hook`` says
    (``"layout"``, ``"free_path"``), else a ``ValueError`` naming the families whose prompts do."""
    fam = family_of(name_or_spec)
    if getattr(fam, hook) is None:
        having = [name for name, f in FAMILIES.items() if getattr(f, hook) is not None]
        raise ValueError(f"{fam.name}'s prompts {_LACKING[hook]} ({', '.join(having)} do)")
    return fam


def scene_camera(family: str, width: int, height: int) -> dict:
    """``family``'s first camera at ``width`` x ``height``, before it has travelled, as
    ``worldsim.model.script_map.ScriptMapConfig``'s fields: what maps of a prompt are drawn through."""
    from worldsim.physics.camera import camera_params

    fam = family_of(family)
    rig = fam.cameras[0]
    cam = camera_params(rig, width, height)
    return {
        "rotation": cam.world_to_cam[:3, :3].tolist(),
        "position_m": cam.position_m.tolist(),
        "intrinsics": cam.K.tolist(),
        "follows": rig.follow is not None,
        "control_hz": fam.control_hz,
    }


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
    "Footprint",
    "ObjectInfo",
    "PromptError",
    "caption",
    "family_of",
    "family_with",
    "free_path",
    "free_path_camera",
    "parse_prompt",
    "sample",
    "layout_camera",
    "layout_of",
    "scene_camera",
    "script_map_camera",
    "script_of",
    "scripts_of_prompts",
    "spec_from_dict",
    "spec_to_dict",
    "start_step_m",
]
