"""The PyBullet backend: a second physics engine built from the same spec, for the engine floor.

Every scene is rebuilt from its spec with the geometry, masses, friction, restitution and actuation
of the MuJoCo model, as near as the engines allow, so the gap between the two engines on the same
actions measures how much two real simulators disagree. Known differences: PyBullet contacts are
rigid (MuJoCo's are soft springs), PyBullet combines the friction and restitution of two bodies by
multiplying them (MuJoCo's explicit pairs set them per pair), and servos here are computed from the
state at the start of each substep (MuJoCo integrates their damping implicitly).

Frames come from TinyRenderer (software, no GPU) with only ambient light, so colours are flat and
equal to ``colours.rgb_uint8``, as in MuJoCo.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from worldsim.physics import state as state_schema
from worldsim.physics.base import check_action, perturbation
from worldsim.physics.camera import CameraParams, camera_params
from worldsim.physics.drive_state import drive_state
from worldsim.scenes import balls, drive, family_of, push
from worldsim.scenes.base import Family
from worldsim.scenes.colours import rgb_uint8
from worldsim.scenes.mjcf import GRAVITY_MPS2

# Contacts are kept only while the bodies are this close (m). Bullet's default (2 cm) keeps a
# bouncing ball's contact alive after it leaves the floor and drops the restitution of low bounces.
CONTACT_BREAKING_M = 0.001
UNIT_QUAT = (0.0, 0.0, 0.0, 1.0)
_LOW_24_BITS = (1 << 24) - 1


def rgba(colour: str) -> list[float]:
    """The ``rgbaColor`` that TinyRenderer draws exactly as ``rgb_uint8(colour)``.

    TinyRenderer truncates ``c * 255`` to an integer; aiming at the middle of each integer step
    makes the truncation land on the rounded value that MuJoCo frames show.
    """
    return [(v + 0.5) / 255.0 for v in rgb_uint8(colour)] + [1.0]


def quat_yaw(yaw_rad: float) -> tuple[float, float, float, float]:
    """PyBullet quaternion (x, y, z, w) of a rotation by ``yaw_rad`` about +z."""
    return (0.0, 0.0, float(np.sin(yaw_rad / 2)), float(np.cos(yaw_rad / 2)))


def yaw_of(quat_xyzw: tuple[float, float, float, float]) -> float:
    """Rotation about +z (rad) of a PyBullet quaternion, as MuJoCo's adapters compute it."""
    x, y, z, w = quat_xyzw
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class PybulletSimulator:
    """One scene in PyBullet (its own ``DIRECT`` client, so many can live in one process).

    The world is rebuilt from the spec at every reset. ``step`` runs ``family.substeps`` physics
    steps of ``family.timestep_s``; a family with 1 substep at 500 Hz gives substep-resolution
    control of the same scene (tests use that to time bounces).
    """

    def __init__(self, family: str | Family, width: int = 64, height: int = 64) -> None:
        self.family = family_of(family) if isinstance(family, str) else family
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")
        self.spec: Any = None
        self._client: BulletClient | None = None
        self._twin: Any = None
        self._n_substeps = 0
        self._frame_key: tuple | None = None
        self._frame: tuple[np.ndarray, np.ndarray] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self, spec: Any, perturbation_m: float = 0.0, seed: int | None = None) -> None:
        if not isinstance(spec, self.family.spec_type):
            raise TypeError(
                f"{self.family.name} simulator needs a {self.family.spec_type.__name__}, got {spec!r}"
            )
        self.spec = spec
        if self._client is None:
            self._client = BulletClient(connection_mode=pybullet.DIRECT)
        c = self._client
        c.resetSimulation()
        c.setGravity(0.0, 0.0, -GRAVITY_MPS2)
        c.setPhysicsEngineParameter(
            fixedTimeStep=self.family.timestep_s,
            numSubSteps=1,
            deterministicOverlappingPairs=1,
        )
        twin_type = TWINS[self.family.name]
        c.setPhysicsEngineParameter(**twin_type.ENGINE)
        offsets = perturbation(seed, twin_type.n_perturbed(spec), perturbation_m)
        self._twin = twin_type(c, spec, offsets)
        self._n_substeps = 0
        self._frame_key = self._frame = None

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
        self._client = None
        self._twin = None

    # -- dynamics -------------------------------------------------------------------------------

    def step(self, action: np.ndarray) -> None:
        twin = self._require()
        twin.actuate(np.clip(check_action(action, (2,)), -1.0, 1.0))
        dt = self.family.timestep_s
        for _ in range(self.family.substeps):
            twin.before_substep(self._n_substeps * dt)
            self._client.stepSimulation()
            twin.after_substep()
            self._n_substeps += 1

    @property
    def time_s(self) -> float:
        self._require()
        return self._n_substeps * self.family.timestep_s

    def state(self) -> dict[str, np.ndarray]:
        return state_schema.finish(self.family.name, self._require().state(), self.time_s)

    # -- pixels ---------------------------------------------------------------------------------

    def camera(self, name: str | None = None) -> CameraParams:
        twin = self._require()
        rig = self.family.camera(name)
        return camera_params(rig, self.width, self.height, twin.follow_x(rig.follow))

    def render(self, camera: str | None = None) -> np.ndarray:
        """RGB frame ``uint8[H, W, 3]``."""
        return self._render(camera)[0].copy()

    def segment(self, camera: str | None = None) -> np.ndarray:
        """Object ids ``int32[H, W]``: 0 for scenery, ``ObjectInfo.object_id`` for movable objects."""
        return self._render(camera)[1].copy()

    def _render(self, camera: str | None) -> tuple[np.ndarray, np.ndarray]:
        # One TinyRenderer pass gives both colours and the mask; keep it until the world moves.
        twin = self._require()
        rig = self.family.camera(camera)
        key = (rig.name, self._n_substeps)
        if self._frame_key == key and self._frame is not None:
            return self._frame
        shift = np.array([twin.follow_x(rig.follow), 0.0, 0.0])
        c = self._client
        view = c.computeViewMatrix(
            np.add(rig.pos_m, shift).tolist(), np.add(rig.target_m, shift).tolist(), rig.up
        )
        distance = float(np.linalg.norm(np.subtract(rig.target_m, rig.pos_m)))
        # The near plane sits well in front of the scene: TinyRenderer's depth buffer then resolves the
        # millimetre steps between road, markings and goal discs without flicker.
        proj = list(
            c.computeProjectionMatrixFOV(
                rig.fovy_deg, self.width / self.height, 0.1 * distance, 10.0 * distance
            )
        )
        proj[8] += 1.0 / self.width
        proj[9] += 1.0 / self.height
        _, _, rgba_px, _, seg = c.getCameraImage(
            self.width,
            self.height,
            view,
            proj,
            shadow=0,
            lightAmbientCoeff=1.0,
            lightDiffuseCoeff=0.0,
            lightSpecularCoeff=0.0,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
        )
        rgb = np.asarray(rgba_px, dtype=np.uint8).reshape(self.height, self.width, 4)[..., :3].copy()
        self._frame = (rgb, twin.objects_of(np.asarray(seg, dtype=np.int64).reshape(self.height, self.width)))
        self._frame_key = key
        return self._frame

    def _require(self) -> Any:
        if self._twin is None:
            raise RuntimeError("call reset(spec) before using the simulator")
        return self._twin


# ---------------------------------------------------------------------------------------------
# building blocks


class _World:
    """Shared pieces of every twin: body creation, dynamics settings and the segmentation table."""

    ENGINE: dict[str, float] = {}  # engine parameters of this family, on top of the common ones

    def __init__(self, client: BulletClient) -> None:
        self.c = client
        self._seg_objects: dict[tuple[int, int], int] = {}  # (body id, link index) -> object id

    def static_box(
        self,
        half_m: tuple[float, float, float],
        pos_m: tuple[float, float, float],
        colour: str,
        collide: bool = True,
    ) -> int:
        """A fixed box of flat ``colour``; ``collide=False`` makes it visual only."""
        col = self.c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half_m) if collide else -1
        vis = self.c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half_m, rgbaColor=rgba(colour))
        return self.c.createMultiBody(0.0, col, vis, pos_m)

    def static_cylinder(self, radius_m: float, half_height_m: float, pos_m: tuple, colour: str) -> int:
        """A fixed, visual-only upright cylinder (markers)."""
        vis = self.c.createVisualShape(
            pybullet.GEOM_CYLINDER, radius=radius_m, length=2 * half_height_m, rgbaColor=rgba(colour)
        )
        return self.c.createMultiBody(0.0, -1, vis, pos_m)

    def properties(self, body: int, link: int = -1, **kwargs: Any) -> None:
        """Set contact and inertia properties of one body or link, and check that they took.

        PyBullet silently drops arguments of a ``changeDynamics`` call in some combinations (a
        link's friction next to ``linearDamping``, everything next to ``activationState``), so these
        get a call of their own and are read back.
        """
        self.c.changeDynamics(body, link, **kwargs)
        info = self.c.getDynamicsInfo(body, link)
        got = {"lateralFriction": info[1], "localInertiaDiagonal": info[2], "restitution": info[5]}
        got["rollingFriction"] = info[6]
        for key, want in kwargs.items():
            if not np.allclose(got[key], want, rtol=1e-6, atol=1e-9):
                raise RuntimeError(
                    f"PyBullet kept {key}={got[key]} for body {body} link {link}; wanted {want}"
                )

    def movable(self, body: int, links: range | list[int]) -> None:
        """Turn off what Bullet adds to moving bodies and MuJoCo lacks: velocity damping, sleeping,
        the 100 rad/s joint speed cap, and a velocity motor on every joint."""
        c = self.c
        c.changeDynamics(body, -1, linearDamping=0.0, angularDamping=0.0)
        for link in (-1, *links):
            c.changeDynamics(body, link, activationState=pybullet.ACTIVATION_STATE_DISABLE_SLEEPING)
            if link >= 0:
                c.changeDynamics(body, link, maxJointVelocity=1000.0)
        if links:
            n = len(links)
            c.setJointMotorControlArray(body, list(links), pybullet.VELOCITY_CONTROL, forces=[0.0] * n)

    def label(self, body: int, link: int, object_id: int) -> None:
        self._seg_objects[(body, link)] = object_id

    def objects_of(self, seg: np.ndarray) -> np.ndarray:
        """Segmentation values (body id + (link index + 1) << 24) to object ids; 0 for the rest."""
        out = np.zeros(seg.shape, dtype=np.int32)
        hit = seg >= 0
        body, link = seg[hit] & _LOW_24_BITS, (seg[hit] >> 24) - 1
        ids = np.zeros(body.shape, dtype=np.int32)
        for (b, l), obj in self._seg_objects.items():
            ids[(body == b) & (link == l)] = obj
        out[hit] = ids
        return out

    def follow_x(self, body: str | None) -> float:
        if body is None:
            return 0.0
        raise ValueError(f"no body {body!r} to follow in this scene")

    def before_substep(self, time_s: float) -> None:
        """Forces and kinematic motion for the coming substep (Bullet clears forces after each)."""

    def after_substep(self) -> None:
        """Observe the substep just taken (contacts)."""


def sphere_mesh(radius_m: float, segments: int = 32, rings: int = 8) -> tuple[list[list[float]], list[int]]:
    """Vertices and triangle indices of a sphere whose poles lie on the y axis.

    TinyRenderer draws ``GEOM_SPHERE`` as a coarse polyhedron whose outline covers 6 % less area
    than the ball; this mesh's outline seen along y (the Balls camera axis, also the spin axis) is
    a regular ``segments``-gon, within 1 % of the circle and unchanged as the ball spins.
    """
    theta = 2 * np.pi * np.arange(segments) / segments
    verts = [[0.0, -radius_m, 0.0], [0.0, radius_m, 0.0]]
    for phi in np.linspace(0.0, np.pi, rings + 1)[1:-1]:
        ring = radius_m * np.sin(phi)
        verts += [[ring * np.cos(t), -radius_m * np.cos(phi), ring * np.sin(t)] for t in theta]

    def v(ring: int, k: int) -> int:
        return 2 + ring * segments + k % segments

    tris: list[int] = []
    for k in range(segments):
        tris += [0, v(0, k + 1), v(0, k), 1, v(rings - 2, k), v(rings - 2, k + 1)]
        for ring in range(rings - 2):
            tris += [
                v(ring, k),
                v(ring, k + 1),
                v(ring + 1, k + 1),
                v(ring, k),
                v(ring + 1, k + 1),
                v(ring + 1, k),
            ]
    return verts, tris


# PyBullet keeps every mesh made from new vertex lists until the process ends (~170 kB per reset
# of a Balls world); one unit sphere, scaled per ball, is made once.
UNIT_SPHERE = sphere_mesh(1.0)


def _inertia_box(mass_kg: float, half: tuple[float, float, float]) -> list[float]:
    x, y, z = (2 * h for h in half)
    return [mass_kg * (y * y + z * z) / 12, mass_kg * (x * x + z * z) / 12, mass_kg * (x * x + y * y) / 12]


def _inertia_cylinder_z(mass_kg: float, radius_m: float, half_height_m: float) -> list[float]:
    across = mass_kg * (3 * radius_m**2 + (2 * half_height_m) ** 2) / 12
    return [across, across, mass_kg * radius_m**2 / 2]


# ---------------------------------------------------------------------------------------------
# Balls


class _BallsTwin(_World):
    """Each ball is a multibody on a fixed base: slide x, slide z, hinge y, as in the MJCF.

    Scenery has restitution 1, friction 1 and no rolling friction, so with Bullet's products every
    ball-scenery contact gets the ball's own coefficients and ball-ball contacts get the product of
    the two balls' coefficients, as the MJCF contact pairs set them. Bullet's rolling friction of a
    pair is ``rf_a * mu_b + rf_b * mu_a``, so a ball's rolling friction against scenery is the MJCF's.
    """

    # Bullet's position correction pushes a penetrating ball out with extra speed: a ball of
    # restitution 0.8 dropped from 1 m came back 16 % too high. Without it, bounce apexes match e^2.
    ENGINE = {
        "contactBreakingThreshold": CONTACT_BREAKING_M,
        "restitutionVelocityThreshold": 0.0,
        "contactERP": 0.0,
    }

    @staticmethod
    def n_perturbed(spec: balls.BallsSpec) -> int:
        return 2 * len(spec.balls)

    def __init__(self, client: BulletClient, spec: balls.BallsSpec, offsets_m: np.ndarray) -> None:
        super().__init__(client)
        self.spec = spec
        w, h, t, d = balls.HALF_WIDTH_M, balls.HEIGHT_M, balls.WALL_M, balls.DEPTH_M
        self.static_box((w + t, 0.01, h / 2 + t), (0, d + 0.01, h / 2), "backdrop", collide=False)
        self.static_box((0.06, 0.005, h / 2), (spec.goal_x_m, d - 0.005, h / 2), "goal", collide=False)
        scenery = [
            self.static_box((w + t, d, t), (0, 0, -t), "floor"),
            self.static_box((w + t, d, t), (0, 0, h + t), "wall"),
            self.static_box((t, d, h / 2 + t), (-w - t, 0, h / 2), "wall"),
            self.static_box((t, d, h / 2 + t), (w + t, 0, h / 2), "wall"),
        ]
        for body in scenery:
            self.properties(body, restitution=1.0, lateralFriction=1.0, rollingFriction=0.0)
        self.bodies = [self._ball(i, b, offsets_m[2 * i : 2 * i + 2]) for i, b in enumerate(spec.balls)]
        self._force = np.zeros(2)

    def _ball(self, i: int, b: balls.Ball, offset_m: np.ndarray) -> int:
        c = self.c
        col = c.createCollisionShape(pybullet.GEOM_SPHERE, radius=b.radius_m)
        verts, tris = UNIT_SPHERE
        vis = c.createVisualShape(
            pybullet.GEOM_MESH,
            vertices=verts,
            indices=tris,
            meshScale=[b.radius_m] * 3,
            rgbaColor=rgba(b.colour),
        )
        # Link frames sit at the origin, so joint positions are world x and z.
        body = c.createMultiBody(
            baseMass=0.0,
            basePosition=(0.0, 0.0, 0.0),
            linkMasses=[0.0, 0.0, b.mass_kg],
            linkCollisionShapeIndices=[-1, -1, col],
            linkVisualShapeIndices=[-1, -1, vis],
            linkPositions=[(0.0, 0.0, 0.0)] * 3,
            linkOrientations=[UNIT_QUAT] * 3,
            linkInertialFramePositions=[(0.0, 0.0, 0.0)] * 3,
            linkInertialFrameOrientations=[UNIT_QUAT] * 3,
            linkParentIndices=[0, 1, 2],
            linkJointTypes=[pybullet.JOINT_PRISMATIC, pybullet.JOINT_PRISMATIC, pybullet.JOINT_REVOLUTE],
            linkJointAxis=[(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)],
        )
        self.movable(body, range(3))
        inertia = 0.4 * b.mass_kg * b.radius_m**2
        self.properties(
            body,
            2,
            localInertiaDiagonal=[inertia] * 3,
            restitution=b.restitution,
            lateralFriction=max(b.friction, 1e-4),
            rollingFriction=balls.ROLLING_FRICTION_M,
        )
        c.resetJointState(body, 0, b.x_m + offset_m[0], b.vx_mps)
        c.resetJointState(body, 1, b.z_m + offset_m[1], b.vz_mps)
        c.resetJointState(body, 2, 0.0, 0.0)
        self.label(body, 2, i + 1)
        return body

    def actuate(self, action: np.ndarray) -> None:
        self._force = action * self.spec.agent_force_n()

    def before_substep(self, time_s: float) -> None:
        self.c.setJointMotorControlArray(
            self.bodies[0], [0, 1], pybullet.TORQUE_CONTROL, forces=[float(f) for f in self._force]
        )

    def state(self) -> dict[str, np.ndarray]:
        joints = [self.c.getJointStates(body, [0, 1, 2]) for body in self.bodies]
        return {
            "pos_m": np.array([[j[0][0], j[1][0]] for j in joints]),
            "vel_mps": np.array([[j[0][1], j[1][1]] for j in joints]),
            "spin_radps": np.array([j[2][1] for j in joints]),
            "goal_x_m": self.spec.goal_x_m,
        }


# ---------------------------------------------------------------------------------------------
# Push


class _PushTwin(_World):
    """A free object on the table, and a pusher on x and y slides at its fixed height.

    Bullet multiplies friction coefficients: the table has friction 1, so object-table sliding gets
    the spec's friction; pusher and rims get ``PUSHER_FRICTION / spec.friction`` so that their
    contacts with the object get ``PUSHER_FRICTION`` as in the MJCF (pusher-rim contacts then get
    the square of that, a pair MuJoCo sets to ``PUSHER_FRICTION``; the pusher barely slides on rims).
    The pusher's velocity servo (gain ``PUSHER_KV``, force limit ``PUSHER_FORCE_N``) is applied as a
    force every substep, as MuJoCo's velocity actuator computes it.
    """

    @staticmethod
    def n_perturbed(spec: push.PushSpec) -> int:
        return 2

    def __init__(self, client: BulletClient, spec: push.PushSpec, offsets_m: np.ndarray) -> None:
        super().__init__(client)
        self.spec = spec
        t, rh, a = push.RIM_M, push.RIM_HEIGHT_M, push.HALF_TABLE_M
        mu = max(spec.friction, 1e-4)
        other_mu = push.PUSHER_FRICTION / mu
        table = self.static_box((a + 2 * t, a + 2 * t, 0.02), (0, 0, -0.02), "table")
        self.properties(table, lateralFriction=1.0)
        self.static_cylinder(push.GOAL_RADIUS_M, 0.0005, (spec.goal_x_m, spec.goal_y_m, 0.0005), "goal")
        rims = [
            self.static_box((a + 2 * t, t, rh / 2), (0, a + t, rh / 2), "rim"),
            self.static_box((a + 2 * t, t, rh / 2), (0, -a - t, rh / 2), "rim"),
            self.static_box((t, a, rh / 2), (a + t, 0, rh / 2), "rim"),
            self.static_box((t, a, rh / 2), (-a - t, 0, rh / 2), "rim"),
        ]
        for rim in rims:
            self.properties(rim, lateralFriction=other_mu)
        self.object = self._object(spec, offsets_m, mu)
        self.pusher = self._pusher(spec, other_mu)
        self.c.setCollisionFilterPair(self.pusher, table, 1, -1, 0)  # MuJoCo has no pusher-table pair
        self._target_mps = np.zeros(2)

    def _object(self, spec: push.PushSpec, offset_m: np.ndarray, mu: float) -> int:
        c, hz = self.c, push.OBJECT_HALF_HEIGHT_M
        if spec.shape == "box":
            half = (spec.size_m, spec.size_m, hz)
            col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
            vis = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=rgba(spec.colour))
            inertia = _inertia_box(spec.mass_kg, half)
        else:
            col = c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=spec.size_m, height=2 * hz)
            vis = c.createVisualShape(
                pybullet.GEOM_CYLINDER, radius=spec.size_m, length=2 * hz, rgbaColor=rgba(spec.colour)
            )
            inertia = _inertia_cylinder_z(spec.mass_kg, spec.size_m, hz)
        pos = (spec.object_x_m + offset_m[0], spec.object_y_m + offset_m[1], hz)
        body = c.createMultiBody(spec.mass_kg, col, vis, pos, quat_yaw(spec.object_yaw_rad))
        self.movable(body, [])
        self.properties(body, localInertiaDiagonal=inertia, lateralFriction=mu)
        self.label(body, -1, 1)
        return body

    def _pusher(self, spec: push.PushSpec, mu: float) -> int:
        c, r, hz = self.c, push.PUSHER_RADIUS_M, push.PUSHER_HALF_HEIGHT_M
        col = c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=r, height=2 * hz)
        vis = c.createVisualShape(pybullet.GEOM_CYLINDER, radius=r, length=2 * hz, rgbaColor=rgba("pusher"))
        body = c.createMultiBody(
            baseMass=0.0,
            basePosition=(0.0, 0.0, hz + 0.002),
            linkMasses=[0.0, push.PUSHER_MASS_KG],
            linkCollisionShapeIndices=[-1, col],
            linkVisualShapeIndices=[-1, vis],
            linkPositions=[(0.0, 0.0, 0.0)] * 2,
            linkOrientations=[UNIT_QUAT] * 2,
            linkInertialFramePositions=[(0.0, 0.0, 0.0)] * 2,
            linkInertialFrameOrientations=[UNIT_QUAT] * 2,
            linkParentIndices=[0, 1],
            linkJointTypes=[pybullet.JOINT_PRISMATIC, pybullet.JOINT_PRISMATIC],
            linkJointAxis=[(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)],
        )
        self.movable(body, range(2))
        self.properties(
            body, 1, localInertiaDiagonal=_inertia_cylinder_z(push.PUSHER_MASS_KG, r, hz), lateralFriction=mu
        )
        c.resetJointState(body, 0, spec.pusher_x_m, 0.0)
        c.resetJointState(body, 1, spec.pusher_y_m, 0.0)
        self.label(body, 1, 2)
        return body

    def actuate(self, action: np.ndarray) -> None:
        self._target_mps = action * push.PUSHER_SPEED_MPS

    def before_substep(self, time_s: float) -> None:
        vel = np.array([j[1] for j in self.c.getJointStates(self.pusher, [0, 1])])
        force = np.clip(push.PUSHER_KV * (self._target_mps - vel), -push.PUSHER_FORCE_N, push.PUSHER_FORCE_N)
        self.c.setJointMotorControlArray(self.pusher, [0, 1], pybullet.TORQUE_CONTROL, forces=force.tolist())

    def state(self) -> dict[str, np.ndarray]:
        c, spec = self.c, self.spec
        joints = c.getJointStates(self.pusher, [0, 1])
        pos, quat = c.getBasePositionAndOrientation(self.object)
        vel, _ = c.getBaseVelocity(self.object)
        obj = np.array(pos[:2])
        goal = np.array([spec.goal_x_m, spec.goal_y_m])
        return {
            "pusher_pos_m": np.array([joints[0][0], joints[1][0]]),
            "pusher_vel_mps": np.array([joints[0][1], joints[1][1]]),
            "object_pos_m": obj,
            "object_yaw_rad": yaw_of(quat),
            "object_vel_mps": np.array(vel[:2]),
            "goal_pos_m": goal,
            "object_goal_dist_m": np.linalg.norm(obj - goal),
        }


# ---------------------------------------------------------------------------------------------
# Drive

# link indices of the ego multibody
_FL_STEER, _FL, _FR_STEER, _FR, _RL, _RR = range(6)
_STEERS = [_FL_STEER, _FR_STEER]
_SPINS = [_FL, _FR, _RL, _RR]
_REAR = [_RL, _RR]
STEER_KP, STEER_DAMPING, STEER_ARMATURE = drive.STEER_KP, drive.STEER_DAMPING, drive.STEER_ARMATURE


class _DriveTwin(_World):
    """The ego car as one multibody: chassis, two steering links, four wheels; kinematic agents.

    Wheels touch the road only (friction 1 times the road's ``spec.friction``); the chassis touches
    only the lead car and the pedestrian (0.5 times 1), as the MJCF pairs say. The lead car and the
    pedestrian are fixed bodies moved to their scripted positions before every substep, like MuJoCo
    mocap bodies. Brakes are velocity motors with target 0 whose force limit is the brake torque: a
    dry friction on each wheel, like MuJoCo's joint ``frictionloss``.
    """

    @staticmethod
    def n_perturbed(spec: drive.DriveSpec) -> int:
        return 2

    def __init__(self, client: BulletClient, spec: drive.DriveSpec, offsets_m: np.ndarray) -> None:
        super().__init__(client)
        self.spec = spec
        self._road(spec)
        self.ego = self._car(spec, offsets_m)
        lead, ped = spec.agent_positions(0.0)
        lx, hy, hz = drive.CAR_HALF
        self.lead = self.static_box(
            (lx, hy, hz), (lead[0], lead[1], drive.CHASSIS_Z_M), spec.lead_colour or "wall"
        )
        ped_col = self.c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=drive.PED_RADIUS_M, height=1.8)
        ped_vis = self.c.createVisualShape(
            pybullet.GEOM_CYLINDER,
            radius=drive.PED_RADIUS_M,
            length=1.8,
            rgbaColor=rgba(spec.ped_colour or "wall"),
        )
        self.ped = self.c.createMultiBody(0.0, ped_col, ped_vis, (ped[0], ped[1], drive.PED_HALF_HEIGHT_M))
        for agent in (self.lead, self.ped):
            self.properties(agent, lateralFriction=1.0)
            for link in _SPINS:
                self.c.setCollisionFilterPair(self.ego, agent, link, -1, 0)
        self.c.setCollisionFilterPair(self.ego, self.ground, -1, -1, 0)
        if spec.lead_colour:
            self.label(self.lead, -1, 2)
        if spec.ped_colour:
            self.label(self.ped, -1, 3)
        self.collided = False
        self._steer_rad = 0.0
        self._throttle = 0.0
        self._brake_nm = 0.0

    def _road(self, spec: drive.DriveSpec) -> None:
        c = self.c
        # An infinite plane to drive on, drawn as the MJCF's finite grass (TinyRenderer would draw a
        # body without a visual shape as its collision shape: a checkered plane).
        ground_col = c.createCollisionShape(pybullet.GEOM_PLANE)
        ground_vis = c.createVisualShape(
            pybullet.GEOM_BOX,
            halfExtents=(700.0, 60.0, 0.0005),
            visualFramePosition=(400.0, 0.0, -0.0005),
            rgbaColor=rgba("grass"),
        )
        self.ground = c.createMultiBody(0.0, ground_col, ground_vis, (0.0, 0.0, 0.0))
        self.properties(self.ground, lateralFriction=spec.friction)
        half_len, mid = (
            (drive.ROAD_END_M - drive.ROAD_START_M) / 2,
            (drive.ROAD_END_M + drive.ROAD_START_M) / 2,
        )
        self.static_box(
            (half_len, drive.ROAD_HALF_WIDTH_M, 0.0005), (mid, 0.0, 0.0005), "road", collide=False
        )
        # All markings (two edge lines, the dashes) are one visual-only body: one draw call per frame.
        edge = drive.ROAD_HALF_WIDTH_M - drive.MARK_HALF_WIDTH_M - 0.05
        halves = [(half_len, drive.MARK_HALF_WIDTH_M, 0.0005)] * 2
        centres = [(mid, edge, 0.0015), (mid, -edge, 0.0015)]
        for x0 in np.arange(drive.ROAD_START_M, drive.ROAD_END_M, drive.DASH_PERIOD_M):
            halves.append((drive.DASH_M / 2, drive.MARK_HALF_WIDTH_M, 0.0005))
            centres.append((x0 + drive.DASH_M / 2, 0.0, 0.0015))
        vis = c.createVisualShapeArray(
            shapeTypes=[pybullet.GEOM_BOX] * len(halves), halfExtents=halves, visualFramePositions=centres
        )
        marks = c.createMultiBody(0.0, -1, vis, (0.0, 0.0, 0.0))
        c.changeVisualShape(marks, -1, rgbaColor=rgba("marking"))

    def _car(self, spec: drive.DriveSpec, offset_m: np.ndarray) -> int:
        c = self.c
        lx, hy, hz = drive.CAR_HALF
        r, hw = drive.WHEEL_RADIUS_M, drive.WHEEL_HALF_WIDTH_M
        chassis_col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=drive.CAR_HALF)
        chassis_vis = c.createVisualShape(
            pybullet.GEOM_BOX, halfExtents=drive.CAR_HALF, rgbaColor=rgba(spec.ego_colour)
        )
        quat_x90 = (float(np.sin(np.pi / 4)), 0.0, 0.0, float(np.cos(np.pi / 4)))  # cylinder axis z -> y
        # A sphere of the wheel's radius touches flat ground at the wheel's centre plane. Bullet's
        # cylinder touches it at one rim edge, chosen arbitrarily: the car then pulls to one side.
        wheel_col = c.createCollisionShape(pybullet.GEOM_SPHERE, radius=r)
        wheel_vis = c.createVisualShape(
            pybullet.GEOM_CYLINDER,
            radius=r,
            length=2 * hw,
            rgbaColor=rgba("pusher"),
            visualFrameOrientation=quat_x90,
        )
        z = r - drive.CHASSIS_Z_M
        x, y = drive.WHEEL_X_M, drive.WHEEL_Y_M
        revolute = pybullet.JOINT_REVOLUTE
        y0 = drive.lane_y(spec.ego_lane)
        body = c.createMultiBody(
            baseMass=drive.CHASSIS_MASS_KG,
            baseCollisionShapeIndex=chassis_col,
            baseVisualShapeIndex=chassis_vis,
            basePosition=(offset_m[0], y0 + offset_m[1], drive.CHASSIS_Z_M),
            linkMasses=[
                1.0,
                drive.WHEEL_MASS_KG,
                1.0,
                drive.WHEEL_MASS_KG,
                drive.WHEEL_MASS_KG,
                drive.WHEEL_MASS_KG,
            ],
            linkCollisionShapeIndices=[-1, wheel_col, -1, wheel_col, wheel_col, wheel_col],
            linkVisualShapeIndices=[-1, wheel_vis, -1, wheel_vis, wheel_vis, wheel_vis],
            linkPositions=[(x, y, z), (0, 0, 0), (x, -y, z), (0, 0, 0), (-x, y, z), (-x, -y, z)],
            linkOrientations=[UNIT_QUAT] * 6,
            linkInertialFramePositions=[(0.0, 0.0, 0.0)] * 6,
            linkInertialFrameOrientations=[UNIT_QUAT] * 6,
            linkParentIndices=[0, 1, 0, 3, 0, 0],
            linkJointTypes=[revolute] * 6,
            linkJointAxis=[(0, 0, 1), (0, 1, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0)],
        )
        self.movable(body, range(6))
        self.properties(
            body,
            -1,
            localInertiaDiagonal=_inertia_box(drive.CHASSIS_MASS_KG, drive.CAR_HALF),
            lateralFriction=0.5,
        )
        wheel_inertia = _inertia_cylinder_z(drive.WHEEL_MASS_KG, r, hw)
        wheel_inertia = [wheel_inertia[0], wheel_inertia[2], wheel_inertia[1]]  # axle along y
        for link in _STEERS:
            self.properties(body, link, localInertiaDiagonal=[0.1, 0.1, 0.1 + STEER_ARMATURE])
            c.changeDynamics(
                body, link, jointLowerLimit=-drive.MAX_STEER_RAD, jointUpperLimit=drive.MAX_STEER_RAD
            )
        for link in _SPINS:
            self.properties(body, link, localInertiaDiagonal=wheel_inertia, lateralFriction=1.0)
        v = spec.ego_speed_mps
        c.resetBaseVelocity(body, (v, 0.0, 0.0), (0.0, 0.0, 0.0))
        for link in _SPINS:
            c.resetJointState(body, link, 0.0, v / r)
        for link in (-1, *range(6)):
            self.label(body, link, 1)
        return body

    def actuate(self, action: np.ndarray) -> None:
        steer, pedal = float(action[0]), float(action[1])
        self._steer_rad = steer * drive.MAX_STEER_RAD
        self._throttle = max(pedal, 0.0)
        brake = max(-pedal, 0.0) * drive.BRAKE_TORQUE_NM
        if brake != self._brake_nm:
            self._brake_nm = brake
            self.c.setJointMotorControlArray(
                self.ego, _SPINS, pybullet.VELOCITY_CONTROL, targetVelocities=[0.0] * 4, forces=[brake] * 4
            )

    def before_substep(self, time_s: float) -> None:
        c = self.c
        lead, ped = self.spec.agent_positions(time_s)
        c.resetBasePositionAndOrientation(self.lead, (lead[0], lead[1], drive.CHASSIS_Z_M), UNIT_QUAT)
        c.resetBasePositionAndOrientation(self.ped, (ped[0], ped[1], drive.PED_HALF_HEIGHT_M), UNIT_QUAT)
        joints = c.getJointStates(self.ego, list(range(6)))
        torques = np.zeros(6)
        for link in _STEERS:
            q, qd = joints[link][0], joints[link][1]
            torques[link] = STEER_KP * (self._steer_rad - q) - STEER_DAMPING * qd
        for link in _SPINS:
            torques[link] = -drive.ROLLING_DAMPING * joints[link][1]
        torques[_REAR] += self._throttle * drive.MOTOR_TORQUE_NM
        c.setJointMotorControlArray(
            self.ego, list(range(6)), pybullet.TORQUE_CONTROL, forces=torques.tolist()
        )

    def after_substep(self) -> None:
        if self.collided:
            return
        for agent, present in ((self.lead, self.spec.lead_colour), (self.ped, self.spec.ped_colour)):
            if present and any(p[8] < 0 for p in self.c.getContactPoints(self.ego, agent, -1, -1)):
                self.collided = True

    def follow_x(self, body: str | None) -> float:
        if body == "ego":
            return float(self.c.getBasePositionAndOrientation(self.ego)[0][0])
        return super().follow_x(body)

    def state(self) -> dict[str, np.ndarray]:
        c = self.c
        pos, quat = c.getBasePositionAndOrientation(self.ego)
        vel, _ = c.getBaseVelocity(self.ego)
        lead = np.array(c.getBasePositionAndOrientation(self.lead)[0][:2])
        ped = np.array(c.getBasePositionAndOrientation(self.ped)[0][:2])
        return drive_state(
            self.spec, np.array(pos[:2]), yaw_of(quat), np.array(vel[:2]), lead, ped, self.collided
        )


TWINS: dict[str, type] = {"balls": _BallsTwin, "push": _PushTwin, "drive": _DriveTwin}
