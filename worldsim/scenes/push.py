"""Push: a round pusher pushes a box or a cylinder across a rimmed table, seen from above.

The action is the pusher's 2-D velocity target, each axis in [-1, 1] times ``PUSHER_SPEED_MPS``,
tracked by velocity actuators of bounded force. The object is a free body that slides with friction
on the table. The task: bring the object's centre within ``GOAL_RADIUS_M`` of the orange goal marker.

Physics to see: contact, sliding friction, rotation of the object under off-centre pushes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldsim.scenes import prompts
from worldsim.scenes.base import CameraRig, Family, Footprint, ObjectInfo, check_split, uniform
from worldsim.scenes.colours import OBJECT_COLOURS, rgb_uint8
from worldsim.scenes.mjcf import document
from worldsim.scenes.prompts import Attribute, PromptError, check_range

HALF_TABLE_M = 0.5  # table top spans x, y in [-0.5, 0.5]
RIM_M = 0.03  # rim half thickness
RIM_HEIGHT_M = 0.06
OBJECT_HALF_HEIGHT_M = 0.04
PUSHER_RADIUS_M = 0.075
PUSHER_HALF_HEIGHT_M = 0.03
PUSHER_LIFT_M = 0.002  # the pusher's body clears the table by this much
PUSHER_MASS_KG = 1.0
PUSHER_SPEED_MPS = 0.5
PUSHER_KV = 40.0  # velocity actuator gain (N per m/s)
PUSHER_FORCE_N = 40.0
PUSHER_FRICTION = 0.3
GOAL_RADIUS_M = 0.05
GOAL_HALF_HEIGHT_M = 0.0005  # a flat disc on the table top (z = 0)
OBJECT_COLOURS_USED = ("red", "blue", "green", "yellow")
SHAPES = ("box", "cylinder")

CAMERAS = (
    CameraRig("top", pos_m=(0.0, 0.0, 2.0), target_m=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), fovy_deg=31.8),
)


@dataclass(frozen=True)
class PushSpec:
    """A Push world: the object (shape, half size, mass, friction with the table, pose), the pusher's
    start and the goal. ``size_m`` is the half side of a box or the radius of a cylinder."""

    shape: str
    colour: str
    size_m: float
    mass_kg: float
    friction: float
    object_x_m: float
    object_y_m: float
    object_yaw_rad: float
    pusher_x_m: float
    pusher_y_m: float
    goal_x_m: float
    goal_y_m: float

    family = "push"


_ID = dict(size=(0.08, 0.10), mass=(0.3, 1.0), friction=(0.3, 0.6))
_OOD = dict(size=(0.11, 0.13), mass=(1.5, 2.5), friction=(0.7, 0.9))


def sample(rng: np.random.Generator, split: str = "id") -> PushSpec:
    ranges = _ID if check_split(split) == "id" else _OOD
    size = uniform(rng, *ranges["size"])
    ox, oy = uniform(rng, -0.25, 0.25), uniform(rng, -0.25, 0.25)
    for _ in range(1000):
        px, py = uniform(rng, -0.38, 0.38), uniform(rng, -0.38, 0.38)
        if np.hypot(px - ox, py - oy) > size * 1.5 + PUSHER_RADIUS_M + 0.03:
            break
    for _ in range(1000):
        gx, gy = uniform(rng, -0.3, 0.3), uniform(rng, -0.3, 0.3)
        if np.hypot(gx - ox, gy - oy) > 0.15:
            break
    return validate(
        PushSpec(
            shape=str(rng.choice(SHAPES)),
            colour=str(rng.choice(OBJECT_COLOURS_USED)),
            size_m=size,
            mass_kg=uniform(rng, *ranges["mass"]),
            friction=uniform(rng, *ranges["friction"]),
            object_x_m=ox,
            object_y_m=oy,
            object_yaw_rad=uniform(rng, -np.pi / 4, np.pi / 4),
            pusher_x_m=px,
            pusher_y_m=py,
            goal_x_m=gx,
            goal_y_m=gy,
        )
    )


def validate(spec: PushSpec) -> PushSpec:
    if spec.shape not in SHAPES:
        raise PromptError(f"object shape must be one of {SHAPES}, got {spec.shape!r}")
    if spec.colour not in OBJECT_COLOURS:
        raise PromptError(f"unknown colour {spec.colour!r}; colours: {', '.join(OBJECT_COLOURS)}")
    check_range("object size", spec.size_m, 0.03, 0.2)
    check_range("object mass", spec.mass_kg, 0.05, 10.0)
    check_range("object friction", spec.friction, 0.0, 2.0)
    limit = HALF_TABLE_M - spec.size_m * 1.42
    check_range("object x", spec.object_x_m, -limit, limit)
    check_range("object y", spec.object_y_m, -limit, limit)
    check_range("object yaw", spec.object_yaw_rad, -np.pi, np.pi)
    plimit = HALF_TABLE_M - PUSHER_RADIUS_M
    check_range("pusher x", spec.pusher_x_m, -plimit, plimit)
    check_range("pusher y", spec.pusher_y_m, -plimit, plimit)
    check_range("goal x", spec.goal_x_m, -HALF_TABLE_M, HALF_TABLE_M)
    check_range("goal y", spec.goal_y_m, -HALF_TABLE_M, HALF_TABLE_M)
    gap = np.hypot(spec.pusher_x_m - spec.object_x_m, spec.pusher_y_m - spec.object_y_m)
    if gap < spec.size_m * 1.42 + PUSHER_RADIUS_M:
        raise PromptError(f"the pusher starts inside the object (centres {gap:.2f} m apart)")
    return spec


# ---------------------------------------------------------------------------------------------
# prompt grammar

_OBJECT_ATTRS = (
    Attribute("size", "m", 0.08),
    Attribute("mass", "kg", 0.5),
    Attribute("friction", "", 0.4),
    Attribute("x", "m", 0.0),
    Attribute("y", "m", 0.0),
    Attribute("yaw", "rad", 0.0),
)
_XY = (Attribute("x", "m"), Attribute("y", "m"))
SUBJECTS = {"<colour> box": _OBJECT_ATTRS, "<colour> cylinder": _OBJECT_ATTRS, "pusher": _XY, "goal": _XY}
EXAMPLE = "push: red box, size 0.08 m, mass 0.50 kg, x 0.10 m, y -0.20 m; pusher, x -0.30 m, y -0.30 m; goal, x 0.20 m, y 0.25 m"
_DEFAULTS = {"pusher": (-0.3, -0.3), "goal": (0.25, 0.25)}


def caption(spec: PushSpec) -> str:
    obj = prompts.format_clause(
        f"{spec.colour} {spec.shape}",
        list(
            zip(
                _OBJECT_ATTRS,
                (
                    spec.size_m,
                    spec.mass_kg,
                    spec.friction,
                    spec.object_x_m,
                    spec.object_y_m,
                    spec.object_yaw_rad,
                ),
                strict=True,
            )
        ),
    )
    pusher = prompts.format_clause("pusher", list(zip(_XY, (spec.pusher_x_m, spec.pusher_y_m), strict=True)))
    goal = prompts.format_clause("goal", list(zip(_XY, (spec.goal_x_m, spec.goal_y_m), strict=True)))
    return prompts.format_prompt("push", [obj, pusher, goal])


def parse(body: str) -> PushSpec:
    clauses = prompts.parse_clauses(body, SUBJECTS, "push", EXAMPLE)
    objs = [c for c in clauses if c.subject.split(" ")[-1] in SHAPES]
    if len(objs) != 1:
        raise PromptError(
            f"a Push prompt names exactly one box or cylinder, got {len(objs)}\n"
            + prompts.grammar_help("push", SUBJECTS, EXAMPLE)
        )
    o = objs[0]
    colour, shape = o.subject.split(" ")
    named = {c.subject: c for c in clauses if c.subject in _DEFAULTS}
    xy = {}
    for name, (dx, dy) in _DEFAULTS.items():
        c = named.get(name)
        xy[name] = (c.get("x", dx), c.get("y", dy)) if c else (dx, dy)
    d = {a.name: a.default for a in _OBJECT_ATTRS}
    return validate(
        PushSpec(
            shape=shape,
            colour=colour,
            size_m=o.get("size", d["size"]),
            mass_kg=o.get("mass", d["mass"]),
            friction=o.get("friction", d["friction"]),
            object_x_m=o.get("x", d["x"]),
            object_y_m=o.get("y", d["y"]),
            object_yaw_rad=o.get("yaw", d["yaw"]),
            pusher_x_m=xy["pusher"][0],
            pusher_y_m=xy["pusher"][1],
            goal_x_m=xy["goal"][0],
            goal_y_m=xy["goal"][1],
        )
    )


def from_dict(d: dict) -> PushSpec:
    return PushSpec(**d)


# ---------------------------------------------------------------------------------------------
# MJCF

RIMS = ("rim_north", "rim_south", "rim_east", "rim_west")


def _geom(name: str, kind: str, pos: tuple, size: tuple, mat: str, extra: str = "") -> str:
    p = " ".join(f"{v:.4f}" for v in pos)
    s = " ".join(f"{v:.4f}" for v in size)
    return f'    <geom name="{name}" type="{kind}" pos="{p}" size="{s}" material="{mat}" contype="0" conaffinity="0"{extra}/>'


def object_geom_size(spec: PushSpec) -> tuple[float, ...]:
    if spec.shape == "box":
        return (spec.size_m, spec.size_m, OBJECT_HALF_HEIGHT_M)
    return (spec.size_m, OBJECT_HALF_HEIGHT_M)


def to_mjcf(spec: PushSpec) -> str:
    t, rh, a = RIM_M, RIM_HEIGHT_M, HALF_TABLE_M
    geoms = [
        _geom("table", "box", (0, 0, -0.02), (a + 2 * t, a + 2 * t, 0.02), "table"),
        _geom(
            "goal",
            "cylinder",
            (spec.goal_x_m, spec.goal_y_m, GOAL_HALF_HEIGHT_M),
            (GOAL_RADIUS_M, GOAL_HALF_HEIGHT_M),
            "goal",
        ),
        _geom("rim_north", "box", (0, a + t, rh / 2), (a + 2 * t, t, rh / 2), "rim"),
        _geom("rim_south", "box", (0, -a - t, rh / 2), (a + 2 * t, t, rh / 2), "rim"),
        _geom("rim_east", "box", (a + t, 0, rh / 2), (t, a, rh / 2), "rim"),
        _geom("rim_west", "box", (-a - t, 0, rh / 2), (t, a, rh / 2), "rim"),
    ]
    half_yaw = spec.object_yaw_rad / 2
    quat = f"{np.cos(half_yaw):.6f} 0 0 {np.sin(half_yaw):.6f}"
    obj_size = " ".join(f"{v:.4f}" for v in object_geom_size(spec))
    bodies = [
        f'    <body name="object" pos="{spec.object_x_m:.4f} {spec.object_y_m:.4f} {OBJECT_HALF_HEIGHT_M:.4f}" '
        f'quat="{quat}">\n'
        '      <freejoint name="object"/>\n'
        f'      <geom name="object" type="{spec.shape}" size="{obj_size}" mass="{spec.mass_kg:.4f}" '
        f'material="object" contype="0" conaffinity="0"/>\n'
        "    </body>",
        f'    <body name="pusher" pos="{spec.pusher_x_m:.4f} {spec.pusher_y_m:.4f} {PUSHER_HALF_HEIGHT_M + PUSHER_LIFT_M:.4f}">\n'
        '      <joint name="pusher_x" type="slide" axis="1 0 0"/>\n'
        '      <joint name="pusher_y" type="slide" axis="0 1 0"/>\n'
        f'      <geom name="pusher" type="cylinder" size="{PUSHER_RADIUS_M} {PUSHER_HALF_HEIGHT_M}" '
        f'mass="{PUSHER_MASS_KG}" material="pusher" contype="0" conaffinity="0"/>\n'
        "    </body>",
    ]
    pairs = [_pair("object", "table", spec.friction)]
    pairs += [_pair("object", "pusher", PUSHER_FRICTION)]
    pairs += [_pair("object", rim, PUSHER_FRICTION) for rim in RIMS]
    pairs += [_pair("pusher", rim, PUSHER_FRICTION) for rim in RIMS]
    acts = [
        f'    <velocity name="pusher_vx" joint="pusher_x" kv="{PUSHER_KV}" ctrlrange="{-PUSHER_SPEED_MPS} {PUSHER_SPEED_MPS}" '
        f'forcerange="{-PUSHER_FORCE_N} {PUSHER_FORCE_N}"/>',
        f'    <velocity name="pusher_vy" joint="pusher_y" kv="{PUSHER_KV}" ctrlrange="{-PUSHER_SPEED_MPS} {PUSHER_SPEED_MPS}" '
        f'forcerange="{-PUSHER_FORCE_N} {PUSHER_FORCE_N}"/>',
    ]
    extra = (
        "  <contact>\n"
        + "\n".join(pairs)
        + "\n  </contact>\n  <actuator>\n"
        + "\n".join(acts)
        + "\n  </actuator>"
    )
    materials = [
        ("table", "table"),
        ("rim", "rim"),
        ("goal", "goal"),
        ("object", spec.colour),
        ("pusher", "pusher"),
    ]
    return document("push", FAMILY.timestep_s, materials, "\n".join(geoms + bodies), extra, CAMERAS)


def _pair(g1: str, g2: str, friction: float) -> str:
    mu = max(friction, 1e-4)
    return (
        f'    <pair geom1="{g1}" geom2="{g2}" condim="3" friction="{mu:.4f} {mu:.4f} 0.005 0.0001 0.0001"/>'
    )


def objects(spec: PushSpec) -> tuple[ObjectInfo, ...]:
    return (
        ObjectInfo(object_id=1, name="object", colour=spec.colour, size_m=2 * spec.size_m),
        ObjectInfo(object_id=2, name="pusher", colour="pusher", size_m=2 * PUSHER_RADIUS_M),
    )


def placed_footprints(spec: PushSpec, t_s: float) -> tuple[Footprint, ...]:
    """The goal marker, where the prompt puts it, at any time: it never moves, but the pusher and the
    object pass over it, and a generator that reads its last K frames only forgets a marker covered
    for K frames (Push checkpoints without the map lose it in 4 of their 5 default minutes: README)."""
    r = GOAL_RADIUS_M
    return (
        Footprint(rgb_uint8("goal"), spec.goal_x_m, spec.goal_y_m, 0.0, 2 * GOAL_HALF_HEIGHT_M, r, r, True),
    )


def start_layout(spec: PushSpec) -> tuple[Footprint, ...]:
    """The goal marker, the object and the pusher where the prompt places them: the bodies a first
    frame from the prompt alone shows. A footprint is an axis-aligned box, so a yawed box's is the
    box around it (the generator reads its yaw from the prompt and draws the turn)."""
    if spec.shape == "box":
        half = spec.size_m * (abs(np.cos(spec.object_yaw_rad)) + abs(np.sin(spec.object_yaw_rad)))
    else:
        half = spec.size_m
    obj = Footprint(
        rgb_uint8(spec.colour),
        spec.object_x_m,
        spec.object_y_m,
        0.0,
        2 * OBJECT_HALF_HEIGHT_M,
        half,
        half,
        spec.shape != "box",
    )
    pusher = Footprint(
        rgb_uint8("pusher"),
        spec.pusher_x_m,
        spec.pusher_y_m,
        PUSHER_LIFT_M,
        PUSHER_LIFT_M + 2 * PUSHER_HALF_HEIGHT_M,
        PUSHER_RADIUS_M,
        PUSHER_RADIUS_M,
        True,
    )
    return (*placed_footprints(spec, 0.0), obj, pusher)


FAMILY = Family(
    name="push",
    spec_type=PushSpec,
    sample=sample,
    caption=caption,
    parse=parse,
    to_mjcf=to_mjcf,
    cameras=CAMERAS,
    objects=objects,
    from_dict=from_dict,
    control_hz=10.0,
    substeps=50,
    scripted=placed_footprints,
    layout=start_layout,
)
