"""The state schema: which arrays each family's ``Simulator.state()`` returns, in SI units,
and the fixed-size vector that ``obs="state"`` environments observe.

Both engines fill the raw arrays; ``finish`` adds what follows from them and the time, so the keys
and their meaning are defined here once.
"""

from __future__ import annotations

import numpy as np

STATE_KEYS: dict[str, tuple[str, ...]] = {
    "balls": ("time_s", "pos_m", "vel_mps", "spin_radps", "goal_x_m"),
    "push": (
        "time_s",
        "pusher_pos_m",
        "pusher_vel_mps",
        "object_pos_m",
        "object_yaw_rad",
        "object_vel_mps",
        "goal_pos_m",
        "object_goal_dist_m",
    ),
    "drive": (
        "time_s",
        "ego_pos_m",
        "ego_yaw_rad",
        "ego_speed_mps",
        "ego_vel_mps",
        "lane_offset_m",
        "on_road",
        "lead_pos_m",
        "ped_pos_m",
        "dist_lead_m",
        "dist_ped_m",
        "collision",
    ),
}

MAX_BALLS = 3
STATE_LIMIT = 100.0  # state vectors are clipped to [-STATE_LIMIT, STATE_LIMIT]
STATE_VECTOR_SIZE = {"balls": 1 + 5 * MAX_BALLS, "push": 12, "drive": 12}


def state_layout(family: str) -> tuple[str, ...]:
    """Names of the components of ``state_vector(family, ...)``, in order."""
    if family == "balls":
        per_ball = ("present", "x_m", "z_m", "vx_mps", "vz_mps")
        return ("goal_x_m", *(f"ball{i}_{n}" for i in range(MAX_BALLS) for n in per_ball))
    if family == "push":
        return (
            "pusher_x_m", "pusher_y_m", "pusher_vx_mps", "pusher_vy_mps", "object_x_m", "object_y_m",
            "object_cos_yaw", "object_sin_yaw", "object_vx_mps", "object_vy_mps", "goal_x_m", "goal_y_m",
        )  # fmt: skip
    if family == "drive":
        return (
            "lane_offset_m", "ego_yaw_rad", "ego_speed_mps", "on_road", "lead_dx_m", "lead_dy_m",
            "ped_dx_m", "ped_dy_m", "dist_lead_m", "dist_ped_m", "collision", "ego_y_m",
        )  # fmt: skip
    raise KeyError(f"unknown family {family!r}")


def finish(family: str, raw: dict[str, np.ndarray], time_s: float) -> dict[str, np.ndarray]:
    """Complete a backend's raw state with the time, as float64 arrays, and check its keys."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    out["time_s"] = np.asarray(time_s, dtype=np.float64)
    missing = set(STATE_KEYS[family]) - set(out)
    if missing:
        raise KeyError(f"{family} state lacks {sorted(missing)}")
    return out


def state_vector(family: str, state: dict[str, np.ndarray]) -> np.ndarray:
    """The flat ``float32`` observation of a state dict; its layout is documented per family.

    - balls: goal x, then per ball slot (3): present flag, x, z, vx, vz (absent balls are zeros).
    - push: pusher x, y, vx, vy; object x, y, cos yaw, sin yaw, vx, vy; goal x, y.
    - drive: lane offset, yaw, speed, on-road flag, lead car dx, dy and pedestrian dx, dy relative to
      the ego car, distance to lead car and pedestrian (100 m when absent), collision flag, ego y.
    """
    if family == "balls":
        vec = np.zeros(STATE_VECTOR_SIZE["balls"])
        vec[0] = state["goal_x_m"]
        for i, (p, v) in enumerate(zip(state["pos_m"], state["vel_mps"], strict=True)):
            vec[1 + 5 * i : 6 + 5 * i] = (1.0, p[0], p[1], v[0], v[1])
        return np.clip(vec, -STATE_LIMIT, STATE_LIMIT).astype(np.float32)
    if family == "push":
        yaw = float(state["object_yaw_rad"])
        vec = np.concatenate(
            [
                state["pusher_pos_m"],
                state["pusher_vel_mps"],
                state["object_pos_m"],
                [np.cos(yaw), np.sin(yaw)],
                state["object_vel_mps"],
                state["goal_pos_m"],
            ]
        )
        return np.clip(vec, -STATE_LIMIT, STATE_LIMIT).astype(np.float32)
    if family == "drive":
        ego = state["ego_pos_m"]
        vec = np.concatenate(
            [
                [state["lane_offset_m"], state["ego_yaw_rad"], state["ego_speed_mps"], state["on_road"]],
                state["lead_pos_m"] - ego,
                state["ped_pos_m"] - ego,
                [state["dist_lead_m"], state["dist_ped_m"], state["collision"], ego[1]],
            ]
        )
        return np.clip(vec, -STATE_LIMIT, STATE_LIMIT).astype(np.float32)
    raise KeyError(f"unknown family {family!r}")
