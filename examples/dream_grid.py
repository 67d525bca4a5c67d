"""Step 16 generated worlds at once (a batched DreamVectorEnv) and save them as one mp4 grid.

.venv/bin/python examples/dream_grid.py [--scene push] [--worlds 16] [--steps 100] [--out outputs/dream_grid.mp4]
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import numpy as np

import worldsim  # noqa: F401  (registers the env ids)
from worldsim.report.video import grid, upscale, write_mp4


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scene", default="push", choices=["balls", "push", "drive"])
    parser.add_argument("--worlds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/dream_grid.mp4")
    args = parser.parse_args()

    env = gym.make_vec(f"worldsim/Dream-{args.scene.capitalize()}-v0", num_envs=args.worlds)
    obs, info = env.reset(seed=args.seed)
    for caption in info["caption"][:4]:
        print(caption)
    env.action_space.seed(args.seed)
    columns = math.ceil(math.sqrt(args.worlds))
    frames = [grid([upscale(o, 2) for o in obs], columns)]
    start = time.perf_counter()
    for _ in range(args.steps):
        obs, rewards, terminated, truncated, info = env.step(env.action_space.sample())
        frames.append(grid([upscale(o, 2) for o in obs], columns))
    elapsed = time.perf_counter() - start
    env.close()
    path = write_mp4(np.stack(frames), args.out, fps=10)
    print(
        f"{args.worlds} worlds x {args.steps} steps in {elapsed:.1f} s "
        f"({args.worlds * args.steps / elapsed:.0f} env-steps/s); wrote {path}"
    )


if __name__ == "__main__":
    main()
