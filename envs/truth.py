"""Ground-truth environments: a scene family in MuJoCo (truth) or PyBullet (twin) as a Gymnasium env."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.tasks import reward_and_termination
from worldsim.physics import make_simulator
from worldsim.physics.base import check_action
from worldsim.physics.state import STATE_LIMIT, STATE_VECTOR_SIZE, state_vector
from worldsim.scenes import caption, family_of, parse_prompt
from worldsim.scenes.base import check_split

OBS_MODES = ("pixels", "state", "both")


def observation_space(family: str, obs: str, width: int, height: int) -> spaces.Space:
    """The observation space shared by a family's truth and generated envs."""
    pixels = spaces.Box(0, 255, (height, width, 3), np.uint8)
    state = spaces.Box(-STATE_LIMIT, STATE_LIMIT, (STATE_VECTOR_SIZE[family],), np.float32)
    if obs == "pixels":
        return pixels
    if obs == "state":
        return state
    if obs == "both":
        return spaces.Dict({"pixels": pixels, "state": state})
    raise ValueError(f"obs must be one of {OBS_MODES}, got {obs!r}")


ACTION_SPACE = spaces.Box(-1.0, 1.0, (2,), np.float32)


class TruthEnv(gym.Env):
    """A scene family simulated by a physics engine.

    Each reset draws a world: the ``spec`` or ``prompt`` given to the constructor (or in
    ``reset(options={"spec": ...})`` / ``{"prompt": ...}``), else one sampled with ``self.np_random``
    from the ``split`` sampler (``"id"`` or ``"ood"``). Actions are 2-D in [-1, 1]: out-of-range
    values are clipped; non-finite values or a wrong shape raise ``ValueError``.
    ``info`` carries the caption of the world and its physical ``state`` (SI units) at every step.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        family: str,
        backend: str = "mujoco",
        obs: str = "pixels",
        width: int = 64,
        height: int = 64,
        camera: str | None = None,
        prompt: str | None = None,
        spec: Any = None,
        split: str = "id",
        render_mode: str | None = None,
    ) -> None:
        self.family = family_of(family)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.obs_mode = obs
        self.camera_name = self.family.camera(camera).name
        self.split = check_split(split)
        self.backend = backend
        self.fixed_scene = self._resolve_spec(prompt, spec)
        self.observation_space = observation_space(self.family.name, obs, width, height)
        self.action_space = ACTION_SPACE
        self.metadata = {**self.metadata, "render_fps": int(self.family.control_hz)}
        self.sim = make_simulator(self.family.name, backend, width, height)
        self.scene: Any = None  # the SceneSpec of the current episode (env.spec is Gymnasium's EnvSpec)
        self.caption = ""
        self._state: dict[str, np.ndarray] = {}

    def _resolve_spec(self, prompt: str | None, spec: Any) -> Any:
        if prompt is not None and spec is not None:
            raise ValueError("give a prompt or a spec, not both")
        if prompt is not None:
            return parse_prompt(prompt, self.family.name)
        if spec is not None and not isinstance(spec, self.family.spec_type):
            raise TypeError(f"spec must be a {self.family.spec_type.__name__}, got {type(spec).__name__}")
        return spec

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        options = options or {}
        spec = self._resolve_spec(options.get("prompt"), options.get("spec")) or self.fixed_scene
        if spec is None:
            spec = self.family.sample(self.np_random, self.split)
        self.scene = spec
        self.caption = caption(spec)  # the prompt of this episode's world, reported in every info
        self.sim.reset(spec)
        self._state = self.sim.state()
        return self._observe(), {"caption": self.caption, "state": self._state}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self.scene is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action, self.action_space.shape)
        self.sim.step(np.clip(a, -1.0, 1.0))
        prev, self._state = self._state, self.sim.state()
        reward, terminated, events = reward_and_termination(self.family.name, prev, self._state)
        info = {"caption": self.caption, "state": self._state, **events}
        return self._observe(), float(reward), bool(terminated), False, info

    def _observe(self) -> Any:
        if self.obs_mode == "state":
            return state_vector(self.family.name, self._state)
        pixels = self.sim.render(self.camera_name)
        if self.obs_mode == "pixels":
            return pixels
        return {"pixels": pixels, "state": state_vector(self.family.name, self._state)}

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.sim.render(self.camera_name)
        return None

    def close(self) -> None:
        self.sim.close()


class BallsEnv(TruthEnv):
    """``worldsim/Balls-v0``: see ``worldsim.scenes.balls``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("balls", **kwargs)


class PushEnv(TruthEnv):
    """``worldsim/Push-v0``: see ``worldsim.scenes.push``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("push", **kwargs)


class DriveEnv(TruthEnv):
    """``worldsim/Drive-v0``: see ``worldsim.scenes.drive``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("drive", **kwargs)
