"""Environment ids, registered with entry-point strings so importing worldsim stays light."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

TRUTH_ENVS = {
    "worldsim/Balls-v0": ("envs.truth:BallsEnv", 200),
    "worldsim/Push-v0": ("envs.truth:PushEnv", 200),
    "worldsim/Drive-v0": ("envs.truth:DriveEnv", 300),
}


def register_envs() -> None:
    for env_id, (entry_point, horizon) in TRUTH_ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, max_episode_steps=horizon)
