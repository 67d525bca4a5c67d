"""Balls: 1-3 balls in a closed, walled arena seen from the side.

The balls move in the vertical x-z plane (slide x, slide z and hinge y joints), are dropped and
thrown, bounce on the floor, walls and ceiling, collide with each other and roll with friction.
Ball 0 is the agent: the action is a 2-D force (x, z) on it, each axis in [-1, 1] times
``AGENT_FORCE_G`` of its weight (too weak to lift it, strong enough to steer). The task: bring the
agent ball under the orange goal band on the backdrop and keep it there (a continuing task).

Physics to see: gravity, restitution, momentum exchange in collisions, rolling friction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldsim.scenes import prompts
from worldsim.scenes.base import CameraRig, Family, Footprint, ObjectInfo, check_split, quantise, uniform
from worldsim.scenes.colours import OBJECT_COLOURS, rgb_uint8
from worldsim.scenes.mjcf import GRAVITY_MPS2, document, solref_for_restitution
from worldsim.scenes.prompts import Attribute, PromptError, check_range

HALF_WIDTH_M = 1.0  # inner arena spans x in [-1, 1]
HEIGHT_M = 2.0  # inner arena spans z in [0, 2]
WALL_M = 0.05  # wall thickness
DEPTH_M = 0.3  # half depth (y) of walls, floor and ceiling; balls move at y = 0
AGENT_FORCE_G = 0.6
CONTACT_STIFFNESS = 20000.0
ROLLING_FRICTION_M = 0.002
# Stiff friction on an elliptic cone: with MuJoCo's default soft friction a ball landing at 1 m/s
# with friction 0.5 kept 0.83 m/s of its tangential speed, against 0.65 m/s in a hard-contact engine.
FRICTION_SOLREF = "0.004 1"
BALL_COLOURS = ("red", "blue", "green", "yellow")
MAX_BALLS = 3

CAMERAS = (
    CameraRig("side", pos_m=(0.0, -3.4, 1.0), target_m=(0.0, 0.0, 1.0), up=(0.0, 0.0, 1.0), fovy_deg=36.0),
)


@dataclass(frozen=True)
class Ball:
    colour: str
    radius_m: float
    mass_kg: float
    restitution: float
    friction: float
    x_m: float
    z_m: float
    vx_mps: float = 0.0
    vz_mps: float = 0.0


@dataclass(frozen=True)
class BallsSpec:
    """A Balls world. ``balls[0]`` is the agent; ``goal_x_m`` is the centre of the goal band."""

    balls: tuple[Ball, ...]
    goal_x_m: float

    family = "balls"

    @property
    def agent(self) -> Ball:
        return self.balls[0]

    def agent_force_n(self) -> float:
        """Force in newtons that an action of 1.0 applies on each axis."""
        return AGENT_FORCE_G * self.agent.mass_kg * GRAVITY_MPS2


# ---------------------------------------------------------------------------------------------
# samplers

_ID = dict(
    radius=(0.14, 0.20), mass=(0.5, 2.0), restitution=(0.5, 0.85), friction=(0.3, 0.8), speed=(0.0, 2.0)
)
_OOD = dict(
    radius=(0.21, 0.25), mass=(2.5, 4.0), restitution=(0.88, 0.95), friction=(0.1, 0.25), speed=(2.5, 3.5)
)


def sample(rng: np.random.Generator, split: str = "id") -> BallsSpec:
    """Draw a world: in-distribution ranges for ``split="id"``, ranges outside them for ``"ood"``."""
    ranges = _ID if check_split(split) == "id" else _OOD
    n = int(rng.integers(1, MAX_BALLS + 1))
    colours = rng.permutation(BALL_COLOURS)[:n]
    balls: list[Ball] = []
    for colour in colours:
        radius = uniform(rng, *ranges["radius"])
        for _ in range(200):
            x = uniform(rng, -HALF_WIDTH_M + radius + 0.02, HALF_WIDTH_M - radius - 0.02)
            z = uniform(rng, max(radius + 0.02, 0.4), 1.6)
            if all(np.hypot(x - b.x_m, z - b.z_m) > radius + b.radius_m + 0.05 for b in balls):
                break
        else:  # pragma: no cover - the arena always has room for three balls
            raise RuntimeError("could not place balls without overlap")
        speed = rng.uniform(*ranges["speed"])
        angle = rng.uniform(0, 2 * np.pi)
        balls.append(
            Ball(
                colour=str(colour),
                radius_m=radius,
                mass_kg=uniform(rng, *ranges["mass"]),
                restitution=uniform(rng, *ranges["restitution"]),
                friction=uniform(rng, *ranges["friction"]),
                x_m=x,
                z_m=z,
                vx_mps=quantise(speed * np.cos(angle)),
                vz_mps=quantise(speed * np.sin(angle)),
            )
        )
    goal = uniform(rng, -0.8, 0.8)
    return validate(BallsSpec(balls=tuple(balls), goal_x_m=goal))


def validate(spec: BallsSpec) -> BallsSpec:
    """Reject worlds that cannot exist: balls outside the arena or overlapping, absurd parameters."""
    if not 1 <= len(spec.balls) <= MAX_BALLS:
        raise PromptError(f"a Balls world has 1 to {MAX_BALLS} balls, got {len(spec.balls)}")
    colours = [b.colour for b in spec.balls]
    if len(set(colours)) != len(colours):
        raise PromptError(f"ball colours must be distinct, got {colours}")
    for b in spec.balls:
        if b.colour not in OBJECT_COLOURS:
            raise PromptError(f"unknown colour {b.colour!r}; colours: {', '.join(OBJECT_COLOURS)}")
        check_range(f"{b.colour} ball radius", b.radius_m, 0.05, 0.4)
        check_range(f"{b.colour} ball mass", b.mass_kg, 0.05, 20.0)
        check_range(f"{b.colour} ball restitution", b.restitution, 0.0, 0.99)
        check_range(f"{b.colour} ball friction", b.friction, 0.0, 2.0)
        check_range(f"{b.colour} ball x", b.x_m, -HALF_WIDTH_M + b.radius_m, HALF_WIDTH_M - b.radius_m)
        check_range(f"{b.colour} ball z", b.z_m, b.radius_m, HEIGHT_M - b.radius_m)
        check_range(f"{b.colour} ball vx", b.vx_mps, -10.0, 10.0)
        check_range(f"{b.colour} ball vz", b.vz_mps, -10.0, 10.0)
    for i, a in enumerate(spec.balls):
        for b in spec.balls[i + 1 :]:
            if np.hypot(a.x_m - b.x_m, a.z_m - b.z_m) < a.radius_m + b.radius_m:
                raise PromptError(f"the {a.colour} and {b.colour} balls overlap at their start positions")
    check_range("goal x", spec.goal_x_m, -HALF_WIDTH_M, HALF_WIDTH_M)
    return spec


# ---------------------------------------------------------------------------------------------
# prompt grammar

_BALL_ATTRS = (
    Attribute("radius", "m", 0.17),
    Attribute("mass", "kg", 1.0),
    Attribute("restitution", "", 0.7),
    Attribute("friction", "", 0.5),
    Attribute("x", "m"),
    Attribute("z", "m", 1.0),
    Attribute("vx", "m/s", 0.0),
    Attribute("vz", "m/s", 0.0),
)
SUBJECTS = {
    "<colour> agent ball": _BALL_ATTRS,
    "<colour> ball": _BALL_ATTRS,
    "goal": (Attribute("x", "m", 0.6),),
}
_DEFAULT_X = (-0.5, 0.1, 0.6)


def caption(spec: BallsSpec) -> str:
    clauses = []
    for i, b in enumerate(spec.balls):
        values = (b.radius_m, b.mass_kg, b.restitution, b.friction, b.x_m, b.z_m, b.vx_mps, b.vz_mps)
        subject = f"{b.colour} agent ball" if i == 0 else f"{b.colour} ball"
        clauses.append(prompts.format_clause(subject, list(zip(_BALL_ATTRS, values, strict=True))))
    clauses.append(prompts.format_clause("goal", [(SUBJECTS["goal"][0], spec.goal_x_m)]))
    return prompts.format_prompt("balls", clauses)


EXAMPLE = "balls: red agent ball, radius 0.15 m, x -0.50 m, z 1.20 m, vx 1.00 m/s; blue ball, x 0.40 m; goal, x 0.60 m"


def parse(body: str) -> BallsSpec:
    """Build a spec from the clauses of a ``balls:`` prompt; attributes left out take defaults."""
    clauses = prompts.parse_clauses(body, SUBJECTS, "balls", EXAMPLE)
    agents = [c for c in clauses if c.subject.endswith("agent ball")]
    others = [c for c in clauses if c.subject.endswith(" ball") and not c.subject.endswith("agent ball")]
    goals = [c for c in clauses if c.subject == "goal"]
    if len(agents) != 1:
        raise PromptError(
            f"a Balls prompt names exactly one agent ball, got {len(agents)}\n"
            + prompts.grammar_help("balls", SUBJECTS, EXAMPLE)
        )
    if len(goals) > 1:
        raise PromptError("a Balls prompt names at most one goal")
    balls = []
    for i, c in enumerate(agents + others):
        d = {a.name: a.default for a in _BALL_ATTRS}
        d["x"] = _DEFAULT_X[min(i, len(_DEFAULT_X) - 1)]
        balls.append(
            Ball(
                colour=c.subject.split(" ")[0],
                radius_m=c.get("radius", d["radius"]),
                mass_kg=c.get("mass", d["mass"]),
                restitution=c.get("restitution", d["restitution"]),
                friction=c.get("friction", d["friction"]),
                x_m=c.get("x", d["x"]),
                z_m=c.get("z", d["z"]),
                vx_mps=c.get("vx", 0.0),
                vz_mps=c.get("vz", 0.0),
            )
        )
    goal_x = goals[0].get("x", 0.6) if goals else 0.6
    return validate(BallsSpec(balls=tuple(balls), goal_x_m=goal_x))


def from_dict(d: dict) -> BallsSpec:
    return BallsSpec(balls=tuple(Ball(**b) for b in d["balls"]), goal_x_m=d["goal_x_m"])


# ---------------------------------------------------------------------------------------------
# MJCF


def _box(name: str, pos: tuple[float, float, float], half: tuple[float, float, float], mat: str) -> str:
    p = " ".join(f"{v:.4f}" for v in pos)
    s = " ".join(f"{v:.4f}" for v in half)
    return f'    <geom name="{name}" type="box" pos="{p}" size="{s}" material="{mat}" contype="0" conaffinity="0"/>'


STATIC_GEOMS = ("floor", "ceiling", "wall_left", "wall_right")


def to_mjcf(spec: BallsSpec) -> str:
    """The MuJoCo model of a Balls world. Contacts are explicit pairs so each pair's restitution
    and friction match the PyBullet twin's (which multiplies the two bodies' coefficients)."""
    w, h, t, d = HALF_WIDTH_M, HEIGHT_M, WALL_M, DEPTH_M
    geoms = [
        _box("backdrop", (0, d + 0.01, h / 2), (w + t, 0.01, h / 2 + t), "backdrop"),
        _box("goal", (spec.goal_x_m, d - 0.005, h / 2), (0.06, 0.005, h / 2), "goal"),
        _box("floor", (0, 0, -t), (w + t, d, t), "floor"),
        _box("ceiling", (0, 0, h + t), (w + t, d, t), "wall"),
        _box("wall_left", (-w - t, 0, h / 2), (t, d, h / 2 + t), "wall"),
        _box("wall_right", (w + t, 0, h / 2), (t, d, h / 2 + t), "wall"),
    ]
    bodies, pairs, actuators, qpos, qvel = [], [], [], [], []
    for i, b in enumerate(spec.balls):
        bodies.append(
            f'    <body name="ball{i}" pos="{b.x_m:.4f} 0 {b.z_m:.4f}">\n'
            f'      <joint name="ball{i}_x" type="slide" axis="1 0 0"/>\n'
            f'      <joint name="ball{i}_z" type="slide" axis="0 0 1"/>\n'
            f'      <joint name="ball{i}_ry" type="hinge" axis="0 1 0"/>\n'
            f'      <geom name="ball{i}" type="sphere" size="{b.radius_m:.4f}" mass="{b.mass_kg:.4f}" '
            f'material="{b.colour}" contype="0" conaffinity="0"/>\n'
            "    </body>"
        )
        qpos += ["0", "0", "0"]
        qvel += [f"{b.vx_mps:.4f}", f"{b.vz_mps:.4f}", "0"]
        for static in STATIC_GEOMS:
            pairs.append(_pair(f"ball{i}", static, b.restitution, b.friction))
        for j in range(i):
            other = spec.balls[j]
            pairs.append(
                _pair(f"ball{j}", f"ball{i}", b.restitution * other.restitution, b.friction * other.friction)
            )
    gear = spec.agent_force_n()
    actuators.append(f'    <motor name="agent_fx" joint="ball0_x" gear="{gear:.4f}" ctrlrange="-1 1"/>')
    actuators.append(f'    <motor name="agent_fz" joint="ball0_z" gear="{gear:.4f}" ctrlrange="-1 1"/>')
    extra = (
        "  <contact>\n"
        + "\n".join(pairs)
        + "\n  </contact>\n  <actuator>\n"
        + "\n".join(actuators)
        + f'\n  </actuator>\n  <keyframe>\n    <key name="init" qpos="{" ".join(qpos)}" qvel="{" ".join(qvel)}"/>\n'
        "  </keyframe>"
    )
    materials = [("backdrop", "backdrop"), ("goal", "goal"), ("floor", "floor"), ("wall", "wall")]
    materials += [(b.colour, b.colour) for b in spec.balls]
    return document(
        "balls", FAMILY.timestep_s, materials, "\n".join(geoms + bodies), extra, CAMERAS, cone="elliptic"
    )


def _pair(g1: str, g2: str, restitution: float, friction: float) -> str:
    solref = solref_for_restitution(restitution, CONTACT_STIFFNESS)
    mu = max(friction, 1e-4)
    return (
        f'    <pair geom1="{g1}" geom2="{g2}" condim="6" '
        f'friction="{mu:.4f} {mu:.4f} 0.0001 {ROLLING_FRICTION_M} {ROLLING_FRICTION_M}" '
        f'solref="{solref}" solreffriction="{FRICTION_SOLREF}" solimp="0.99 0.99 0.001 0.5 2"/>'
    )


def objects(spec: BallsSpec) -> tuple[ObjectInfo, ...]:
    return tuple(
        ObjectInfo(object_id=i + 1, name=f"ball{i}", colour=b.colour, size_m=2 * b.radius_m)
        for i, b in enumerate(spec.balls)
    )


def start_layout(spec: BallsSpec) -> tuple[Footprint, ...]:
    """The goal band on the backdrop, then each ball where the prompt starts it: the bodies a first
    frame from the prompt alone shows. A ball is the disc through its centre facing the camera, whose
    outline is the sphere's near the frame's centre (off axis a sphere images a little longer along
    the radius, about 5 % at 18 degrees; its box's near face, a radius closer to the camera, drew it
    1.2x MuJoCo's size)."""
    band = Footprint(rgb_uint8("goal"), spec.goal_x_m, DEPTH_M - 0.005, 0.0, HEIGHT_M, 0.06, 0.005)
    balls = tuple(
        Footprint(
            rgb_uint8(b.colour),
            b.x_m,
            0.0,
            b.z_m - b.radius_m,
            b.z_m + b.radius_m,
            b.radius_m,
            0.0,
            True,
        )
        for b in spec.balls
    )
    return (band, *balls)


def free_path(spec: BallsSpec, t_s: float) -> np.ndarray:
    """Each ball's centre ``[balls, 3]`` ``t_s`` seconds from the start on the parabola its prompt
    starts it on (its position and velocity, gravity): where it flies until it touches something or
    is pushed. Before the start (``t_s < 0``) the parabola goes on as if nothing were in its way
    (a ball thrown up from near the floor came from below it, 28 % of the balls over three steps):
    what it gives is the moves a ball so thrown makes, its start velocity under gravity."""
    t = float(t_s)
    return np.array(
        [[b.x_m + b.vx_mps * t, 0.0, b.z_m + b.vz_mps * t - 0.5 * GRAVITY_MPS2 * t * t] for b in spec.balls]
    )


PROPERTIES = ("radius_m", "mass_kg", "restitution", "friction")


def properties(spec: BallsSpec) -> np.ndarray:
    """Each ball's ``PROPERTIES`` as the prompt gives them, ``[balls, 4]``, the agent first."""
    return np.array([[getattr(b, name) for name in PROPERTIES] for b in spec.balls], dtype=np.float32)


FAMILY = Family(
    name="balls",
    spec_type=BallsSpec,
    sample=sample,
    caption=caption,
    parse=parse,
    to_mjcf=to_mjcf,
    cameras=CAMERAS,
    objects=objects,
    from_dict=from_dict,
    control_hz=10.0,
    substeps=50,
    properties=properties,
    layout=start_layout,
    free_path=free_path,
)
