"""The state probe learns to read the physical state from truth frames, and its floor is measured."""

from __future__ import annotations

import numpy as np
import pytest

from worldsim.data.collect import collect
from worldsim.data.loader import load_dataset
from worldsim.train.probe import probe_pairs, train_probe


@pytest.fixture(scope="module")
def push_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    train = collect("push", episodes=12, out=root / "train", num_envs=2, seed=0, max_steps=40, progress=False)
    val = collect("push", episodes=2, out=root / "val", num_envs=2, seed=1, max_steps=40, progress=False)
    return load_dataset(train), load_dataset(val)


def test_pairs_repeat_the_first_frame_at_the_start(push_data):
    x, y = probe_pairs(push_data[1])
    assert x.shape[1:] == (2, 64, 64, 3) and len(x) == len(y)
    np.testing.assert_array_equal(x[0, 0], x[0, 1])
    np.testing.assert_array_equal(x[1, 0], x[0, 1])


def test_probe_beats_predicting_the_mean(push_data):
    """Positions are read from pixels: on its training frames the probe's error falls far below
    that of always answering the mean (what a probe that learned nothing does), and on held-out
    frames (few episodes here, so a loose bound) it is still below it."""
    train, val = push_data
    probe = train_probe(train, val, steps=600, batch_size=32, channels=16)
    fit = np.asarray(probe.cfg.floor["train_mean_abs_error"])
    held_out = np.asarray(probe.cfg.floor["val_mean_abs_error"])
    _, y = probe_pairs(train)
    _, vy = probe_pairs(val)
    positions = [0, 1, 4, 5]  # pusher x, y; object x, y
    fit_baseline = np.abs(y - y.mean(0)).mean(0)[positions]
    val_baseline = np.abs(vy - np.asarray(probe.cfg.mean)).mean(0)[positions]
    assert (fit[positions] < 0.3 * fit_baseline).all(), (fit[positions], fit_baseline)
    assert held_out[positions].mean() < val_baseline.mean(), (held_out[positions], val_baseline)
