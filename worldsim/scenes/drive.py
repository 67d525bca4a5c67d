"""Drive: a car on a straight two-lane road, with a lead car and a pedestrian moving by script.

The ego car is a real MuJoCo vehicle: a chassis on a free joint, four wheels on hinges that touch
the road through friction, front steering hinges driven by position servos, rear wheel motors, and
brakes made of joint friction on every wheel. The action is (steer, throttle/brake), each in [-1, 1]:
steer times ``MAX_STEER_RAD`` (positive turns left), positive throttle is motor torque, negative is
brake torque. The lead car and the pedestrian are kinematic (mocap) bodies on a script: the lead car
keeps its lane at constant speed; the pedestrian waits at the kerb and crosses at its start time.

The road runs along +x; lane 0 (right) is centred at y = -1.75 m, lane 1 (left) at y = +1.75 m.
The camera looks straight down and follows the ego car along x, so lateral motion shows in pixels.
The pedestrian's footprint is enlarged (``PED_RADIUS_M``) to stay over 8 px across at 64x64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldsim.scenes import prompts
from worldsim.scenes.base import CameraRig, Family, Footprint, ObjectInfo, check_split, uniform
from worldsim.scenes.colours import OBJECT_COLOURS, rgb_uint8
from worldsim.scenes.mjcf import document
from worldsim.scenes.prompts import Attribute, PromptError, check_range

LANE_WIDTH_M = 3.5
ROAD_HALF_WIDTH_M = LANE_WIDTH_M
ROAD_START_M, ROAD_END_M = -30.0, 1000.0
DASH_M, DASH_PERIOD_M, MARK_HALF_WIDTH_M = 3.0, 9.0, 0.1
CAR_HALF = (2.0, 0.9, 0.25)  # chassis half length, half width, half height
WHEEL_RADIUS_M, WHEEL_HALF_WIDTH_M = 0.33, 0.11
WHEEL_X_M, WHEEL_Y_M = 1.35, 0.75
CHASSIS_MASS_KG, WHEEL_MASS_KG = 1200.0, 20.0
MAX_STEER_RAD = 0.5
MOTOR_TORQUE_NM = 600.0  # per rear wheel at throttle 1
BRAKE_TORQUE_NM = 800.0  # per wheel at brake 1
ROLLING_DAMPING = 0.5  # N m s / rad on each wheel
CHASSIS_Z_M = 0.45  # height of the chassis centre at rest
STEER_KP = 3000.0  # N m / rad, steering position servo
STEER_DAMPING = 150.0  # N m s / rad, steering joint damping (about critical with the servo)
STEER_ARMATURE = 1.0  # kg m^2, steering joint armature
PED_RADIUS_M = 0.75
PED_HALF_HEIGHT_M = 0.9
PED_WAIT_M = 5.0  # the pedestrian waits this far from the road centre
NO_AGENT_DISTANCE_M = 100.0
WHEELS = ("fl", "fr", "rl", "rr")

CAMERAS = (
    CameraRig(
        "follow",
        pos_m=(3.5, 0.0, 20.0),
        target_m=(3.5, 0.0, 0.0),
        up=(1.0, 0.0, 0.0),
        fovy_deg=33.2,
        follow="ego",
    ),
)


def lane_y(lane: int) -> float:
    """Centre of lane 0 (right) or 1 (left), in metres."""
    return (-0.5 if lane == 0 else 0.5) * LANE_WIDTH_M


@dataclass(frozen=True)
class DriveSpec:
    """A Drive world. ``lead_colour`` / ``ped_colour`` of ``None`` mean no lead car / no pedestrian.

    The lead car starts ``lead_gap_m`` ahead of the ego car (centre to centre) in the ego lane. The
    pedestrian waits at the kerb at ``ped_x_m`` on side ``ped_side`` (+1 left, -1 right) and starts
    crossing at ``ped_start_s``.
    """

    ego_colour: str
    ego_lane: int
    ego_speed_mps: float
    friction: float
    lead_colour: str | None = None
    lead_gap_m: float = 0.0
    lead_speed_mps: float = 0.0
    ped_colour: str | None = None
    ped_x_m: float = 0.0
    ped_start_s: float = 0.0
    ped_speed_mps: float = 0.0
    ped_side: int = 1

    family = "drive"

    def lead_x(self, t_s: float) -> float:
        return self.lead_gap_m + self.lead_speed_mps * t_s

    def ped_y(self, t_s: float) -> float:
        walked = max(0.0, t_s - self.ped_start_s) * self.ped_speed_mps
        y = self.ped_side * (PED_WAIT_M - walked)
        return float(np.clip(y, -PED_WAIT_M, PED_WAIT_M))

    def agent_positions(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Scripted (x, y) of the lead car and the pedestrian at time ``t_s``; far away if absent."""
        far = np.array([NO_AGENT_DISTANCE_M * 10, 50.0])
        lead = np.array([self.lead_x(t_s), lane_y(self.ego_lane)]) if self.lead_colour else far
        ped = np.array([self.ped_x_m, self.ped_y(t_s)]) if self.ped_colour else far + [0, 10.0]
        return lead, ped


_ID = dict(
    speed=(5.0, 9.0), gap=(14.0, 30.0), lead_speed=(4.0, 8.0), ped_speed=(1.0, 1.8), friction=(0.8, 1.0)
)
_OOD = dict(
    speed=(10.0, 12.0), gap=(10.0, 13.0), lead_speed=(8.5, 11.0), ped_speed=(2.0, 2.5), friction=(0.4, 0.6)
)


def sample(rng: np.random.Generator, split: str = "id") -> DriveSpec:
    r = _ID if check_split(split) == "id" else _OOD
    ego_colour = str(rng.choice(("red", "blue")))
    speed = uniform(rng, *r["speed"])
    has_lead, has_ped = rng.random() < 0.6, rng.random() < 0.6
    lead_colour = str(rng.choice(("green", "yellow"))) if has_lead else None
    ped_x = uniform(rng, 25.0, 55.0)
    return validate(
        DriveSpec(
            ego_colour=ego_colour,
            ego_lane=int(rng.integers(0, 2)),
            ego_speed_mps=speed,
            friction=uniform(rng, *r["friction"]),
            lead_colour=lead_colour,
            lead_gap_m=uniform(rng, *r["gap"]) if has_lead else 0.0,
            lead_speed_mps=uniform(rng, *r["lead_speed"]) if has_lead else 0.0,
            ped_colour="magenta" if has_ped else None,
            ped_x_m=ped_x if has_ped else 0.0,
            ped_start_s=uniform(rng, 0.5, 4.0) if has_ped else 0.0,
            ped_speed_mps=uniform(rng, *r["ped_speed"]) if has_ped else 0.0,
            ped_side=int(rng.choice((-1, 1))) if has_ped else 1,
        )
    )


def validate(spec: DriveSpec) -> DriveSpec:
    colours = [c for c in (spec.ego_colour, spec.lead_colour, spec.ped_colour) if c is not None]
    for c in colours:
        if c not in OBJECT_COLOURS:
            raise PromptError(f"unknown colour {c!r}; colours: {', '.join(OBJECT_COLOURS)}")
    if len(set(colours)) != len(colours):
        raise PromptError(f"agent colours must be distinct, got {colours}")
    if spec.ego_lane not in (0, 1):
        raise PromptError(f"ego lane must be 0 (right) or 1 (left), got {spec.ego_lane}")
    if spec.ped_side not in (-1, 1):
        raise PromptError(f"pedestrian side must be 1 (left) or -1 (right), got {spec.ped_side}")
    check_range("ego speed", spec.ego_speed_mps, 0.0, 30.0)
    check_range("road friction", spec.friction, 0.05, 2.0)
    if spec.lead_colour:
        check_range("lead gap", spec.lead_gap_m, 2 * CAR_HALF[0] + 1.0, 200.0)
        check_range("lead speed", spec.lead_speed_mps, 0.0, 30.0)
    if spec.ped_colour:
        check_range("pedestrian x", spec.ped_x_m, 5.0, 500.0)
        check_range("pedestrian start", spec.ped_start_s, 0.0, 60.0)
        check_range("pedestrian speed", spec.ped_speed_mps, 0.1, 5.0)
    return spec


# ---------------------------------------------------------------------------------------------
# prompt grammar

_EGO = (Attribute("lane", "", 0.0), Attribute("speed", "m/s", 7.0))
_LEAD = (Attribute("gap", "m", 20.0), Attribute("speed", "m/s", 5.0))
_PED = (
    Attribute("x", "m", 40.0),
    Attribute("start", "s", 2.0),
    Attribute("speed", "m/s", 1.4),
    Attribute("side", "", 1.0),
)
_ROAD = (Attribute("friction", "", 0.9),)
SUBJECTS = {"<colour> ego car": _EGO, "<colour> lead car": _LEAD, "<colour> pedestrian": _PED, "road": _ROAD}
EXAMPLE = "drive: red ego car, lane 0, speed 8.00 m/s; green lead car, gap 20.00 m, speed 6.00 m/s; magenta pedestrian, x 40.00 m, start 2.00 s"


def caption(spec: DriveSpec) -> str:
    clauses = [
        prompts.format_clause(
            f"{spec.ego_colour} ego car", list(zip(_EGO, (spec.ego_lane, spec.ego_speed_mps), strict=True))
        )
    ]
    if spec.lead_colour:
        values = (spec.lead_gap_m, spec.lead_speed_mps)
        clauses.append(
            prompts.format_clause(f"{spec.lead_colour} lead car", list(zip(_LEAD, values, strict=True)))
        )
    if spec.ped_colour:
        values = (spec.ped_x_m, spec.ped_start_s, spec.ped_speed_mps, spec.ped_side)
        clauses.append(
            prompts.format_clause(f"{spec.ped_colour} pedestrian", list(zip(_PED, values, strict=True)))
        )
    clauses.append(prompts.format_clause("road", [(_ROAD[0], spec.friction)]))
    return prompts.format_prompt("drive", clauses)


def _one(clauses: list[prompts.Clause], suffix: str, required: bool) -> prompts.Clause | None:
    found = [c for c in clauses if c.subject.endswith(suffix)]
    if len(found) > 1 or (required and not found):
        raise PromptError(
            f"a Drive prompt names {'exactly' if required else 'at most'} one {suffix.strip()}, got {len(found)}\n"
            + prompts.grammar_help("drive", SUBJECTS, EXAMPLE)
        )
    return found[0] if found else None


def parse(body: str) -> DriveSpec:
    clauses = prompts.parse_clauses(body, SUBJECTS, "drive", EXAMPLE)
    ego = _one(clauses, " ego car", True)
    lead = _one(clauses, " lead car", False)
    ped = _one(clauses, " pedestrian", False)
    road = _one(clauses, "road", False)
    lane, side = ego.get("lane", 0.0), ped.get("side", 1.0) if ped else 1.0
    if lane not in (0.0, 1.0) or side not in (-1.0, 1.0):
        raise PromptError("ego lane must be 0 or 1 and pedestrian side 1 or -1\n" + EXAMPLE)
    return validate(
        DriveSpec(
            ego_colour=ego.subject.split(" ")[0],
            ego_lane=int(lane),
            ego_speed_mps=ego.get("speed", 7.0),
            friction=road.get("friction", 0.9) if road else 0.9,
            lead_colour=lead.subject.split(" ")[0] if lead else None,
            lead_gap_m=lead.get("gap", 20.0) if lead else 0.0,
            lead_speed_mps=lead.get("speed", 5.0) if lead else 0.0,
            ped_colour=ped.subject.split(" ")[0] if ped else None,
            ped_x_m=ped.get("x", 40.0) if ped else 0.0,
            ped_start_s=ped.get("start", 2.0) if ped else 0.0,
            ped_speed_mps=ped.get("speed", 1.4) if ped else 0.0,
            ped_side=int(side),
        )
    )


def from_dict(d: dict) -> DriveSpec:
    return DriveSpec(**d)


# ---------------------------------------------------------------------------------------------
# MJCF


def road_markings(width: int, height: int) -> dict:
    """The centre line's dashes as the following camera draws them in ``width`` x ``height`` frames:
    the colours, the band of columns they run in, their period and length in rows and the road's
    scale (``worldsim.model.odometry.OdometerConfig``'s fields). The camera looks straight down, so
    the centre line (y = 0) is the middle column and the dashes scroll down the frame as the car
    drives on."""
    rig = CAMERAS[0]
    px_per_m = height / (2 * rig.pos_m[2] * np.tan(np.radians(rig.fovy_deg) / 2))
    half_band = MARK_HALF_WIDTH_M + 0.45  # the line and a margin either side of it
    return {
        "marking_rgb": list(rgb_uint8("marking")),
        "ground_rgb": list(rgb_uint8("road")),
        "columns": [round(width / 2 - half_band * px_per_m), round(width / 2 + half_band * px_per_m)],
        "period_px": float(DASH_PERIOD_M * px_per_m),
        "dash_px": float(DASH_M * px_per_m),
        "px_per_m": float(px_per_m),
    }


def _visual_box(name: str, x0: float, x1: float, y: float, half_w: float, z: float, mat: str) -> str:
    return (
        f'    <geom name="{name}" type="box" pos="{(x0 + x1) / 2:.3f} {y:.3f} {z:.4f}" '
        f'size="{(x1 - x0) / 2:.3f} {half_w:.3f} 0.0005" material="{mat}" contype="0" conaffinity="0"/>'
    )


def road_geoms() -> list[str]:
    g = [
        '    <geom name="ground" type="plane" pos="400 0 0" size="700 60 50" material="grass" contype="0" conaffinity="0"/>',
        _visual_box("road", ROAD_START_M, ROAD_END_M, 0.0, ROAD_HALF_WIDTH_M, 0.0005, "road"),
    ]
    edge = ROAD_HALF_WIDTH_M - MARK_HALF_WIDTH_M - 0.05
    g.append(_visual_box("edge_left", ROAD_START_M, ROAD_END_M, edge, MARK_HALF_WIDTH_M, 0.0015, "marking"))
    g.append(_visual_box("edge_right", ROAD_START_M, ROAD_END_M, -edge, MARK_HALF_WIDTH_M, 0.0015, "marking"))
    for k, x0 in enumerate(np.arange(ROAD_START_M, ROAD_END_M, DASH_PERIOD_M)):
        g.append(_visual_box(f"dash{k}", x0, x0 + DASH_M, 0.0, MARK_HALF_WIDTH_M, 0.0015, "marking"))
    return g


def _wheel(name: str, x: float, y: float, steer: bool) -> str:
    # The tyre is drawn as a cylinder but touches the road as a sphere of the same radius: one contact
    # point, as a real tyre's patch, where a cylinder's two rim edges made a scrub torque that the
    # steering servo could not overcome at small angles (and that PyBullet's cylinder does not have).
    spin = (
        f'<joint name="{name}_spin" type="hinge" axis="0 1 0" damping="{ROLLING_DAMPING}"/>'
        f'<geom name="{name}_wheel" type="cylinder" size="{WHEEL_RADIUS_M} {WHEEL_HALF_WIDTH_M}" zaxis="0 1 0" '
        f'mass="{WHEEL_MASS_KG}" material="tyre" contype="0" conaffinity="0"/>'
        f'<geom name="{name}_tyre" type="sphere" size="{WHEEL_RADIUS_M}" mass="0" group="3" rgba="0 0 0 0" '
        'contype="0" conaffinity="0"/>'
    )
    z = WHEEL_RADIUS_M - CHASSIS_Z_M
    if not steer:
        return f'      <body name="{name}" pos="{x} {y} {z}">{spin}</body>'
    return (
        f'      <body name="{name}_steer" pos="{x} {y} {z}">'
        '<inertial pos="0 0 0" mass="1" diaginertia="0.1 0.1 0.1"/>'
        f'<joint name="{name}_steer" type="hinge" axis="0 0 1" range="{-MAX_STEER_RAD} {MAX_STEER_RAD}" '
        f'damping="{STEER_DAMPING}" armature="{STEER_ARMATURE}"/>'
        f'<body name="{name}">{spin}</body></body>'
    )


def to_mjcf(spec: DriveSpec) -> str:
    y0 = lane_y(spec.ego_lane)
    lx, hy, hz = CAR_HALF
    car = [
        f'    <body name="ego" pos="0 {y0} {CHASSIS_Z_M}">',
        '      <freejoint name="ego"/>',
        f'      <geom name="chassis" type="box" size="{lx} {hy} {hz}" mass="{CHASSIS_MASS_KG}" material="ego" '
        'contype="0" conaffinity="0"/>',
        _wheel("fl", WHEEL_X_M, WHEEL_Y_M, True),
        _wheel("fr", WHEEL_X_M, -WHEEL_Y_M, True),
        _wheel("rl", -WHEEL_X_M, WHEEL_Y_M, False),
        _wheel("rr", -WHEEL_X_M, -WHEEL_Y_M, False),
        "    </body>",
    ]
    lead, ped = spec.agent_positions(0.0)
    agents = [
        f'    <body name="lead" mocap="true" pos="{lead[0]:.3f} {lead[1]:.3f} {CHASSIS_Z_M}">'
        f'<geom name="lead" type="box" size="{lx} {hy} {hz}" material="lead" contype="0" conaffinity="0"/></body>',
        f'    <body name="ped" mocap="true" pos="{ped[0]:.3f} {ped[1]:.3f} {PED_HALF_HEIGHT_M}">'
        f'<geom name="ped" type="cylinder" size="{PED_RADIUS_M} {PED_HALF_HEIGHT_M}" material="ped" '
        'contype="0" conaffinity="0"/></body>',
    ]
    mu = spec.friction
    pairs = [
        f'    <pair geom1="{w}_tyre" geom2="ground" condim="3" friction="{mu:.4f} {mu:.4f} 0.005 0.0001 0.0001"/>'
        for w in WHEELS
    ]
    pairs += [
        f'    <pair geom1="chassis" geom2="{a}" condim="3" friction="0.5 0.5 0.005 0.0001 0.0001"/>'
        for a in ("lead", "ped")
    ]
    acts = [
        f'    <position name="steer_{w}" joint="{w}_steer" kp="{STEER_KP}" ctrlrange="{-MAX_STEER_RAD} {MAX_STEER_RAD}"/>'
        for w in ("fl", "fr")
    ]
    acts += [
        f'    <motor name="drive_{w}" joint="{w}_spin" gear="{MOTOR_TORQUE_NM}" ctrlrange="0 1"/>'
        for w in ("rl", "rr")
    ]
    v = spec.ego_speed_mps
    w0 = v / WHEEL_RADIUS_M
    # free joint (position, quaternion), then fl steer + spin, fr steer + spin, rl spin, rr spin
    qpos = f"0 {y0} {CHASSIS_Z_M} 1 0 0 0 " + " ".join(["0"] * 6)
    qvel = f"{v} 0 0 0 0 0 0 {w0} 0 {w0} {w0} {w0}"
    extra = (
        "  <contact>\n"
        + "\n".join(pairs)
        + "\n  </contact>\n  <actuator>\n"
        + "\n".join(acts)
        + f'\n  </actuator>\n  <keyframe>\n    <key name="init" qpos="{qpos}" qvel="{qvel}" '
        f'mpos="{lead[0]:.3f} {lead[1]:.3f} {CHASSIS_Z_M} {ped[0]:.3f} {ped[1]:.3f} {PED_HALF_HEIGHT_M}"/>\n  </keyframe>'
    )
    materials = [
        ("grass", "grass"),
        ("road", "road"),
        ("marking", "marking"),
        ("tyre", "pusher"),
        ("ego", spec.ego_colour),
        ("lead", spec.lead_colour or "wall"),
        ("ped", spec.ped_colour or "wall"),
    ]
    return document(
        "drive", FAMILY.timestep_s, materials, "\n".join(road_geoms() + car + agents), extra, CAMERAS
    )


def objects(spec: DriveSpec) -> tuple[ObjectInfo, ...]:
    out = [ObjectInfo(object_id=1, name="ego", colour=spec.ego_colour, size_m=2 * CAR_HALF[1])]
    if spec.lead_colour:
        out.append(ObjectInfo(object_id=2, name="lead", colour=spec.lead_colour, size_m=2 * CAR_HALF[1]))
    if spec.ped_colour:
        out.append(ObjectInfo(object_id=3, name="ped", colour=spec.ped_colour, size_m=2 * PED_RADIUS_M))
    return tuple(out)


def scripted_footprints(spec: DriveSpec, t_s: float) -> tuple[Footprint, ...]:
    """The lead car's and the pedestrian's bodies at time ``t_s``, as the script moves them (their
    mocap bodies follow ``DriveSpec.agent_positions``); an absent agent has none."""
    lead, ped = spec.agent_positions(t_s)
    out = []
    if spec.lead_colour:
        z = (CHASSIS_Z_M - CAR_HALF[2], CHASSIS_Z_M + CAR_HALF[2])
        out.append(Footprint(rgb_uint8(spec.lead_colour), float(lead[0]), float(lead[1]), *z, *CAR_HALF[:2]))
    if spec.ped_colour:
        r = PED_RADIUS_M
        z = (0.0, 2 * PED_HALF_HEIGHT_M)
        out.append(Footprint(rgb_uint8(spec.ped_colour), float(ped[0]), float(ped[1]), *z, r, r, True))
    return tuple(out)


def start_layout(spec: DriveSpec) -> tuple[Footprint, ...]:
    """What the following camera shows at the reset, back to front: the road, its edge lines and the
    centre line's dashes around the start (the camera has not moved, and the road is the same in
    every world), the scripted agents where the script puts them at the start (the lead car at its
    gap, the pedestrian waiting at the kerb: out of view in the sampled worlds, in view in a prompt
    that puts them within about 10 m) and the ego car in its lane."""
    road, marking = rgb_uint8("road"), rgb_uint8("marking")
    flat = (0.0, 0.0015)
    view = CAMERAS[0].pos_m[0]  # the view's centre along the road at the reset
    out = [Footprint(road, view, 0.0, *flat, 25.0, ROAD_HALF_WIDTH_M)]
    edge = ROAD_HALF_WIDTH_M - MARK_HALF_WIDTH_M - 0.05
    out += [Footprint(marking, view, y, *flat, 25.0, MARK_HALF_WIDTH_M) for y in (edge, -edge)]
    dashes = np.arange(ROAD_START_M, ROAD_END_M, DASH_PERIOD_M)
    for x0 in dashes[np.abs(dashes + DASH_M / 2 - view) < 25.0]:
        out.append(Footprint(marking, float(x0 + DASH_M / 2), 0.0, *flat, DASH_M / 2, MARK_HALF_WIDTH_M))
    out += scripted_footprints(spec, 0.0)
    car_z = (CHASSIS_Z_M - CAR_HALF[2], CHASSIS_Z_M + CAR_HALF[2])
    out.append(Footprint(rgb_uint8(spec.ego_colour), 0.0, lane_y(spec.ego_lane), *car_z, *CAR_HALF[:2]))
    return tuple(out)


def ego_start_speed_mps(spec: DriveSpec) -> float:
    """The ego car's speed at the reset (the camera follows it along the road)."""
    return spec.ego_speed_mps


FAMILY = Family(
    name="drive",
    spec_type=DriveSpec,
    sample=sample,
    caption=caption,
    parse=parse,
    to_mjcf=to_mjcf,
    cameras=CAMERAS,
    objects=objects,
    from_dict=from_dict,
    control_hz=10.0,
    substeps=50,
    scripted=scripted_footprints,
    start_speed_mps=ego_start_speed_mps,
    layout=start_layout,
)
