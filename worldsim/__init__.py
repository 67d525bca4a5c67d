"""worldsim: generated worlds you can act in and measure against physics.

Importing worldsim registers its Gymnasium ids (``worldsim/Balls-v0``, ``worldsim/Push-v0``,
``worldsim/Drive-v0``), as Gymnasium registers its own.
"""

import os

# Headless rendering by default; MuJoCo reads this when it is first imported, so set it early.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from worldsim.registration import register_envs  # noqa: E402

__version__ = "0.1.0"

register_envs()
