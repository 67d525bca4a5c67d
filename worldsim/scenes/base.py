"""What every scene family provides, and the cameras it is seen through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CameraRig:
    """A pinhole camera of a scene, given in world coordinates.

    ``follow`` names a body whose world x position is added to ``pos_m`` and ``target_m`` at every
    frame (a camera that tracks the ego car along the road); ``None`` is a fixed camera. The image's
    up direction is ``up``; both engines build their view from these same numbers.
    """

    name: str
    pos_m: tuple[float, float, float]
    target_m: tuple[float, float, float]
    up: tuple[float, float, float]
    fovy_deg: float
    follow: str | None = None

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera right, up and backward unit vectors (the MuJoCo camera frame: it looks along -z)."""
        forward = np.subtract(self.target_m, self.pos_m).astype(float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, self.up)
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        return right, up, -forward


@dataclass(frozen=True)
class ObjectInfo:
    """A movable object of a scene as metrics see it: id in segmentation, name, flat colour, size."""

    object_id: int
    name: str
    colour: str
    size_m: float


@dataclass(frozen=True)
class Footprint:
    """Where an agent a prompt scripts is at one moment: its flat colour (RGB) and its body, an
    upright prism on an axis-aligned box (``round``: the ellipse inside it) centred at ``(x_m, y_m)``
    from height ``bottom_m`` to ``top_m``.
    A generator may be shown these (``worldsim.model.script_map``): nothing in the frames says when a
    scripted agent comes into view, the prompt and the distance travelled do."""

    rgb: tuple[int, int, int]
    x_m: float
    y_m: float
    bottom_m: float
    top_m: float
    half_x_m: float
    half_y_m: float
    round: bool = False


@dataclass(frozen=True)
class Family:
    """A scene family: its spec type, samplers, prompt grammar, MJCF builder, cameras and task."""

    name: str
    spec_type: type
    sample: Callable[[np.random.Generator, str], Any]
    caption: Callable[[Any], str]
    parse: Callable[[str], Any]
    to_mjcf: Callable[[Any], str]
    cameras: tuple[CameraRig, ...]
    objects: Callable[[Any], tuple[ObjectInfo, ...]]
    from_dict: Callable[[dict], Any]
    control_hz: float = 10.0
    substeps: int = 50
    extras: dict[str, Any] = field(default_factory=dict)
    # What the prompt places at a time in seconds: the agents it scripts (Drive's lead car and
    # pedestrian) and the markers it fixes (Push's goal); ``None``: the family places none.
    scripted: Callable[[Any, float], tuple[Footprint, ...]] | None = None
    # The speed (m/s) along x at which the followed camera starts, as the prompt gives it (``None``:
    # the family's camera does not follow anything that starts moving).
    start_speed_mps: Callable[[Any], float] | None = None
    # Each object's physical properties as the prompt gives them, ``[objects, P]`` in ``objects``
    # order, the first being the one the action drives (``None``: the family gives none): what
    # object dynamics read (``worldsim.model.object_dynamics``).
    properties: Callable[[Any], Any] | None = None
    # Every body the prompt places, where it stands at the start, back to front (``None``: the family
    # does not say): the layout a generator's first frame from the prompt alone is drawn over
    # (``worldsim.model.first_frame``), as the camera sees it before it moves (Drive's: the road
    # around the start and the cars).
    layout: Callable[[Any], tuple[Footprint, ...]] | None = None
    # Each object's position ``[objects, 3]`` (metres, ``objects`` order) a time in seconds from the
    # start on the free path its prompt starts it on: no contact, no action (``None``: the family's
    # prompts start nothing moving freely). What a rollout from one real frame takes as the track
    # before it (``worldsim.model.object_dynamics.start_path_px``).
    free_path: Callable[[Any, float], np.ndarray] | None = None

    @property
    def timestep_s(self) -> float:
        return 1.0 / (self.control_hz * self.substeps)

    def camera(self, name: str | None = None) -> CameraRig:
        if name is None:
            return self.cameras[0]
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise ValueError(
            f"scene {self.name!r} has no camera {name!r}; cameras: {[c.name for c in self.cameras]}"
        )


def quantise(value: float) -> float:
    """Round to the prompt grammar's two-decimal grid, so captions round-trip exactly."""
    out = round(float(value), 2)
    return 0.0 if out == 0 else out


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return quantise(rng.uniform(low, high))


SPLITS = ("id", "ood")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split
