"""The MuJoCo backend: ground truth for every scene family."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from worldsim.physics import state as state_schema  # noqa: E402
from worldsim.physics.base import check_action, perturbation  # noqa: E402
from worldsim.physics.camera import CameraParams, camera_params  # noqa: E402
from worldsim.physics.drive_state import drive_state  # noqa: E402
from worldsim.physics.mujoco_render import OffscreenRenderer  # noqa: E402
from worldsim.scenes import (  # noqa: E402
    drive,
    family_of,  # noqa: E402
    push,
)
from worldsim.scenes.base import Family  # noqa: E402


class MujocoSimulator:
    """One scene in MuJoCo, rendered headless with ``mujoco.Renderer``.

    The model is rebuilt from the spec at every reset (a few milliseconds), so one simulator serves
    any world of its family; the renderer is kept while the model's size allows it.
    """

    def __init__(self, family: str | Family, width: int = 64, height: int = 64) -> None:
        self.family = family_of(family) if isinstance(family, str) else family
        self.width, self.height = int(width), int(height)
        self.spec: Any = None
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._renderer: OffscreenRenderer | None = None
        self._adapter = ADAPTERS[self.family.name]

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self, spec: Any, perturbation_m: float = 0.0, seed: int | None = None) -> None:
        if not isinstance(spec, self.family.spec_type):
            raise TypeError(
                f"{self.family.name} simulator needs a {self.family.spec_type.__name__}, got {spec!r}"
            )
        self.spec = spec
        self.model = mujoco.MjModel.from_xml_string(self.family.to_mjcf(spec))
        if self._renderer is not None:
            self._renderer.set_model(self.model)
        self.data = mujoco.MjData(self.model)
        mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        self._adapter.reset(self, perturbation(seed, self._adapter.n_perturbed(self), perturbation_m))
        mujoco.mj_forward(self.model, self.data)
        self._geom_to_object = self._adapter.geom_objects(self)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- dynamics -------------------------------------------------------------------------------

    def step(self, action: np.ndarray) -> None:
        self._require()
        a = np.clip(check_action(action, (2,)), -1.0, 1.0)
        self._adapter.actuate(self, a)
        hook = getattr(self._adapter, "substep", None)
        if hook is None:
            mujoco.mj_step(self.model, self.data, nstep=self.family.substeps)
        else:
            for _ in range(self.family.substeps):
                hook(self)
                mujoco.mj_step(self.model, self.data)
        # mj_step leaves positions (xpos, cameras, contacts) computed before its last integration:
        # recompute them so state() and render() show the state at the end of the control period.
        mujoco.mj_forward(self.model, self.data)

    @property
    def time_s(self) -> float:
        self._require()
        return float(self.data.time)

    def state(self) -> dict[str, np.ndarray]:
        self._require()
        return state_schema.finish(self.family.name, self._adapter.state(self), self.time_s)

    # -- pixels ---------------------------------------------------------------------------------

    def camera(self, name: str | None = None) -> CameraParams:
        self._require()
        rig = self.family.camera(name)
        return camera_params(rig, self.width, self.height, self._follow_x(rig.follow))

    def render(self, camera: str | None = None) -> np.ndarray:
        """RGB frame ``uint8[H, W, 3]``."""
        return self._prepared_renderer().render(self.data, self._place_camera(camera))

    def segment(self, camera: str | None = None) -> np.ndarray:
        """Object ids ``int32[H, W]``: 0 for scenery, ``ObjectInfo.object_id`` for movable objects."""
        return self._prepared_renderer().segment(self.data, self._place_camera(camera), self._geom_to_object)

    def _prepared_renderer(self) -> OffscreenRenderer:
        if self._renderer is None:
            self._renderer = OffscreenRenderer(self.width, self.height)
            self._renderer.set_model(self._require())
        return self._renderer

    def _place_camera(self, camera: str | None) -> int:
        """The camera's id, with a follow camera moved to its body's current x."""
        rig = self.family.camera(camera)
        cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, rig.name)
        if rig.follow is not None:
            self.data.cam_xpos[cam_id] = np.asarray(rig.pos_m) + np.array(
                [self._follow_x(rig.follow), 0.0, 0.0]
            )
        return cam_id

    def _follow_x(self, body: str | None) -> float:
        if body is None:
            return 0.0
        return float(self.data.body(body).xpos[0])

    def _require(self) -> mujoco.MjModel:
        if self.model is None:
            raise RuntimeError("call reset(spec) before using the simulator")
        return self.model

    # -- helpers for adapters -------------------------------------------------------------------

    def geom_id(self, name: str) -> int:
        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)

    def joint_qpos(self, name: str) -> int:
        return int(self.model.joint(name).qposadr[0])

    def joint_dof(self, name: str) -> int:
        return int(self.model.joint(name).dofadr[0])


# ---------------------------------------------------------------------------------------------
# per-family adapters: how an action becomes controls, and how the state is read


class _BallsAdapter:
    @staticmethod
    def n_perturbed(sim: MujocoSimulator) -> int:
        return 2 * len(sim.spec.balls)

    @staticmethod
    def reset(sim: MujocoSimulator, offsets_m: np.ndarray) -> None:
        for i in range(len(sim.spec.balls)):
            sim.data.qpos[sim.joint_qpos(f"ball{i}_x")] += offsets_m[2 * i]
            sim.data.qpos[sim.joint_qpos(f"ball{i}_z")] += offsets_m[2 * i + 1]

    @staticmethod
    def actuate(sim: MujocoSimulator, action: np.ndarray) -> None:
        sim.data.ctrl[:] = action

    @staticmethod
    def geom_objects(sim: MujocoSimulator) -> np.ndarray:
        table = np.zeros(sim.model.ngeom, dtype=np.int32)
        for i in range(len(sim.spec.balls)):
            table[sim.geom_id(f"ball{i}")] = i + 1
        return table

    @staticmethod
    def state(sim: MujocoSimulator) -> dict[str, np.ndarray]:
        n = len(sim.spec.balls)
        pos = np.array(
            [[sim.data.body(f"ball{i}").xpos[0], sim.data.body(f"ball{i}").xpos[2]] for i in range(n)]
        )
        vel = np.array(
            [
                [sim.data.qvel[sim.joint_dof(f"ball{i}_x")], sim.data.qvel[sim.joint_dof(f"ball{i}_z")]]
                for i in range(n)
            ]
        )
        spin = np.array([sim.data.qvel[sim.joint_dof(f"ball{i}_ry")] for i in range(n)])
        return {"pos_m": pos, "vel_mps": vel, "spin_radps": spin, "goal_x_m": sim.spec.goal_x_m}


class _PushAdapter:
    @staticmethod
    def n_perturbed(sim: MujocoSimulator) -> int:
        return 2

    @staticmethod
    def reset(sim: MujocoSimulator, offsets_m: np.ndarray) -> None:
        adr = sim.joint_qpos("object")
        sim.data.qpos[adr : adr + 2] += offsets_m

    @staticmethod
    def actuate(sim: MujocoSimulator, action: np.ndarray) -> None:
        sim.data.ctrl[:] = action * push.PUSHER_SPEED_MPS

    @staticmethod
    def geom_objects(sim: MujocoSimulator) -> np.ndarray:
        table = np.zeros(sim.model.ngeom, dtype=np.int32)
        table[sim.geom_id("object")] = 1
        table[sim.geom_id("pusher")] = 2
        return table

    @staticmethod
    def state(sim: MujocoSimulator) -> dict[str, np.ndarray]:
        d, spec = sim.data, sim.spec
        obj = d.body("object")
        dof = sim.joint_dof("object")
        goal = np.array([spec.goal_x_m, spec.goal_y_m])
        w, x, y, z = obj.xquat
        return {
            "pusher_pos_m": d.body("pusher").xpos[:2].copy(),
            "pusher_vel_mps": np.array(
                [d.qvel[sim.joint_dof("pusher_x")], d.qvel[sim.joint_dof("pusher_y")]]
            ),
            "object_pos_m": obj.xpos[:2].copy(),
            "object_yaw_rad": np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)),
            "object_vel_mps": d.qvel[dof : dof + 2].copy(),
            "goal_pos_m": goal,
            "object_goal_dist_m": np.linalg.norm(obj.xpos[:2] - goal),
        }


class _DriveAdapter:
    @staticmethod
    def n_perturbed(sim: MujocoSimulator) -> int:
        return 2

    @staticmethod
    def reset(sim: MujocoSimulator, offsets_m: np.ndarray) -> None:
        adr = sim.joint_qpos("ego")
        sim.data.qpos[adr : adr + 2] += offsets_m
        sim._wheel_dofs = [sim.joint_dof(f"{w}_spin") for w in drive.WHEELS]
        sim._ego_geoms = np.array([sim.geom_id("chassis")])
        sim._agent_geoms = np.array([sim.geom_id("lead"), sim.geom_id("ped")])
        sim._collided = False

    @staticmethod
    def actuate(sim: MujocoSimulator, action: np.ndarray) -> None:
        steer, pedal = float(action[0]), float(action[1])
        sim.data.ctrl[0:2] = steer * drive.MAX_STEER_RAD
        sim.data.ctrl[2:4] = max(pedal, 0.0)
        sim.model.dof_frictionloss[sim._wheel_dofs] = max(-pedal, 0.0) * drive.BRAKE_TORQUE_NM

    @staticmethod
    def substep(sim: MujocoSimulator) -> None:
        lead, ped = sim.spec.agent_positions(sim.data.time)
        sim.data.mocap_pos[0, :2] = lead
        sim.data.mocap_pos[1, :2] = ped
        if sim.data.ncon and not sim._collided:
            geoms = sim.data.contact.geom[: sim.data.ncon]
            hits = np.isin(geoms, sim._ego_geoms).any(1) & np.isin(geoms, sim._agent_geoms).any(1)
            sim._collided = bool((hits & (sim.data.contact.dist[: sim.data.ncon] < 0)).any())

    @staticmethod
    def geom_objects(sim: MujocoSimulator) -> np.ndarray:
        table = np.zeros(sim.model.ngeom, dtype=np.int32)
        for name in ("chassis", *(f"{w}_wheel" for w in drive.WHEELS)):
            table[sim.geom_id(name)] = 1
        if sim.spec.lead_colour:
            table[sim.geom_id("lead")] = 2
        if sim.spec.ped_colour:
            table[sim.geom_id("ped")] = 3
        return table

    @staticmethod
    def state(sim: MujocoSimulator) -> dict[str, np.ndarray]:
        d, spec = sim.data, sim.spec
        ego = d.body("ego")
        w, x, y, z = ego.xquat
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        dof = sim.joint_dof("ego")
        vel = d.qvel[dof : dof + 2].copy()
        pos = ego.xpos[:2].copy()
        lead, ped = d.mocap_pos[0, :2].copy(), d.mocap_pos[1, :2].copy()
        return drive_state(spec, pos, yaw, vel, lead, ped, sim._collided)


ADAPTERS: dict[str, Any] = {"balls": _BallsAdapter, "push": _PushAdapter, "drive": _DriveAdapter}
