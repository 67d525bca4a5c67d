"""Environment ids, registered with entry-point strings so importing worldsim stays light."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

TRUTH_ENVS = {
    "worldsim/Balls-v0": ("envs.truth:BallsEnv", 200),
    "worldsim/Push-v0": ("envs.truth:PushEnv", 200),
    "worldsim/Drive-v0": ("envs.truth:DriveEnv", 300),
}

# Generated worlds: the env truncates at its own ``horizon`` (default: the truth env's episode length),
# so no TimeLimit wrapper is added; ``gymnasium.make_vec`` builds the batched class.
DREAM_ENVS = {
    "worldsim/Dream-Balls-v0": ("envs.dream:DreamBallsEnv", "envs.dream:DreamBallsVectorEnv"),
    "worldsim/Dream-Push-v0": ("envs.dream:DreamPushEnv", "envs.dream:DreamPushVectorEnv"),
    "worldsim/Dream-Drive-v0": ("envs.dream:DreamDriveEnv", "envs.dream:DreamDriveVectorEnv"),
}


def register_envs() -> None:
    for env_id, (entry_point, horizon) in TRUTH_ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, max_episode_steps=horizon)
    for env_id, (entry_point, vector_entry_point) in DREAM_ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)
