"""Generated worlds as Gymnasium environments: a world model stepped like the truth env of its family.

``DreamVectorEnv`` runs N worlds that exist only inside the generator, all advanced by one batched
forward pass per step; ``DreamEnv`` is one of them as a ``gymnasium.Env``. Spaces are the truth
env's, so a policy moves between ``worldsim/Push-v0`` and ``worldsim/Dream-Push-v0`` unchanged.

Side by side with the truth: a world is drawn exactly as the truth env draws it. World ``i`` of a
reset with ``seed=s`` uses the random stream of seed ``s + i`` (what ``SyncVectorEnv`` gives its
``i``-th env), draws its spec from the ``split`` sampler with it, and with ``context="real"`` starts
from MuJoCo's first frame of that spec. So ``Dream-X-v0`` and ``X-v0`` reset with the same seed start
from the same world and the same first observation, and can be stepped with the same actions.

Each world also has its own torch random stream for sampling, so a batch of worlds generates what
each world would generate alone. Rewards and terminations come from the generator's heads;
``truncated`` is set at ``horizon``. The vector env resets ended worlds on the next step (Gymnasium's
``AutoresetMode.NEXT_STEP``): that step ignores the world's action and returns its first observation
with reward 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.truth import ACTION_SPACE, observation_space
from worldsim.model.probe import COLOUR_SLOTS, StateProbe, object_colours
from worldsim.model.world_model import WorldModel, check_precision
from worldsim.physics.base import check_action
from worldsim.physics.state import STATE_LIMIT
from worldsim.registration import TRUTH_ENVS
from worldsim.scenes import caption, family_of, parse_prompt, script_of, start_step_m
from worldsim.scenes.base import check_split

CONTEXTS = ("real", "generated")


def check_actions(actions: Any, num_envs: int, action_dim: int) -> np.ndarray:
    """Actions ``[num_envs, action_dim]`` as float32: a wrong shape or a non-finite value is a
    ``ValueError`` naming the world and component; values outside [-1, 1] are clipped."""
    arr = np.asarray(actions, dtype=np.float64)
    if arr.shape != (num_envs, action_dim):
        raise ValueError(f"actions have shape {arr.shape}; expected ({num_envs}, {action_dim})")
    finite = np.isfinite(arr).all(1)
    if not finite.all():
        world = int(np.flatnonzero(~finite)[0])
        try:
            check_action(arr[world], (action_dim,))  # the truth envs' check names the component
        except ValueError as e:
            raise ValueError(f"world {world}: {e}: {arr[world].tolist()}") from None
    return np.clip(arr, -1.0, 1.0).astype(np.float32)


def default_horizon(family: str) -> int:
    """The truth env's episode length, so both envs truncate at the same step."""
    return TRUTH_ENVS[f"worldsim/{family.capitalize()}-v0"][1]


class DreamVectorEnv(VectorEnv):
    """``num_envs`` generated worlds of one family, stepped in one batched forward pass.

    Kwargs: ``checkpoint`` (a checkpoint directory; default the shipped one) or ``model`` (a loaded
    ``WorldModel``, shared rather than copied, with ``probe`` when the state is observed),
    ``prompt`` (every world this prompt; else specs drawn from the ``split`` sampler), ``obs``
    (``"pixels"``, ``"state"`` or ``"both"``, as in the truth env; the state is read from the two
    most recent frames by the checkpoint's state probe), ``horizon`` (default: the truth env's),
    ``device``, ``sampling_steps`` and ``sampling_precision`` (``"float32"`` or ``"bfloat16"``;
    default: the checkpoint's), ``context`` (``"real"``: MuJoCo's first frame of
    the spec; ``"generated"``: a first frame generated from the prompt alone).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        family: str,
        num_envs: int = 1,
        checkpoint: str | None = None,
        model: WorldModel | None = None,
        probe: StateProbe | None = None,
        prompt: str | None = None,
        split: str = "id",
        obs: str = "pixels",
        horizon: int | None = None,
        device: str = "cpu",
        sampling_steps: int | None = None,
        sampling_precision: str | None = None,
        context: str = "real",
        render_mode: str | None = None,
    ) -> None:
        from worldsim.checkpoints import load_world_model, shipped
        from worldsim.train.probe import load_probe

        self.family = family_of(family)
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        observation_space(self.family.name, obs, 1, 1)  # an unknown obs mode fails here, clearly
        self.model = model if model is not None else load_world_model(checkpoint, self.family.name, device)
        if self.model.cfg.family != self.family.name:
            raise ValueError(
                f"the generator is of family {self.model.cfg.family!r}, not {self.family.name!r}"
            )
        self.probe = None
        if obs != "pixels":
            if probe is None and model is not None and checkpoint is None:
                raise ValueError(f"obs={obs!r} reads the state with a probe: pass probe= with model=")
            if probe is None:
                path = checkpoint if checkpoint is not None else shipped(self.family.name)
                probe = load_probe(path, self.family.name, device)
            if probe.cfg.family != self.family.name:
                raise ValueError(
                    f"the state probe is of family {probe.cfg.family!r}, not {self.family.name!r}"
                )
            self.probe = probe.to(next(self.model.parameters()).device)
        self.device = next(self.model.parameters()).device
        cfg = self.model.cfg
        self.num_envs = num_envs
        self.split = check_split(split)
        self.fixed_scene = parse_prompt(prompt, self.family.name) if prompt is not None else None
        self.obs_mode = obs
        self.horizon = int(horizon) if horizon is not None else default_horizon(self.family.name)
        self.sampling_steps = sampling_steps
        self.sampling_precision = (
            check_precision(sampling_precision) if sampling_precision is not None else None
        )
        self.context_mode = context
        self.render_mode = render_mode
        self.single_observation_space = observation_space(self.family.name, obs, cfg.width, cfg.height)
        self.single_action_space = ACTION_SPACE
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {**self.metadata, "render_fps": int(self.family.control_hz)}
        self._sim = None  # MuJoCo renders the real first frames; built on first use
        k, n = cfg.context, num_envs
        self._rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(n)]
        self._torch_gens = [torch.Generator().manual_seed(int(r.integers(2**62))) for r in self._rngs]
        self.scenes: list[Any] = [None] * n
        self.captions: list[str] = [""] * n
        self._frames = torch.zeros(n, k, cfg.height, cfg.width, 3, dtype=torch.uint8, device=self.device)
        self._mask = torch.zeros(n, k, dtype=torch.bool, device=self.device)
        self._actions = torch.zeros(n, k, cfg.action_dim, device=self.device)
        self._prompts: torch.Tensor | None = None
        self._colours = torch.zeros(n, 3 * COLOUR_SLOTS, device=self.device)  # what the probe is told
        self._steps = np.zeros(n, dtype=np.int64)
        self._odometer = self.model.start_odometer(n, self.device)  # distance each world's camera travelled
        self._ended = np.zeros(n, dtype=bool)
        self._started = False

    # -- worlds ---------------------------------------------------------------------------------

    def _seed_worlds(self, seed: int | Sequence[int] | None) -> None:
        if seed is None:
            return
        seeds = [int(seed) + i for i in range(self.num_envs)] if np.isscalar(seed) else list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} worlds")
        for i, s in enumerate(seeds):
            self._rngs[i], _ = seeding.np_random(s)
            self._torch_gens[i] = torch.Generator().manual_seed(s)

    def _first_frame(self, spec: Any) -> np.ndarray:
        if self._sim is None:
            from worldsim.physics import make_simulator

            cfg = self.model.cfg
            self._sim = make_simulator(self.family.name, "mujoco", cfg.width, cfg.height)
        self._sim.reset(spec)
        return self._sim.render()

    def _start(self, worlds: np.ndarray, options: dict | None) -> None:
        """Draw a new world for each index in ``worlds`` and set its start context."""
        options = options or {}
        given = options.get("prompt")
        fixed = parse_prompt(given, self.family.name) if given is not None else options.get("spec")
        fixed = fixed if fixed is not None else self.fixed_scene
        for i in worlds:
            spec = fixed if fixed is not None else self.family.sample(self._rngs[i], self.split)
            self.scenes[i], self.captions[i] = spec, caption(spec)
            self._colours[i] = torch.from_numpy(object_colours(spec))
        idx = torch.as_tensor(worlds, device=self.device)
        k = self.model.cfg.context
        prompts = self.model.encode_prompts([self.captions[i] for i in worlds])
        if self._prompts is None:
            self._prompts = torch.zeros(self.num_envs, prompts.shape[1], device=self.device)
        self._prompts[idx] = prompts
        if self.context_mode == "real":
            first = torch.from_numpy(np.stack([self._first_frame(self.scenes[i]) for i in worlds]))
        elif self.model.cfg.first_frame_layout:  # drawn over the prompt's layout: no noise to draw
            first = self.model.first_frames([self.captions[i] for i in worlds])[0][:, -1]
        else:
            empty, mask = self.model.empty_context(len(worlds))
            noise = self._noise(worlds)
            acts = torch.zeros(len(worlds), k, self.model.cfg.action_dim, device=self.device)
            first = self.model.predict_next(
                empty,
                acts,
                prompts,
                mask,
                **self._sampling(),
                noise=noise,
                frame_index=0,
                odometer_m=0.0,
                scripts=[script_of(self.scenes[i]) for i in worlds],
            )
        first = first.to(self.device)
        self._frames[idx] = first[:, None].expand(-1, k, *first.shape[1:])
        self._mask[idx] = False
        self._mask[idx, -1] = True
        self._actions[idx] = 0.0
        self._steps[worlds] = 0
        self._odometer[idx] = self.model.start_odometer(len(worlds), self.device)  # its episode's first frame
        self._ended[worlds] = False

    def _sampling(self) -> dict[str, Any]:
        return {"steps": self.sampling_steps, "precision": self.sampling_precision}

    def _noise(self, worlds: np.ndarray) -> dict[str, torch.Tensor]:
        """Each world's sampling noise from its own stream: batching does not change what it draws."""
        draws = [
            self.model.draw_sampling_noise(1, self._torch_gens[i], steps=self.sampling_steps) for i in worlds
        ]
        return {key: torch.cat([d[key] for d in draws]) for key in draws[0]}

    # -- Gymnasium API --------------------------------------------------------------------------

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        self._seed_worlds(seed)
        self._start(np.arange(self.num_envs), options)
        self._started = True
        return self._observe(), self._info(np.zeros(self.num_envs, bool))

    @torch.no_grad()
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = torch.from_numpy(check_actions(actions, self.num_envs, self.model.cfg.action_dim))
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        restarting = self._ended.copy()
        live = np.flatnonzero(~restarting)
        if len(live):
            idx = torch.as_tensor(live, device=self.device)
            acts = torch.cat([self._actions[idx, 1:], a[live, None].to(self.device)], dim=1)
            ctx, mask, prompt = self._frames[idx], self._mask[idx], self._prompts[idx]
            nxt = self.model.predict_next(
                ctx,
                acts,
                prompt,
                mask,
                **self._sampling(),
                noise=self._noise(live),
                frame_index=torch.from_numpy(self._steps[live] + 1),
                odometer_m=self._odometer[idx],
                scripts=[script_of(self.scenes[i]) for i in live],
            )
            reward, logit = self.model.reward_termination(
                ctx[:, -1], acts[:, -1], nxt, prompt, precision=self.sampling_precision
            )
            rewards[live] = reward.cpu().numpy()
            terminated[live] = (logit > 0).cpu().numpy()
            self._frames[idx] = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
            self._mask[idx] = torch.cat([mask[:, 1:], torch.ones_like(mask[:, :1])], dim=1)
            self._actions[idx] = acts
            start = torch.tensor([start_step_m(self.scenes[i]) for i in live], device=self.device)
            self._odometer[idx] = self.model.advance_odometer(
                self._odometer[idx], ctx[:, -1], nxt, acts, start
            )
            self._steps[live] += 1
        if restarting.any():
            self._start(np.flatnonzero(restarting), None)
        truncated = (self._steps >= self.horizon) & ~terminated & ~restarting
        self._ended = terminated | truncated
        return self._observe(), rewards, terminated, truncated, self._info(restarting)

    def _observe(self) -> Any:
        # A copy: the context buffer is updated in place, and a returned observation must not change.
        pixels = self._frames[:, -1].cpu().numpy().copy()
        if self.probe is None:
            return pixels
        with torch.no_grad():
            recent = self._frames[:, -self.probe.cfg.frames :]
            state = (
                self.probe(recent, self._colours)
                .clamp(-STATE_LIMIT, STATE_LIMIT)
                .cpu()
                .numpy()
                .astype(np.float32)
            )
        return state if self.obs_mode == "state" else {"pixels": pixels, "state": state}

    def _info(self, restarted: np.ndarray) -> dict:
        """Dicts of arrays, one entry per world (Gymnasium's vector info layout)."""
        ones = np.ones(self.num_envs, dtype=bool)
        return {
            "caption": np.array(self.captions, dtype=object),
            "_caption": ones,
            "step": self._steps.copy(),
            "_step": ones,
            "restarted": restarted.copy(),
            "_restarted": ones,
        }

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        return tuple(self._frames[:, -1].cpu().numpy().copy())

    def close_extras(self, **kwargs: Any) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None


def _first(obs: Any) -> Any:
    """World 0's observation from a batched one (an array, or a dict of arrays)."""
    return {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]


class DreamEnv(gym.Env):
    """One generated world as a ``gymnasium.Env``: a ``DreamVectorEnv`` of one world (same kwargs).

    ``reset(seed=s)`` draws the world the truth env draws with ``reset(seed=s)``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, family: str, **kwargs: Any) -> None:
        self.vec = DreamVectorEnv(family, num_envs=1, **kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.render_mode = self.vec.render_mode
        self.metadata = {**self.metadata, "render_fps": self.vec.metadata["render_fps"]}

    @property
    def model(self) -> WorldModel:
        return self.vec.model

    @property
    def scene(self) -> Any:
        return self.vec.scenes[0]

    @property
    def caption(self) -> str:
        return self.vec.captions[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None and not self.vec._started:
            seed = int(self.np_random.integers(2**31))
        obs, info = self.vec.reset(seed=seed, options=options)
        return _first(obs), {"caption": self.caption}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.vec._ended[0]:
            raise RuntimeError("the episode has ended: call reset()")
        arr = np.asarray(action, dtype=np.float64)
        if arr.shape != self.action_space.shape:
            raise ValueError(f"action has shape {arr.shape}; expected {self.action_space.shape}")
        obs, r, term, trunc, _ = self.vec.step(arr[None])
        return _first(obs), float(r[0]), bool(term[0]), bool(trunc[0]), {"caption": self.caption}

    def render(self) -> np.ndarray | None:
        frames = self.vec.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vec.close()


class DreamBallsEnv(DreamEnv):
    """``worldsim/Dream-Balls-v0``: Balls generated by a world model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("balls", **kwargs)


class DreamPushEnv(DreamEnv):
    """``worldsim/Dream-Push-v0``: Push generated by a world model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("push", **kwargs)


class DreamDriveEnv(DreamEnv):
    """``worldsim/Dream-Drive-v0``: Drive generated by a world model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("drive", **kwargs)


class DreamBallsVectorEnv(DreamVectorEnv):
    """``gymnasium.make_vec("worldsim/Dream-Balls-v0", num_envs=N)``."""

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        super().__init__("balls", num_envs=num_envs, **kwargs)


class DreamPushVectorEnv(DreamVectorEnv):
    """``gymnasium.make_vec("worldsim/Dream-Push-v0", num_envs=N)``."""

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        super().__init__("push", num_envs=num_envs, **kwargs)


class DreamDriveVectorEnv(DreamVectorEnv):
    """``gymnasium.make_vec("worldsim/Dream-Drive-v0", num_envs=N)``."""

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        super().__init__("drive", num_envs=num_envs, **kwargs)
