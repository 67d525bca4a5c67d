"""Pieces of MJCF every family shares: flat unlit materials, no shadows, the physics options."""

from __future__ import annotations

from collections.abc import Iterable

from worldsim.scenes.base import CameraRig
from worldsim.scenes.colours import rgba

GRAVITY_MPS2 = 9.81
"""The scenes' downward acceleration (MuJoCo's default, written into every document)."""


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
  <option timestep="{timestep_s}" gravity="0 0 -{GRAVITY_MPS2}" integrator="implicitfast" cone="{cone}"/>
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


# Measured restitution of a MuJoCo ball contact (stiffness 20000, timestep 2 ms, solimp 0.99) for
# the oscillator's nominal restitution: a contact cannot pull, so it lets go early and bounces higher
# than a linear spring-damper would (nominal 0.5 bounced at 0.56). Inverting this table corrects it.
_NOMINAL = (
    0.01,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    0.99,
)
_MEASURED = (
    0.1705,
    0.2109,
    0.2544,
    0.2905,
    0.3282,
    0.3668,
    0.4032,
    0.4377,
    0.4797,
    0.5204,
    0.5599,
    0.598,
    0.6374,
    0.6831,
    0.728,
    0.772,
    0.815,
    0.8569,
    0.8999,
    0.9507,
    0.9909,
)
MIN_RESTITUTION = _MEASURED[0]  # the softest bounce this contact model makes


def solref_for_restitution(restitution: float, stiffness: float) -> str:
    """A direct (negative) ``solref`` whose spring-damper contact bounces with ``restitution``.

    A contact with stiffness k and damping b (per unit mass) is a damped oscillator with damping
    ratio zeta = b / (2 sqrt(k)) and restitution exp(-zeta pi / sqrt(1 - zeta^2)); the wanted
    restitution is first mapped through the measured table above (valid for ``CONTACT_STIFFNESS``
    of the Balls scene), then inverted. Values below ``MIN_RESTITUTION`` give the softest bounce.
    """
    import math

    import numpy as np

    e = float(np.interp(restitution, _MEASURED, _NOMINAL))
    e = min(max(e, 1e-3), 0.999)
    zeta = -math.log(e) / math.sqrt(math.pi**2 + math.log(e) ** 2)
    damping = 2.0 * zeta * math.sqrt(stiffness)
    return f"{-stiffness:.1f} {-damping:.3f}"
