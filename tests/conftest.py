import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import worldsim  # noqa: E402,F401  (registers the env ids)

FAMILIES = ("balls", "push", "drive")
TRUTH_IDS = {"balls": "worldsim/Balls-v0", "push": "worldsim/Push-v0", "drive": "worldsim/Drive-v0"}
BACKENDS = ("mujoco", "pybullet")
