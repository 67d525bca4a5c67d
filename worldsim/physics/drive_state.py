"""The Drive state from raw poses, shared by both engines so that derived quantities agree.

Each backend reads only what its engine knows (ego pose and velocity, agent positions, whether the
chassis touched an agent); lane offset, on-road flag and distances are derived here, once.
"""

from __future__ import annotations

import numpy as np

from worldsim.scenes import drive


def drive_state(
    spec: drive.DriveSpec,
    ego_pos_m: np.ndarray,
    yaw_rad: float,
    vel_mps: np.ndarray,
    lead_pos_m: np.ndarray,
    ped_pos_m: np.ndarray,
    collided: bool,
) -> dict[str, np.ndarray]:
    """The raw Drive state (without ``time_s``; ``physics.state.finish`` adds it) of one instant."""
    heading = np.array([np.cos(yaw_rad), np.sin(yaw_rad)])
    far = drive.NO_AGENT_DISTANCE_M
    gap = lead_pos_m[0] - ego_pos_m[0] - 2 * drive.CAR_HALF[0] if spec.lead_colour else far
    ped_dist = float(np.linalg.norm(ped_pos_m - ego_pos_m)) if spec.ped_colour else far
    return {
        "ego_pos_m": ego_pos_m,
        "ego_yaw_rad": yaw_rad,
        "ego_speed_mps": float(vel_mps @ heading),
        "ego_vel_mps": vel_mps,
        "lane_offset_m": ego_pos_m[1] - drive.lane_y(spec.ego_lane),
        "on_road": float(abs(ego_pos_m[1]) <= drive.ROAD_HALF_WIDTH_M),
        "lead_pos_m": lead_pos_m,
        "ped_pos_m": ped_pos_m,
        "dist_lead_m": min(gap, far),
        "dist_ped_m": min(ped_dist, far),
        "collision": float(collided),
    }
