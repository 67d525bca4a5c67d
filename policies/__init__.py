"""Policies that act in worldsim envs from the physical state in ``info["state"]``.

Each has ``reset(state)`` and ``act(state) -> float32[2]`` in [-1, 1]. ``make_policy`` builds one:
``"random"`` (uniform), ``"smooth"`` (correlated noise), ``"scripted"`` (does the task), or
``"mixture"`` (all of these, switching within an episode: the data-collection default).
"""

from __future__ import annotations

import numpy as np

from policies.mixture import MixturePolicy
from policies.random import RandomPolicy, SmoothRandomPolicy
from policies.scripted import CONTROLLERS, BallsController, DriveController, PushController

KINDS = ("random", "smooth", "scripted", "mixture")
MIXTURE_NOISE_SCALE = {"drive": (0.3, 1.0)}  # steering noise, throttle noise


def make_policy(family: str, kind: str = "mixture", rng: np.random.Generator | None = None):
    """A policy of ``kind`` for scene ``family``, drawing randomness from ``rng``."""
    rng = rng if rng is not None else np.random.default_rng()
    if family not in CONTROLLERS:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(CONTROLLERS)}")
    if kind == "random":
        return RandomPolicy(rng)
    if kind == "smooth":
        return SmoothRandomPolicy(rng)
    if kind == "scripted":
        return CONTROLLERS[family]()
    if kind == "mixture":
        scripted = (
            DriveController(rng=rng, lane_change_rate=0.03) if family == "drive" else CONTROLLERS[family]()
        )
        return MixturePolicy(scripted, rng, MIXTURE_NOISE_SCALE.get(family, (1.0, 1.0)))
    raise ValueError(f"unknown policy kind {kind!r}; kinds: {', '.join(KINDS)}")


__all__ = [
    "KINDS",
    "BallsController",
    "DriveController",
    "MixturePolicy",
    "PushController",
    "RandomPolicy",
    "SmoothRandomPolicy",
    "make_policy",
]
