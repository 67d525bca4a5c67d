"""Train a stable-baselines3 agent inside a generated world, then evaluate it in MuJoCo.

The agent never sees MuJoCo while it learns: Dream-Push-v0 is the shipped generator, its reward
head and (with --obs state) its state probe. The same policy then acts in Push-v0, the MuJoCo
world with the same spaces, next to a random policy as the baseline.

    .venv/bin/python examples/train_in_dream.py [--steps 5000] [--obs state|pixels] [--episodes 10]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import worldsim  # noqa: F401  (registers the env ids)


def mean_return(env: gym.Env, act, episodes: int, seed: int) -> float:
    """Mean undiscounted return of ``act(obs)`` over ``episodes`` episodes with seeds seed, seed+1, ..."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5000, help="PPO timesteps in the generated world")
    parser.add_argument("--obs", default="state", choices=["state", "pixels"])
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes in MuJoCo")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dream = gym.make("worldsim/Dream-Push-v0", obs=args.obs, horizon=args.horizon)
    policy = "MlpPolicy" if args.obs == "state" else "CnnPolicy"
    agent = PPO(policy, dream, n_steps=256, batch_size=64, seed=args.seed, verbose=0)
    start = time.perf_counter()
    agent.learn(total_timesteps=args.steps)
    print(f"trained {args.steps} steps in the generated world in {time.perf_counter() - start:.0f} s")

    truth = gym.make("worldsim/Push-v0", obs=args.obs, max_episode_steps=args.horizon)
    truth.action_space.seed(args.seed)
    trained = mean_return(truth, lambda o: agent.predict(o, deterministic=True)[0], args.episodes, 1000)
    random = mean_return(truth, lambda o: truth.action_space.sample(), args.episodes, 1000)
    print(
        f"MuJoCo Push-v0, {args.episodes} episodes of {args.horizon} steps: "
        f"agent trained in the dream {trained:.2f}, random policy {random:.2f} (mean return)"
    )


if __name__ == "__main__":
    main()
