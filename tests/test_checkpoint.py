"""Checkpoints: exact round trip, bit-identical resume, clear errors, atomic writes, no pickle."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

import worldsim.train.checkpoint as ckpt_mod
from worldsim.train.checkpoint import (
    CONFIG,
    FORMAT_VERSION,
    MODEL,
    TRAIN_STATE,
    TRAIN_STATE_JSON,
    CheckpointError,
    checkpoint_dir,
    dataset_manifest_sha256,
    latest_checkpoint,
    load_checkpoint,
    load_train_state,
    prune_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
ARCH = {"channels": 8, "classes": 10, "blocks": [1, 2], "dropout": 0.2}


class Tiny(nn.Module):
    """Conv + batch norm + linear, with the awkward parts a real model has: a tied weight, a
    non-contiguous buffer, a buffer that is a view into another, an int buffer, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)  # running stats + int64 num_batches_tracked
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8 * 4 * 4, 16)
        self.embed = nn.Embedding(10, 16)
        self.out = nn.Linear(16, 10, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.register_buffer("mix", torch.randn(8, 3).t())  # non-contiguous
        self.register_buffer("mix_row", self.mix[1])  # a view sharing mix's storage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        h = h * (1 + self.mix_row.view(1, 8, 1, 1)) + self.mix.sum()
        h = self.drop(F.relu(self.conv2(h))).flatten(1)
        return self.out(F.relu(self.head(h)))


def make_run(seed: int) -> tuple[Tiny, torch.optim.AdamW, torch.optim.lr_scheduler.StepLR]:
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def train(model, opt, sched, steps: int, data: np.random.Generator, noise: torch.Generator) -> None:
    """Randomness from all three sources a loop has: numpy data, a torch generator, global dropout."""
    model.train()
    for _ in range(steps):
        x = torch.from_numpy(data.standard_normal((4, 3, 8, 8), dtype=np.float32))
        x = x + 0.1 * torch.randn(x.shape, generator=noise)
        y = torch.from_numpy(data.integers(0, 10, 4))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train ~50x faster on one thread than on two contended ones (OpenMP spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_tree(a, b) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same_tree(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_tree(x, y)
    else:
        assert a == b


@pytest.fixture
def trained(tmp_path):
    """A model and optimizer three steps into training, saved with full train state."""
    model, opt, sched = make_run(0)
    data, noise = np.random.default_rng(1), torch.Generator().manual_seed(2)
    train(model, opt, sched, 3, data, noise)
    path = save_checkpoint(
        tmp_path / "ck",
        model,
        ARCH,
        family="balls",
        frame_size=(64, 48),
        data_manifest_sha256="ab" * 32,
        metadata={"note": "test", "loss": 0.5},
        step=3,
        optimizer=opt,
        extra_state={"scheduler": sched.state_dict(), "odd": {1: (2, "x"), "__tuple__": [None]}},
        generators={"data": data, "noise": noise},
    )
    return path, model, opt, sched, data, noise


# -- round trip -----------------------------------------------------------------------------------


def test_model_round_trip_is_exact(trained):
    path, model, *_ = trained
    ck = load_checkpoint(path, family="balls")
    assert ck.family == "balls" and ck.step == 3 and ck.config == ARCH
    assert ck.frame_size == (64, 48) and ck.data_manifest_sha256 == "ab" * 32
    assert ck.metadata == {"note": "test", "loss": 0.5} and ck.has_train_state

    saved = model.state_dict()
    assert set(ck.state_dict) == set(saved)  # safetensors orders keys its own way
    for k, v in saved.items():
        assert ck.state_dict[k].dtype == v.dtype and torch.equal(ck.state_dict[k], v), k
    assert ck.state_dict["out.weight"] is ck.state_dict["embed.weight"]  # still tied, stored once
    assert "out.weight" not in safetensors.torch.load_file(path / MODEL)

    torch.manual_seed(99)
    fresh = ck.load_into(Tiny())
    assert fresh.out.weight is fresh.embed.weight
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_resume_continues_bit_identically(trained):
    """The real resume test: save, go on N steps; reload into a fresh run, go on N steps: same bits."""
    path, model, opt, sched, data, noise = trained
    saved_opt = copy.deepcopy(opt.state_dict())
    train(model, opt, sched, 4, data, noise)

    def resume(global_rng: bool) -> Tiny:
        model2, opt2, sched2 = make_run(seed=123)  # different init, different RNG everywhere
        data2, noise2 = np.random.default_rng(7), torch.Generator().manual_seed(7)
        random.seed(7)
        load_checkpoint(path, family="balls").load_into(model2)
        state = load_train_state(
            path, opt2, generators={"data": data2, "noise": noise2}, global_rng=global_rng
        )
        assert state.step == 3
        assert_same_tree(opt2.state_dict(), saved_opt)  # incl. float32 step tensors, betas tuple
        sched2.load_state_dict(state.extra["scheduler"])
        train(model2, opt2, sched2, 4, data2, noise2)
        return model2

    resumed = resume(global_rng=True)
    for k, v in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    # Control: without the global RNG (dropout), the resumed run diverges; the test can fail.
    diverged = resume(global_rng=False)
    assert not torch.equal(diverged.head.weight, model.head.weight)


def test_extra_state_round_trips_exactly(trained):
    state = load_train_state(trained[0], global_rng=False)
    assert state.extra["odd"] == {1: (2, "x"), "__tuple__": [None]}
    assert state.extra["scheduler"]["last_epoch"] == 3


def test_inference_checkpoint_has_no_train_state(tmp_path):
    model, *_ = make_run(0)
    path = save_checkpoint(tmp_path / "ship", model, ARCH, family="push")
    assert sorted(p.name for p in path.iterdir()) == [CONFIG, MODEL]
    assert not load_checkpoint(path).has_train_state
    with pytest.raises(CheckpointError, match="no train state"):
        load_train_state(path, torch.optim.AdamW(model.parameters()))


def test_dataclass_config_and_manifest_hash(tmp_path):
    import hashlib
    from dataclasses import dataclass, field

    @dataclass
    class Cfg:
        width: int = 64
        mults: tuple[int, ...] = (1, 2)
        inner: dict = field(default_factory=lambda: {"a": 1.5})

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_bytes(b'{"format": "worldsim-dataset"}\n')
    digest = dataset_manifest_sha256(tmp_path / "ds")
    assert digest == hashlib.sha256(b'{"format": "worldsim-dataset"}\n').hexdigest()
    path = save_checkpoint(
        tmp_path / "ck", nn.Linear(2, 2), Cfg(), family="drive", data_manifest_sha256=digest
    )
    ck = load_checkpoint(path)
    assert ck.config == {"width": 64, "mults": [1, 2], "inner": {"a": 1.5}}
    assert ck.data_manifest_sha256 == digest
    with pytest.raises(CheckpointError, match=r"config\['bad'\] is a object"):
        save_checkpoint(tmp_path / "bad", nn.Linear(2, 2), {"bad": object()}, family="drive")


# -- errors ---------------------------------------------------------------------------------------


def _edit_config(path: Path, **changes) -> None:
    info = json.loads((path / CONFIG).read_text())
    info.update(changes)
    (path / CONFIG).write_text(json.dumps(info))


def _flip_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-3] ^= 0xFF
    file.write_bytes(bytes(data))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-100])


# name -> (how the checkpoint directory is damaged, what the error must say)
DAMAGES = {
    "missing-dir": (lambda p: p.rename(p.with_name("elsewhere")), ["ck does not exist", "save_checkpoint"]),
    "missing-model": (lambda p: (p / MODEL).unlink(), ["model.safetensors is missing", "earlier one"]),
    "missing-config": (
        lambda p: (p / CONFIG).unlink(),
        ["not a worldsim checkpoint", "config.json does not exist"],
    ),
    "foreign-json": (lambda p: (p / CONFIG).write_text('{"foo": 1}'), ["not a worldsim checkpoint config"]),
    "bad-json": (lambda p: (p / CONFIG).write_text('{"format": '), ["config.json is not valid JSON"]),
    "newer": (
        lambda p: _edit_config(p, format_version=99),
        [f"format_version 99, but this worldsim reads version {FORMAT_VERSION}", "upgrade worldsim"],
    ),
    "older": (lambda p: _edit_config(p, format_version=0), ["format_version 0", "re-train"]),
    "truncated": (
        lambda p: _truncate(p / MODEL),
        ["model.safetensors is truncated or altered", "bytes where config.json records"],
    ),
    "altered": (lambda p: _flip_byte(p / MODEL), ["model.safetensors is corrupt: sha256", "earlier one"]),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_load_errors_name_file_and_fix(trained, case):
    damage, expected = DAMAGES[case]
    path = trained[0]
    damage(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, family="balls")
    for text in expected:
        assert text in str(err.value)


def test_wrong_family_says_which(trained):
    with pytest.raises(CheckpointError, match=r"is for 'balls', asked for 'push'.*worldsim train scene=push"):
        load_checkpoint(trained[0], family="push")


def test_pickle_files_are_refused(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model.pt is a pickle \(torch.save\) file.*arbitrary code"):
        load_checkpoint(tmp_path / "model.pt")
    (tmp_path / "old.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(CheckpointError, match="is a pickle"):
        load_checkpoint(tmp_path / "old.pkl")
    with pytest.raises(CheckpointError, match=r"holds model.pt, which worldsim does not unpickle"):
        load_checkpoint(tmp_path)


def test_run_dir_given_instead_of_checkpoint(tmp_path):
    model = nn.Linear(2, 2)
    save_checkpoint(checkpoint_dir(tmp_path / "run", 5), model, {}, family="balls")
    with pytest.raises(CheckpointError, match=r"run directory: pass latest_checkpoint\(run_dir\)"):
        load_checkpoint(tmp_path / "run")


def test_train_state_errors(trained):
    path, model, *_ = trained
    with pytest.raises(CheckpointError, match="holds AdamW state, but the optimizer to restore is a SGD"):
        load_train_state(path, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match="does not fit this optimizer"):
        load_train_state(path, torch.optim.AdamW(list(model.parameters())[:2]))
    with pytest.raises(CheckpointError, match=r"no generator named 'other'.*\['data', 'noise'\]"):
        load_train_state(path, generators={"other": torch.Generator()})
    _flip_byte(path / TRAIN_STATE)
    with pytest.raises(CheckpointError, match="train_state.safetensors is corrupt"):
        load_train_state(path)


def test_load_into_wrong_architecture(trained):
    with pytest.raises(CheckpointError, match=r"(?s)do not fit this model.*Checkpoint.config"):
        load_checkpoint(trained[0]).load_into(nn.Linear(3, 3))


# -- nothing pickled ------------------------------------------------------------------------------


def test_nothing_is_pickled(trained, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint code must not pickle")

    for module, name in [(torch, "save"), (pickle, "dump"), (pickle, "dumps"), (pickle, "Pickler")]:
        monkeypatch.setattr(module, name, refuse)
    _, model, opt, sched, data, noise = trained
    path = save_checkpoint(
        tmp_path / "ck2", model, ARCH, family="balls", optimizer=opt, extra_state={"s": sched.state_dict()}
    )
    assert sorted(p.name for p in path.iterdir()) == sorted([CONFIG, MODEL, TRAIN_STATE, TRAIN_STATE_JSON])
    for file in path.iterdir():
        raw = file.read_bytes()
        assert not raw.startswith(b"PK\x03\x04"), file  # torch.save's zip container
        if file.suffix == ".json":
            assert raw.startswith(b"{")
            json.loads(raw)
        else:  # safetensors: u64 header length, JSON header, raw tensor bytes; nothing else
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8 : 8 + n])
            end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
            assert 8 + n + end == len(raw), file


# -- atomic writes ----------------------------------------------------------------------------------


def _save(run: Path, step: int, seed: int = 0) -> Path:
    model, opt, _ = make_run(seed)
    return save_checkpoint(checkpoint_dir(run, step), model, ARCH, family="balls", step=step, optimizer=opt)


def test_crash_mid_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _save(run, 1)
    real_write = ckpt_mod._write_file

    def write_half_then_die(path: Path, data: bytes) -> None:
        if path.name == MODEL:
            real_write(path, data[: len(data) // 2])
            raise OSError("No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ckpt_mod, "_write_file", write_half_then_die)
    with pytest.raises(OSError, match="No space"):
        _save(run, 2)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001"]  # no trace left
    assert latest_checkpoint(run) == checkpoint_dir(run, 1)
    assert load_checkpoint(latest_checkpoint(run)).step == 1


def test_crash_while_replacing_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = _save(tmp_path, 1, seed=0)
    before = (path / MODEL).read_bytes()
    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.os, "rename", lambda *a: (_ for _ in ()).throw(OSError("killed")))
        with pytest.raises(OSError, match="killed"):
            _save(tmp_path, 1, seed=5)
    assert (path / MODEL).read_bytes() == before
    verify_checkpoint(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    _save(tmp_path, 1, seed=5)  # a replace that succeeds does replace
    assert (path / MODEL).read_bytes() != before


def test_latest_skips_half_written_and_damaged(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2, 3):
        _save(run, step)
    root = run / "checkpoints"
    # What a kill -9 during a write leaves: a hidden temp dir with part of a checkpoint.
    leftover = root / ".step_000004.x1y2.tmp"
    leftover.mkdir()
    (leftover / MODEL).write_bytes(b"\x00" * 10)
    # A visible checkpoint damaged after the fact (disk error): skipped, with a warning.
    _flip_byte(checkpoint_dir(run, 3) / TRAIN_STATE)
    with pytest.warns(UserWarning, match="skipping checkpoint of step 3.*corrupt"):
        assert latest_checkpoint(run) == checkpoint_dir(run, 2)
    assert latest_checkpoint(tmp_path / "empty") is None
    with pytest.warns(UserWarning, match="is for 'balls', asked for 'push'"):
        assert latest_checkpoint(run, family="push") is None

    # A killed replace of step 5 (old moved aside, new not yet in) and a finished one of step 2.
    shutil.copytree(checkpoint_dir(run, 1), root / ".step_000005.ab_12.old")
    shutil.copytree(checkpoint_dir(run, 1), root / ".step_000002.cd_34.old")

    removed = prune_checkpoints(run, keep=2)
    assert sorted(p.name for p in removed) == [
        ".step_000002.cd_34.old",
        ".step_000004.x1y2.tmp",
        "step_000001",
    ]
    # 5 is put back; 5 and 2 are the two newest complete ones; damaged 3, newer than 2, is left to inspect
    assert sorted(p.name for p in root.iterdir()) == ["step_000002", "step_000003", "step_000005"]
    assert latest_checkpoint(run) == checkpoint_dir(run, 5)


def test_prune_keeps_newest_by_step_number(tmp_path):
    run = tmp_path / "run"
    for step in (5, 50, 500, 1_000_000):
        _save(run, step)
    prune_checkpoints(run, keep=2)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000500", "step_1000000"]
    assert latest_checkpoint(run) == checkpoint_dir(run, 1_000_000)
    with pytest.raises(ValueError, match="keep at least"):
        prune_checkpoints(run, keep=0)


# -- a real kill ------------------------------------------------------------------------------------

TRAINER = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from worldsim.train.checkpoint import (
        checkpoint_dir, latest_checkpoint, load_checkpoint, load_train_state, prune_checkpoints,
        save_checkpoint,
    )

    run = sys.argv[1]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))  # ~0.5M params, 6 MB/ckpt
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = 0
    last = latest_checkpoint(run)
    if last is not None:
        load_checkpoint(last, family="balls").load_into(model)
        step = load_train_state(last, opt).step
    print(f"resumed {step}", flush=True)
    while True:
        x = torch.randn(32, 256)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        save_checkpoint(checkpoint_dir(run, step), model, {}, family="balls", step=step, optimizer=opt)
        prune_checkpoints(run, keep=2)
        print(f"saved {step}", flush=True)
    """
)


def test_kill_minus_9_resumes_from_last_complete_checkpoint(tmp_path):
    """Kill a training process at random moments, three times; each restart resumes from the last
    complete checkpoint, and no visible checkpoint is ever half-written."""
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    expected_resume = 0
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
        )
        try:
            assert proc.stdout.readline().strip() == f"resumed {expected_resume}", attempt
            assert proc.stdout.readline().startswith("saved"), attempt
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.kill()  # SIGKILL: no handler, no cleanup runs
            proc.wait(timeout=10)
        step_dirs = sorted((run / "checkpoints").glob("step_*"))
        assert step_dirs
        for d in step_dirs:
            verify_checkpoint(d, family="balls")  # every visible checkpoint is whole
        last = latest_checkpoint(run)
        assert last == step_dirs[-1]
        ck = load_checkpoint(last, family="balls")
        assert ck.step > expected_resume
        expected_resume = ck.step
