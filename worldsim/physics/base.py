"""The one protocol both physics engines implement, and the checks every backend shares."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from worldsim.physics.camera import CameraParams
from worldsim.scenes.base import Family


@runtime_checkable
class Simulator(Protocol):
    """A scene family in one engine. Deterministic for a given spec, perturbation seed and actions.

    ``step`` advances one control period (``1 / family.control_hz`` seconds, physics substeps inside).
    ``state`` is a dict of SI-unit arrays with the same keys in every engine (see ``physics.state``).
    """

    family: Family
    spec: Any
    width: int
    height: int

    def reset(self, spec: Any, perturbation_m: float = 0.0, seed: int | None = None) -> None: ...

    def step(self, action: np.ndarray) -> None: ...

    def render(self, camera: str | None = None) -> np.ndarray: ...

    def segment(self, camera: str | None = None) -> np.ndarray: ...

    def state(self) -> dict[str, np.ndarray]: ...

    def camera(self, name: str | None = None) -> CameraParams: ...

    @property
    def time_s(self) -> float: ...

    def close(self) -> None: ...


def check_action(action: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate an action: right shape, finite. Values outside [-1, 1] are clipped by the caller."""
    arr = np.asarray(action, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"action has shape {arr.shape}; expected {shape}")
    bad = np.flatnonzero(~np.isfinite(arr.ravel()))
    if bad.size:
        raise ValueError(f"action has a non-finite value at index {int(bad[0])}; actions must be finite")
    return arr


def perturbation(rng_seed: int | None, size: int, scale_m: float) -> np.ndarray:
    """Gaussian offsets (m) of the initial positions, for the chaos floor; zeros when scale is 0."""
    if scale_m == 0.0:
        return np.zeros(size)
    return np.random.default_rng(rng_seed).normal(0.0, scale_m, size)
