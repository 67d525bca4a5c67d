"""Pinhole camera parameters shared by both engines and by the metrics.

Convention (OpenCV): pixel (u, v) with u to the right and v down, origin at the top-left corner of the
top-left pixel; camera frame x right, y down, z forward. ``world_to_cam`` maps world points (m) to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldsim.scenes.base import CameraRig


@dataclass(frozen=True)
class CameraParams:
    """Intrinsics ``K[3,3]`` (pixels) and extrinsics ``world_to_cam[4,4]`` of one camera at one frame."""

    name: str
    width: int
    height: int
    fovy_deg: float
    K: np.ndarray
    world_to_cam: np.ndarray

    @property
    def position_m(self) -> np.ndarray:
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t

    def project(self, points_m: np.ndarray) -> np.ndarray:
        """World points ``[..., 3]`` in metres to pixel coordinates ``[..., 2]`` (u, v)."""
        pts = np.asarray(points_m, dtype=float)
        cam = pts @ self.world_to_cam[:3, :3].T + self.world_to_cam[:3, 3]
        uvw = cam @ self.K.T
        return uvw[..., :2] / uvw[..., 2:3]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "fovy_deg": self.fovy_deg,
            "K": self.K.tolist(),
            "world_to_cam": self.world_to_cam.tolist(),
        }


def camera_params(rig: CameraRig, width: int, height: int, follow_x_m: float = 0.0) -> CameraParams:
    """Parameters of ``rig`` rendered at ``width`` x ``height``, shifted along x by ``follow_x_m``."""
    right, up, back = rig.axes()
    pos = np.asarray(rig.pos_m, dtype=float) + np.array([follow_x_m, 0.0, 0.0])
    R = np.stack([right, -up, -back])  # rows: camera x (right), y (down), z (forward) in world coordinates
    world_to_cam = np.eye(4)
    world_to_cam[:3, :3] = R
    world_to_cam[:3, 3] = -R @ pos
    f = 0.5 * height / np.tan(np.deg2rad(rig.fovy_deg) / 2)
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return CameraParams(rig.name, width, height, rig.fovy_deg, K, world_to_cam)
