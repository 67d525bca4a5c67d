"""The latent route's floor on Balls: how well a small learned autoencoder keeps the objects.

A latent-space generator can be no more exact than its codec: every generated frame is decoded, so
the codec's own reconstruction error is added to every step. This trains a convolutional
autoencoder (64x64x3 to an 8x8xC latent, 8x fewer positions than pixels) for a fixed CPU budget on
Balls frames and measures, on held-out frames, the centroid error of the objects (the same colour
extractor as the fidelity report), how many objects it loses, PSNR, and its encode+decode speed.
The pixel route has no codec: its floor is the extractor's own parsing error.

Usage: ``python benchmarks/latent_codec.py [data=data/balls] [val=data/balls_val] [minutes=10]``;
writes ``benchmarks/results/latent_codec.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldsim.data.loader import load_dataset
from worldsim.metrics.frames import psnr
from worldsim.metrics.objects import centroid_errors, extract_objects, palette_for
from worldsim.model.world_model import to_float, to_uint8


def _block(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class Codec(nn.Module):
    """Three stride-2 stages down to ``latent`` channels on an 8x8 grid, and back."""

    def __init__(self, width: int = 64, latent: int = 8) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            _block(3, w // 2),
            nn.Conv2d(w // 2, w, 4, stride=2, padding=1),
            _block(w, w),
            nn.Conv2d(w, w, 4, stride=2, padding=1),
            _block(w, w),
            nn.Conv2d(w, w, 4, stride=2, padding=1),
            _block(w, w),
            nn.Conv2d(w, latent, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, w, 3, padding=1),
            _block(w, w),
            nn.ConvTranspose2d(w, w, 4, stride=2, padding=1),
            _block(w, w),
            nn.ConvTranspose2d(w, w, 4, stride=2, padding=1),
            _block(w, w),
            nn.ConvTranspose2d(w, w // 2, 4, stride=2, padding=1),
            _block(w // 2, w // 2),
            nn.Conv2d(w // 2, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _frames(path: str, episodes: int) -> tuple[np.ndarray, list]:
    data = load_dataset(path)
    eps = [data.episode(i) for i in range(min(episodes, len(data)))]
    return np.concatenate([e.frames for e in eps]), eps


def train_codec(
    frames: np.ndarray, minutes: float, rng: np.random.Generator, latent: int = 8
) -> tuple[Codec, int]:
    """A codec trained on ``frames`` for ``minutes`` of wall-clock, in eval mode, and its step count."""
    codec = Codec(latent=latent)
    opt = torch.optim.AdamW(codec.parameters(), lr=1e-3)
    background = torch.from_numpy(np.median(frames[:: max(1, len(frames) // 2000)], axis=0).astype(np.uint8))
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < 60 * minutes:
        batch = torch.from_numpy(frames[rng.integers(0, len(frames), 32)])
        x = to_float(batch)
        # Objects are a few percent of the pixels: weight pixels that differ from the empty scene.
        weight = 1.0 + 20.0 * ((batch.int() - background.int()).abs().amax(-1) > 6).float()[:, None]
        loss = ((codec(x) - x).abs() * weight).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return codec.eval(), steps


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    minutes = float(args.get("minutes", 10))
    torch.manual_seed(0)
    train, _ = _frames(args.get("data", "data/balls"), int(args.get("episodes", 200)))
    _, val_eps = _frames(args.get("val", "data/balls_val"), 16)
    start = time.perf_counter()
    codec, steps = train_codec(train, minutes, np.random.default_rng(0), latent=int(args.get("latent", 8)))
    train_s = time.perf_counter() - start
    params = sum(p.numel() for p in codec.parameters())
    errors, lost, shown, db = [], 0, 0, []
    with torch.no_grad():
        for e in val_eps:
            rec = to_uint8(codec(to_float(torch.from_numpy(e.frames)))).numpy()
            palette = palette_for(e.spec)
            errors.append(np.nanmean(centroid_errors(e.frames, rec, palette).curve_px()))
            truth_vis, rec_vis = (
                extract_objects(e.frames, palette).visible,
                extract_objects(rec, palette).visible,
            )
            shown += int(truth_vis.sum())
            lost += int((truth_vis & ~rec_vis).sum())
            db.append(float(np.mean(psnr(e.frames, rec, max_db=60.0))))
        x = to_float(torch.from_numpy(val_eps[0].frames[:64]))
        codec(x)
        t0 = time.perf_counter()
        for _ in range(5):
            codec.decoder(codec.encoder(x))
        codec_fps = 5 * len(x) / (time.perf_counter() - t0)
    result = {
        "codec": f"conv autoencoder, 64x64x3 -> 8x8x{args.get('latent', 8)}, {params / 1e6:.2f}M params",
        "threads": torch.get_num_threads(),
        "train_minutes": round(train_s / 60, 1),
        "train_steps": steps,
        "val_episodes": len(val_eps),
        "reconstruction_centroid_error_px": round(float(np.mean(errors)), 3),
        "objects_lost_fraction": round(lost / max(shown, 1), 4),
        "reconstruction_psnr_db": round(float(np.mean(db)), 2),
        "encode_decode_frames_per_s_batch64": round(codec_fps, 1),
    }
    out = Path(args.get("out", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent_codec.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
