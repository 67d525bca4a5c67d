"""Pieces of MJCF every family shares: flat unlit materials, no shadows, the physics options."""

from __future__ import annotations

from collections.abc import Iterable

from worldsim.scenes.base import CameraRig
from worldsim.scenes.colours import rgba


def material(name: str, colour: str) -> str:
    # Emission 1 with a black headlight and no other light renders exactly the material colour: flat,
    # no shading. (An *inactive* headlight is not the same: MuJoCo then adds a default ambient light.)
    return f'<material name="{name}" rgba="{rgba(colour)}" emission="1" specular="0" shininess="0"/>'


def camera(rig: CameraRig) -> str:
    """A fixed MJCF camera with the rig's pose; follow cameras are moved by the simulator each frame."""
    right, up, _ = rig.axes()
    axes = " ".join(f"{v:.6f}" for v in (*right, *up))
    pos = " ".join(f"{v:.4f}" for v in rig.pos_m)
    return f'    <camera name="{rig.name}" pos="{pos}" xyaxes="{axes}" fovy="{rig.fovy_deg}"/>'


def document(
    model: str,
    timestep_s: float,
    materials: Iterable[tuple[str, str]],
    worldbody: str,
    extra: str = "",
    cameras: Iterable[CameraRig] = (),
    cone: str = "pyramidal",
) -> str:
    """Wrap a world body in an MJCF document with flat materials and shadow-free, unlit rendering."""
    mats = "\n    ".join(material(n, c) for n, c in materials)
    worldbody = "\n".join([*(camera(c) for c in cameras), worldbody])
    return f"""<mujoco model="{model}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep_s}" gravity="0 0 -9.81" integrator="implicitfast" cone="{cone}"/>
  <visual>
    <global offwidth="1024" offheight="1024"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0 0 0" diffuse="0 0 0" specular="0 0 0" active="1"/>
    <map znear="0.01" zfar="100"/>
  </visual>
  <asset>
    {mats}
  </asset>
  <worldbody>
{worldbody}
  </worldbody>
{extra}
</mujoco>
"""


def solref_for_restitution(restitution: float, stiffness: float) -> str:
    """A direct (negative) ``solref`` whose spring-damper contact bounces with ``restitution``.

    A contact with stiffness k and damping b (per unit mass) is a damped oscillator with damping
    ratio zeta = b / (2 sqrt(k)); it releases the body after half a period with velocity ratio
    exp(-zeta pi / sqrt(1 - zeta^2)). Inverting that gives b for a wanted restitution.
    """
    import math

    e = min(max(restitution, 1e-3), 0.999)
    zeta = -math.log(e) / math.sqrt(math.pi**2 + math.log(e) ** 2)
    damping = 2.0 * zeta * math.sqrt(stiffness)
    return f"{-stiffness:.1f} {-damping:.3f}"
