"""EDM preconditioning, training loss and few-step sampling (Karras et al., 2022).

The network ``F`` is wrapped as ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` so that its
input and training target have unit variance at every noise level; with that preconditioning a
denoiser samples well in 1-3 Euler steps. Nothing here knows about frames or actions: the
conditioning tensors pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class EDMConfig:
    """Noise distribution in training and the sampling schedule."""

    sigma_data: float = 0.5
    p_mean: float = -0.4  # log-normal training noise: ln(sigma) ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    rho: float = 7.0
    sigma_max_prob: float = 0.5  # share of training samples at exactly sigma_max: the first sampling step


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """``c_skip, c_out, c_in, c_noise`` for per-sample noise levels ``sigma[B]`` (shaped to broadcast)."""
    s = sigma.view(-1, 1, 1, 1)
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_in = 1.0 / (s**2 + sigma_data**2).sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


def denoise(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_noisy: torch.Tensor,
    sigma: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    """``D(x; sigma)``; ``net(c_in * x, c_noise)`` returns the raw network output ``F``."""
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, sigma_data)
    return c_skip * x_noisy + c_out * net(c_in * x_noisy, c_noise)


def draw_training_noise(
    shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The randomness of one training loss: a standard normal per sample (for the noise level) and
    a noise tensor of ``shape``. Drawn apart from the loss so data-parallel ranks can slice one draw."""
    gen_device = generator.device if generator is not None else device
    return {
        "level": torch.randn(shape[0], generator=generator, device=gen_device).to(device),
        "at_max": torch.rand(shape[0], generator=generator, device=gen_device).to(device),
        "noise": torch.randn(shape, generator=generator, device=gen_device).to(device),
    }


LOSSES = ("l2", "pseudo_huber")


def training_loss(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    clean: torch.Tensor,
    cfg: EDMConfig,
    weight: torch.Tensor | None = None,
    draws: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    kind: str = "l2",
    huber_c: float = 0.03,
) -> torch.Tensor:
    """EDM loss on ``clean[B, C, H, W]``, optionally weighted per pixel by ``weight[B, 1|C, H, W]``.

    Written on the network output, ``|F - (clean - c_skip x) / c_out|^2``, which equals the EDM
    weighting ``lambda(sigma) |D - clean|^2`` and keeps every noise level at unit scale. Each sample's
    weighted mean is taken first, then the mean over samples, so the loss of a batch is the mean of
    the losses of its parts (what data-parallel training averages).

    ``kind="pseudo_huber"`` puts ``sqrt(e^2 + c^2) - c`` in place of ``e^2``: quadratic below ``c``,
    absolute above. One-step sampling returns the denoiser at ``sigma_max``, which under the squared
    error is the per-pixel posterior *mean*: where the model is unsure whether an object moved, a
    blend of both outcomes (a faded object and its ghost). Under the absolute error it is the
    per-pixel *median*: where a pixel is either the object's colour or the background's, the more
    likely of the two, so no half-faded pixels. ``huber_c`` is in the network's output scale (unit
    variance at every level), not in grey levels.
    """
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    if draws is None:
        draws = draw_training_noise(tuple(clean.shape), generator, clean.device)
    sigma = (cfg.p_mean + cfg.p_std * draws["level"]).exp()
    sigma = torch.where(draws["at_max"] < cfg.sigma_max_prob, torch.full_like(sigma, cfg.sigma_max), sigma)
    x_noisy = clean + sigma.view(-1, 1, 1, 1) * draws["noise"]
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, cfg.sigma_data)
    target = (clean - c_skip * x_noisy) / c_out
    err = net(c_in * x_noisy, c_noise) - target
    err = err**2 if kind == "l2" else (err**2 + huber_c**2).sqrt() - huber_c
    if weight is None:
        return err.mean()
    w = weight.expand_as(err)
    return ((err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp(min=1e-8)).mean()


def sigma_schedule(steps: int, cfg: EDMConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """``steps`` noise levels from ``sigma_max`` down to ``sigma_min`` (Karras rho schedule), then 0."""
    if steps < 1:
        raise ValueError(f"sampling needs at least 1 step, got {steps}")
    if steps == 1:
        sigmas = torch.tensor([cfg.sigma_max])
    else:
        ramp = torch.linspace(0, 1, steps)
        lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
        sigmas = (hi + ramp * (lo - hi)) ** cfg.rho
    return torch.cat([sigmas, torch.zeros(1)]).to(device)


def ancestral_levels(s: torch.Tensor, s_next: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step from ``s`` to ``s_next`` into a deterministic move to ``sigma_down`` and fresh
    noise of ``sigma_up`` (sigma_down^2 + sigma_up^2 = s_next^2): the ancestral step of DDPM in EDM's
    terms, with ``eta`` scaling the fresh share (0: Euler's ODE step, 1: fully ancestral)."""
    up = torch.minimum(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2).clamp(min=0).sqrt())
    return (s_next**2 - up**2).clamp(min=0).sqrt(), up


@torch.no_grad()
def sample(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    cfg: EDMConfig,
    steps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    noise: torch.Tensor | None = None,
    eta: float = 0.0,
    renoise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampling from pure noise at ``sigma_max`` in ``steps`` network evaluations: Euler steps of
    the probability-flow ODE (``eta`` = 0), or ancestral steps that put fresh noise back after each
    denoising (``eta`` > 0).

    Why ancestral: a deterministic few-step ODE from ``sigma_max`` first lands on the denoiser's
    mean (a ball blended over the places it may go) and only refines that blend; fresh noise at
    each level lets the later steps commit to one of the places.

    The randomness is the starting noise, drawn from ``generator`` or given as ``noise`` (standard
    normal, ``shape``) when the caller draws it (e.g. one stream per world of a batch), and with
    ``eta`` > 0 the fresh noise of steps 1..steps-1, given as ``renoise`` (``[B, steps - 1, ...]``)
    or drawn from ``generator``."""
    sigmas = sigma_schedule(steps, cfg, device)
    gen_device = generator.device if generator is not None else device
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=gen_device)
    elif tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    fresh = eta > 0 and steps > 1
    want = (shape[0], steps - 1, *shape[1:])
    if fresh and renoise is None:
        renoise = torch.randn(want, generator=generator, device=gen_device)
    elif fresh and tuple(renoise.shape) != want:
        raise ValueError(f"renoise has shape {tuple(renoise.shape)}, expected {want} for {steps} steps")
    x = noise.to(device) * sigmas[0]
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = denoise(net, x, s.expand(shape[0]), cfg.sigma_data)
        if s_next == 0:
            x = d
        elif fresh:
            down, up = ancestral_levels(s, s_next, eta)
            x = x + (x - d) / s * (down - s) + up * renoise[:, i].to(device)
        else:
            x = x + (x - d) / s * (s_next - s)
    return x
