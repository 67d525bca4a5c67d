"""Scripted controllers that do each family's task reasonably, from the true physical state."""

from __future__ import annotations

import numpy as np

from worldsim.scenes import drive, push


class BallsController:
    """PD control of the agent ball's x towards the goal band; a small upward force softens bounces."""

    def __init__(self, kp: float = 2.5, kd: float = 1.2) -> None:
        self.kp, self.kd = kp, kd

    def reset(self, state: dict[str, np.ndarray]) -> None:
        pass

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray:
        x, _ = state["pos_m"][0]
        vx, vz = state["vel_mps"][0]
        fx = self.kp * (float(state["goal_x_m"]) - x) - self.kd * vx
        fz = -0.3 * vz
        return np.clip([fx, fz], -1.0, 1.0).astype(np.float32)


class PushController:
    """Go behind the object on the line from the goal, then push it along that line.

    When the pusher is on the goal side of the object it first moves around it sideways, so it does
    not push the object away from the goal on the way.
    """

    APPROACH_M = 0.23  # pusher centre to object centre when pushing: largest object + pusher + margin

    def reset(self, state: dict[str, np.ndarray]) -> None:
        pass

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray:
        p, o, g = state["pusher_pos_m"], state["object_pos_m"], state["goal_pos_m"]
        to_goal = g - o
        u = to_goal / max(np.linalg.norm(to_goal), 1e-6)
        behind = o - u * self.APPROACH_M
        perp = np.array([-u[1], u[0]])
        along, lateral = float((p - o) @ u), float((p - o) @ perp)
        if along > -0.12:  # on the wrong side: go around
            side = 1.0 if lateral >= 0 else -1.0
            target = o + side * perp * (self.APPROACH_M + 0.04) - u * 0.2
        elif abs(lateral) > 0.03:  # off the line through object and goal: line up behind the object
            target = behind
        else:  # in position: push through the object towards the goal
            target = o + u * 0.1
        v = (target - p) * 4.0
        return np.clip(v / push.PUSHER_SPEED_MPS, -1.0, 1.0).astype(np.float32)


class DriveController:
    """Lane keeping (PD on lane offset and heading), speed keeping, and braking for what is ahead.

    With an ``rng``, it also explores as a driver would: a cruise speed drawn per episode and lane
    changes at random moments (``lane_change_rate`` per step), so datasets show lateral motion.
    """

    def __init__(
        self, cruise_mps: float = 8.0, rng: np.random.Generator | None = None, lane_change_rate: float = 0.0
    ) -> None:
        self.cruise_mps, self.rng, self.lane_change_rate = cruise_mps, rng, lane_change_rate
        self.speed = cruise_mps
        self.target_offset_m = 0.0
        self.prev_ped_y: float | None = None

    def reset(self, state: dict[str, np.ndarray]) -> None:
        self.prev_ped_y = None
        self.target_offset_m = 0.0
        self.speed = self.cruise_mps if self.rng is None else float(self.rng.uniform(5.0, 10.0))

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray:
        offset, yaw = float(state["lane_offset_m"]), float(state["ego_yaw_rad"])
        if self.rng is not None and self.rng.random() < self.lane_change_rate:
            own_lane_y = float(state["ego_pos_m"][1]) - offset
            other = -np.sign(own_lane_y) * drive.LANE_WIDTH_M  # the other lane, relative to the own lane
            self.target_offset_m = other if self.target_offset_m == 0.0 else 0.0
        error = offset - self.target_offset_m
        steer = -0.35 * float(np.clip(error, -1.5, 1.5)) - 1.6 * yaw
        target = self.speed
        target = min(target, max(0.0, 0.6 * (float(state["dist_lead_m"]) - 5.0)))
        ego, ped = state["ego_pos_m"], state["ped_pos_m"]
        ahead = float(ped[0] - ego[0])
        lateral = float(ped[1] - ego[1])
        moving = 0.0 if self.prev_ped_y is None else float(ped[1]) - self.prev_ped_y
        self.prev_ped_y = float(ped[1])
        in_path = abs(lateral) < drive.CAR_HALF[1] + drive.PED_RADIUS_M + 1.0
        approaching = abs(float(ped[1])) < drive.ROAD_HALF_WIDTH_M + 1.5 and lateral * moving < 0
        if (in_path or approaching) and -2.0 < ahead < 30.0:
            target = min(target, max(0.0, 0.6 * (ahead - 8.0)))
        pedal = 0.4 * (target - float(state["ego_speed_mps"]))
        return np.clip([steer, pedal], -1.0, 1.0).astype(np.float32)


CONTROLLERS = {"balls": BallsController, "push": PushController, "drive": DriveController}
