"""The latent route end to end on Balls: a codec, a dynamics model on its 8x8 grid, the same scores.

`latent_codec.py` measured what a learned latent space costs a generator at best (its reconstruction
error). This measures what it buys: for a fixed CPU budget it trains the codec, encodes the dataset
once, trains a next-latent model conditioned like the pixel generator (the K most recent latents and
their differences, the K most recent actions, the prompt through the project's own prompt encoder,
noise-augmented context), rolls it out from the first K real frames of `worldsim evaluate`'s starts
under the starts' own actions, decodes every latent, and scores the video with `worldsim evaluate`'s
own scoring against MuJoCo, the PyBullet twin and the frozen baseline. The pixel generator's figures
for the same starts come from `worldsim evaluate scene=balls split=id episodes=50 horizon=30`.

The dynamics model regresses the next latent (its mean), as the pixel generator's one Euler step
from `sigma_max` does. Its rollouts are told a context noise level of 0.02 (the pixel generator's
sampling setting) but, unlike the pixel sampler, add none. With ``snap=true`` each generated latent is decoded to uint8 and encoded
again before it becomes context, which puts it back on the codec's manifold of real frames.

Usage: ``python benchmarks/latent_generator.py [codec_minutes=10] [dynamics_minutes=35]
[episodes=50] [horizon=30]``; writes ``benchmarks/results/latent_generator.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from latent_codec import Codec, train_codec
from safetensors.torch import save_file
from torch import nn

from worldsim.data.loader import load_dataset
from worldsim.evaluate import make_episodes, score
from worldsim.model.prompt import PromptEncoder, PromptEncoderConfig, PromptTokenizer
from worldsim.model.unet import FiLMResBlock, SelfAttention, fourier_features
from worldsim.model.world_model import to_float, to_uint8

K = 4


class LatentDynamics(nn.Module):
    """Next latent from the K most recent latents ``[B, K, C, 8, 8]``, actions ``[B, K, A]`` and a prompt."""

    def __init__(
        self, tokenizer: PromptTokenizer, latent: int = 8, width: int = 128, blocks: int = 4
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        vocab = tokenizer.vocab
        self.prompt = PromptEncoder(PromptEncoderConfig(vocab_size=len(vocab)))
        cond_dim = 256
        self.cond = nn.Sequential(
            nn.Linear(128 + 2 * K + 32, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )
        self.stem = nn.Conv2d(latent * (2 * K - 1), width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMResBlock(width, width, cond_dim, 8) for _ in range(blocks))
        self.attention = SelfAttention(width, 8)
        self.out = nn.Conv2d(width, latent, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode_prompts(self, captions: list[str]) -> torch.Tensor:
        ids, values = trimmed(*self.tokenizer.encode(captions))
        return self.prompt(ids, values)

    def forward(
        self, z: torch.Tensor, actions: torch.Tensor, prompt: torch.Tensor, ctx_sigma: torch.Tensor
    ) -> torch.Tensor:
        """The change from the last latent."""
        cond = self.cond(torch.cat([prompt, actions.flatten(1), fourier_features(ctx_sigma, 32)], dim=1))
        h = self.stem(torch.cat([z.flatten(1, 2), (z[:, 1:] - z[:, :-1]).flatten(1, 2)], dim=1))
        for i, block in enumerate(self.blocks):
            h = block(h, cond)
            if i == len(self.blocks) // 2 - 1:
                h = self.attention(h)
        return self.out(F.silu(h))


def trimmed(ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding every prompt has (the tokenizer pads to 128 tokens; captions use about 30)."""
    length = int((ids != 0).sum(1).max())
    return ids[:, :length], values[:, :length]


@torch.no_grad()
def encode(codec: Codec, frames: np.ndarray, batch: int = 512) -> torch.Tensor:
    return torch.cat(
        [
            codec.encoder(to_float(torch.from_numpy(frames[i : i + batch])))
            for i in range(0, len(frames), batch)
        ]
    )


@torch.no_grad()
def decode(codec: Codec, z: torch.Tensor) -> np.ndarray:
    return to_uint8(codec.decoder(z)).numpy()


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    codec_minutes = float(args.get("codec_minutes", 10))
    dynamics_minutes = float(args.get("dynamics_minutes", 35))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = load_dataset(args.get("data", "data/balls"))
    eps = [data.episode(i) for i in range(len(data))]
    frames = np.concatenate([e.frames for e in eps])
    t0 = time.perf_counter()
    codec, codec_steps = train_codec(frames, codec_minutes, rng)
    for p in codec.parameters():
        p.requires_grad_(False)
    z_all = encode(codec, frames)  # [N, C, 8, 8]
    encode_s = time.perf_counter() - t0 - 60 * codec_minutes
    mean = z_all.mean(dim=(0, 2, 3), keepdim=True)
    std = z_all.std(dim=(0, 2, 3), keepdim=True)
    z_all = (z_all - mean) / std
    del frames

    # Windows: context latents t-K+1..t, actions t-K+1..t, target t+1, within one episode.
    first = np.cumsum([0] + [len(e.frames) for e in eps[:-1]])
    ends = [(f, f + len(e.frames)) for f, e in zip(first, eps, strict=True)]
    index = np.concatenate([np.arange(f + K - 1, end - 1) for f, end in ends])
    episode_of = np.repeat(np.arange(len(eps)), [max(end - 1 - (f + K - 1), 0) for f, end in ends])
    actions = torch.from_numpy(np.concatenate([np.concatenate([e.actions, e.actions[-1:]]) for e in eps]))
    captions = [e.caption for e in eps]
    model = LatentDynamics(PromptTokenizer.from_captions(captions))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    ids, values = trimmed(*model.tokenizer.encode(captions))
    offsets = torch.arange(-K + 1, 1)
    start, steps, losses = time.perf_counter(), 0, []
    budget = 60 * dynamics_minutes
    while (elapsed := time.perf_counter() - start) < budget:
        # The pixel generator's recipe ends with a cool-down; so does this, over the last 30 % of the time.
        for group in opt.param_groups:
            group["lr"] = 3e-4 * min(1.0, (budget - elapsed) / (0.3 * budget))
        pick = rng.integers(0, len(index), 32)
        t = torch.from_numpy(index[pick])
        z = z_all[t[:, None] + offsets]  # [B, K, C, 8, 8]
        target = z_all[t + 1] - z[:, -1]
        a = actions[t[:, None] + offsets]
        e = torch.from_numpy(episode_of[pick])
        sigma = torch.rand(len(t)) * 0.3 * (torch.rand(len(t)) < 0.7)
        noisy = z + sigma[:, None, None, None, None] * torch.randn_like(z)
        pred = model(noisy, a, model.prompt(ids[e], values[e]), sigma)
        weight = 1.0 + 20.0 * (target.abs().amax(1, keepdim=True) > 0.1).float()
        loss = ((pred - target) ** 2 * weight).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        losses.append(float(loss.detach()))
    dynamics_s = time.perf_counter() - start
    model.eval()

    n_eps, horizon = int(args.get("episodes", 50)), int(args.get("horizon", 30))
    starts = make_episodes("balls", "id", n_eps, horizon, K, 1000, data.frame_shape[:2])
    results = {}
    for snap in (False, True):
        t1 = time.perf_counter()
        with torch.no_grad():
            ctx = torch.stack([(encode(codec, s.frames[:K]) - mean) / std for s in starts])
            prompt = model.encode_prompts([s.caption for s in starts])
            acts = torch.from_numpy(np.stack([s.actions for s in starts]))
            video = []
            for h in range(horizon):
                a = acts[:, h : h + K]
                nxt = ctx[:, -1] + model(ctx, a, prompt, torch.full((len(starts),), 0.02))
                frames_h = decode(codec, nxt * std + mean)
                if snap:
                    nxt = (encode(codec, frames_h) - mean) / std
                video.append(frames_h)
                ctx = torch.cat([ctx[:, 1:], nxt[:, None]], dim=1)
        gen_s = time.perf_counter() - t1
        video = np.stack(video, axis=1)
        for s, v in zip(starts, video, strict=True):
            s.other["model"] = v
        body = score(starts, K, 0.1)
        m = body["summary"]["model"]
        results["snap" if snap else "plain"] = {
            "engine_ratio": round(body["engine_ratio"], 3),
            "frozen_ratio": round(body["frozen_ratio"], 3),
            "physics_iq": round(body["physics_iq"]["model"], 1),
            "centroid_error_px": round(m["centroid_error_px"], 2),
            "kept_fraction": round(m["kept_fraction"], 3),
            "psnr_db": round(m["psnr_db"], 2),
            "frames_per_s": round(len(starts) * horizon / gen_s, 1),
        }
        print(snap, results["snap" if snap else "plain"], flush=True)
    result = {
        "scene": "balls",
        "threads": torch.get_num_threads(),
        "codec_minutes": codec_minutes,
        "codec_steps": codec_steps,
        "encode_dataset_s": round(encode_s, 1),
        "dynamics_minutes": round(dynamics_s / 60, 1),
        "dynamics_steps": steps,
        "dynamics_params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "final_loss": round(float(np.mean(losses[-200:])), 4),
        "episodes": n_eps,
        "horizon": horizon,
        "rollouts": results,
    }
    out = Path(args.get("out", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    if "weights" in args:  # to look at the rollouts again without retraining
        save_file(
            {
                **{f"codec.{k}": v for k, v in codec.state_dict().items()},
                "latent_mean": mean,
                "latent_std": std,
            }
            | {f"dynamics.{k}": v.contiguous() for k, v in model.state_dict().items()},
            args["weights"],
        )
    (out / "latent_generator.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
