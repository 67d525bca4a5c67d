"""Policies that ignore the state: uniform noise and smooth, correlated noise."""

from __future__ import annotations

import numpy as np


class RandomPolicy:
    """Independent uniform actions in [-1, 1]^2 every step."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def reset(self, state: dict[str, np.ndarray]) -> None:
        pass

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, 2).astype(np.float32)


class SmoothRandomPolicy:
    """Ornstein-Uhlenbeck noise: actions that drift and persist, as a person's would.

    Uniform noise at 10 Hz mostly cancels out; correlated noise moves objects far enough for a world
    model to learn what actions do.
    """

    def __init__(self, rng: np.random.Generator, theta: float = 0.15, sigma: float = 0.35) -> None:
        self.rng, self.theta, self.sigma = rng, theta, sigma
        self.a = np.zeros(2)

    def reset(self, state: dict[str, np.ndarray]) -> None:
        self.a = self.rng.uniform(-1.0, 1.0, 2)

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray:
        self.a += -self.theta * self.a + self.sigma * self.rng.normal(size=2)
        self.a = np.clip(self.a, -1.0, 1.0)
        return self.a.astype(np.float32)
