"""Training the state probe on truth frames, measuring its floor, saving it beside a generator.

The probe of a generator lives in ``<checkpoint>/probe/`` as a checkpoint of its own (safetensors +
JSON, written atomically, checked on load like any checkpoint), so a shipped generator and its probe
travel together and either can be replaced alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldsim.data.loader import Dataset
from worldsim.model.probe import ProbeConfig, StateProbe, object_colours
from worldsim.physics.state import STATE_VECTOR_SIZE, state_vector
from worldsim.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

PROBE_DIR = "probe"


class ProbeData:
    """Every step of every episode of a dataset: the frames once (``uint8[N, H, W, 3]``), the index
    of each step's earlier frames, and the state vectors ``float32[N, S]``. The first steps of an
    episode repeat its first frame, as a Dream env's start context does."""

    def __init__(self, dataset: Dataset, frames: int = 2) -> None:
        family = dataset.family
        all_frames, lookback, states, colours, offset = [], [], [], [], 0
        for i in range(len(dataset)):
            e = dataset.episode(i)
            n = len(e.frames)
            all_frames.append(e.frames)
            idx = np.arange(n)[:, None] + np.arange(-frames + 1, 1)[None]
            lookback.append(offset + np.clip(idx, 0, None))
            states.append(
                np.stack([state_vector(family, {k: v[t] for k, v in e.states.items()}) for t in range(n)])
            )
            colours.append(np.repeat(object_colours(e.spec)[None], n, axis=0))
            offset += n
        self.frames = np.concatenate(all_frames)
        self.lookback = np.concatenate(lookback)
        self.states = np.concatenate(states).astype(np.float32)
        self.colours = np.concatenate(colours)

    def __len__(self) -> int:
        return len(self.states)

    def inputs(self, picks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe's inputs for the picked steps: frames ``uint8[P, frames, H, W, 3]`` (each step
        with its earlier frames) and object colours ``[P, 3 slots]``."""
        return torch.from_numpy(self.frames[self.lookback[picks]]), torch.from_numpy(self.colours[picks])


def probe_pairs(dataset: Dataset, frames: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """All input frames and state vectors of a (small) dataset at once; see ``ProbeData``."""
    data = ProbeData(dataset, frames)
    return data.inputs(np.arange(len(data)))[0].numpy(), data.states


@torch.no_grad()
def probe_errors(
    probe: StateProbe, data: ProbeData, picks: np.ndarray | None = None, batch: int = 256
) -> np.ndarray:
    """Mean absolute error per state component ``[S]`` over the ``picks`` steps of ``data`` (all by default)."""
    probe.eval()
    picks = np.arange(len(data)) if picks is None else picks
    out = [probe(*data.inputs(picks[i : i + batch])).cpu().numpy() for i in range(0, len(picks), batch)]
    return np.abs(np.concatenate(out) - data.states[picks]).mean(0)


def train_probe(
    train: Dataset,
    val: Dataset,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    channels: int = 32,
) -> StateProbe:
    """Fit a probe to ``train``'s truth frames; its floor (errors on ``val``) is set in its config."""
    if train.family != val.family:
        raise ValueError(f"train data is {train.family!r}, validation data {val.family!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = ProbeData(train)
    y = data.states
    h, w = data.frames.shape[1:3]
    std = np.maximum(y.std(0), 1e-3)  # constant components (absent-ball slots) stay finite
    cfg = ProbeConfig(
        family=train.family,
        state_size=STATE_VECTOR_SIZE[train.family],
        width=w,
        height=h,
        channels=channels,
        mean=y.mean(0).tolist(),
        std=std.tolist(),
    )
    probe = StateProbe(cfg).to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    target = (torch.from_numpy(y) - probe.mean.cpu()) / probe.std.cpu()
    probe.train()
    for _ in range(steps):
        pick = rng.integers(0, len(data), batch_size)
        pred = probe.standardised(*data.inputs(pick))
        loss = torch.nn.functional.smooth_l1_loss(pred, target[pick].to(device), beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    held_out = ProbeData(val)
    fit_picks = rng.choice(len(data), min(len(data), 5000), replace=False)
    cfg.floor = {
        "val_mean_abs_error": probe_errors(probe, held_out).tolist(),
        "train_mean_abs_error": probe_errors(probe, data, fit_picks).tolist(),
        "val_frames": len(held_out),
        "steps": steps,
    }
    return probe.eval()


def save_probe(probe: StateProbe, checkpoint: str | Path) -> Path:
    """Write ``probe`` into ``<checkpoint>/probe/``."""
    return save_checkpoint(
        Path(checkpoint) / PROBE_DIR,
        probe,
        probe.cfg.to_dict(),
        family=probe.cfg.family,
        frame_size=(probe.cfg.height, probe.cfg.width),
    )


def load_probe(checkpoint: str | Path, family: str, device: str | torch.device = "cpu") -> StateProbe:
    """The probe stored with a generator checkpoint; a clear error if it has none."""
    path = Path(checkpoint) / PROBE_DIR
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{checkpoint} has no state probe (obs='state' needs one); train it with "
            f"`worldsim probe scene={family} checkpoint={checkpoint}`"
        )
    ckpt = load_checkpoint(path, family=family, map_location=device)
    try:
        cfg = ProbeConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a state probe: {err}") from err
    return ckpt.load_into(StateProbe(cfg)).to(device).eval()
