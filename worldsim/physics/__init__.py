"""Physics backends behind one ``Simulator`` protocol: MuJoCo (truth) and PyBullet (twin)."""

from __future__ import annotations

from worldsim.physics.base import Simulator
from worldsim.physics.camera import CameraParams


def make_simulator(family: str, backend: str = "mujoco", width: int = 64, height: int = 64) -> Simulator:
    """A simulator of ``family`` in ``backend`` (``"mujoco"`` or ``"pybullet"``), rendering ``width`` x ``height``."""
    if backend == "mujoco":
        from worldsim.physics.mujoco_sim import MujocoSimulator

        return MujocoSimulator(family, width, height)
    if backend == "pybullet":
        from worldsim.physics.pybullet_sim import PybulletSimulator

        return PybulletSimulator(family, width, height)
    raise ValueError(f"backend must be 'mujoco' or 'pybullet', got {backend!r}")


__all__ = ["CameraParams", "Simulator", "make_simulator"]
