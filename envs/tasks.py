"""The task of each scene family: reward and termination from two consecutive physics states.

The same functions score MuJoCo and PyBullet rollouts, and they label the datasets the generator's
reward and termination heads learn from.

- Balls (continuing): reward ``1 - |x_agent - x_goal| / 2`` in [0, 1] each step; never terminates.
- Push: reward ``-d(object, goal) - 0.1 * gap(pusher, object)`` in metres, ``+10`` and termination
  when the object's centre is within ``GOAL_RADIUS_M`` of the goal.
- Drive: reward = metres of progress along the road minus ``0.1 * |lane offset|``; ``-10`` and
  termination on a collision with the lead car or the pedestrian, or when the car leaves the road.
"""

from __future__ import annotations

import numpy as np

from worldsim.scenes import balls, push

SUCCESS_BONUS = 10.0
FAILURE_PENALTY = -10.0


def reward_and_termination(
    family: str, prev: dict[str, np.ndarray], state: dict[str, np.ndarray]
) -> tuple[float, bool, dict[str, bool]]:
    """``(reward, terminated, events)`` for the transition ``prev -> state``."""
    if family == "balls":
        dx = abs(float(state["pos_m"][0, 0] - state["goal_x_m"]))
        return 1.0 - dx / (2 * balls.HALF_WIDTH_M), False, {"success": dx < 0.1}
    if family == "push":
        d_goal = float(state["object_goal_dist_m"])
        gap = float(np.linalg.norm(state["pusher_pos_m"] - state["object_pos_m"]))
        reward = -d_goal - 0.1 * gap
        success = d_goal < push.GOAL_RADIUS_M
        return reward + (SUCCESS_BONUS if success else 0.0), success, {"success": success}
    if family == "drive":
        progress = float(state["ego_pos_m"][0] - prev["ego_pos_m"][0])
        reward = progress - 0.1 * abs(float(state["lane_offset_m"]))
        collision, off_road = bool(state["collision"]), not bool(state["on_road"])
        if collision or off_road:
            reward += FAILURE_PENALTY
        return reward, collision or off_road, {"collision": collision, "off_road": off_road}
    raise KeyError(f"unknown family {family!r}")
