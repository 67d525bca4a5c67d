"""The data-collection policy: a mixture that switches between controllers and noise.

A world model trained on one kind of action learns to ignore actions; this mixture gives it
purposeful, noisy, smooth and erratic actions within and across episodes.
"""

from __future__ import annotations

import numpy as np

from policies.random import RandomPolicy, SmoothRandomPolicy


class MixturePolicy:
    """Every segment of 5-30 steps, pick a component: scripted with Gaussian noise (std up to 0.4),
    smooth random, uniform random, or a held constant action.

    ``noise_scale`` per action axis shrinks the noise components there towards the controller's
    action (Drive uses 0.3 on steering: full random steering leaves the road within a second).
    """

    WEIGHTS = {"scripted": 0.45, "smooth": 0.3, "uniform": 0.15, "constant": 0.1}

    def __init__(
        self, scripted, rng: np.random.Generator, noise_scale: tuple[float, float] = (1.0, 1.0)
    ) -> None:
        self.rng = rng
        self.scripted = scripted
        self.noise_scale = np.asarray(noise_scale, dtype=np.float32)
        self.smooth = SmoothRandomPolicy(rng)
        self.uniform = RandomPolicy(rng)
        self.left, self.kind, self.noise, self.constant = 0, "scripted", 0.0, np.zeros(2, np.float32)

    def reset(self, state: dict[str, np.ndarray]) -> None:
        self.scripted.reset(state)
        self.smooth.reset(state)
        self.left = 0

    def act(self, state: dict[str, np.ndarray]) -> np.ndarray:
        if self.left <= 0:
            kinds, weights = zip(*self.WEIGHTS.items(), strict=True)
            self.kind = str(self.rng.choice(kinds, p=np.array(weights) / sum(weights)))
            self.left = int(self.rng.integers(5, 31))
            self.noise = float(self.rng.uniform(0.0, 0.4))
            self.constant = self.rng.uniform(-1, 1, 2).astype(np.float32)
        self.left -= 1
        scripted = self.scripted.act(state)  # always called so stateful controllers stay current
        if self.kind == "scripted":
            a = scripted + self.rng.normal(0.0, self.noise, 2) * self.noise_scale
        else:
            noise = {"smooth": self.smooth.act, "uniform": self.uniform.act}.get(
                self.kind, lambda s: self.constant
            )
            # Scaled axes blend noise with the controller, so noise there perturbs rather than replaces it.
            a = self.noise_scale * noise(state) + (1.0 - self.noise_scale) * scripted
        return np.clip(a, -1.0, 1.0).astype(np.float32)
