"""The ``worldsim`` command: ``worldsim <verb> [key=value ...]``.

Each verb reads ``configs/<verb>.yaml`` and applies hydra-style overrides given after the verb
(``worldsim collect scene=drive episodes=20 out=data/drive``). ``worldsim <verb> --help`` shows the
verb's purpose and its settings. This is the one module that wires the parts together.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_config(verb: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<verb>.yaml`` with ``key=value`` overrides through hydra's compose API."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=verb):
        return compose(config_name=verb, overrides=overrides)


def _collect(cfg: DictConfig) -> None:
    from worldsim.data.collect import collect_from_config

    path = collect_from_config(cfg)
    print(f"dataset written to {path}")


def _demo(cfg: DictConfig) -> None:
    """Each truth world under its scripted controller: MuJoCo (left) beside the PyBullet twin (right)."""
    import numpy as np

    from policies import make_policy
    from worldsim.physics import make_simulator
    from worldsim.report.video import side_by_side, upscale, write_mp4
    from worldsim.scenes import caption, sample

    out = Path(cfg.out)
    for scene in cfg.scenes:
        spec = sample(scene, np.random.default_rng(cfg.seed), "id")
        sims = [make_simulator(scene, "mujoco", cfg.width, cfg.height)]
        if cfg.twin:
            sims.append(make_simulator(scene, "pybullet", cfg.width, cfg.height))
        for sim in sims:
            sim.reset(spec)
        policy = make_policy(scene, "scripted", np.random.default_rng(cfg.seed))
        policy.reset(sims[0].state())
        frames = []
        for _ in range(cfg.steps):
            frames.append(side_by_side([upscale(sim.render(), cfg.upscale) for sim in sims]))
            action = policy.act(sims[0].state())
            for sim in sims:
                sim.step(action)
        path = write_mp4(frames, out / f"{scene}.mp4", fps=10)
        engines = " | ".join(type(s).__name__ for s in sims)
        print(f"{caption(spec)}\n  wrote {path} ({len(frames)} frames, {engines})")
        for sim in sims:
            sim.close()


def _train(cfg: DictConfig) -> None:
    import json

    from worldsim.train.loop import RunConfig, TrainConfig, train

    model_cfg = _model_config(cfg.model)
    final = train(
        RunConfig(train=TrainConfig(**OmegaConf.to_container(cfg.train, resolve=True)), model=model_cfg)
    )
    print(f"final checkpoint: {final}")
    if cfg.get("report") and int(os.environ.get("RANK", "0")) == 0:
        report = _fidelity(final, cfg.report)
        path = final.parent / "fidelity.json"
        path.write_text(json.dumps(report, indent=2))
        print(f"fidelity report: {path}")


def _model_config(model: DictConfig):
    from worldsim.model.world_model import WorldModelConfig

    base = WorldModelConfig().to_dict()
    merged = OmegaConf.merge(OmegaConf.create(base), model)
    return WorldModelConfig.from_dict(OmegaConf.to_container(merged, resolve=True))


def _fidelity(checkpoint: Path, rcfg: DictConfig) -> dict:
    from worldsim.data.loader import load_dataset
    from worldsim.model.world_model import WorldModel, WorldModelConfig
    from worldsim.train.checkpoint import load_checkpoint
    from worldsim.train.fidelity import fidelity_report

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.load_into(WorldModel(WorldModelConfig.from_dict(ckpt.config))).eval()
    report = {"checkpoint": str(checkpoint), "step": ckpt.step}
    for split in ("val_data", "ood_data"):
        if rcfg.get(split):
            data = load_dataset(rcfg[split])
            report[split.removesuffix("_data")] = fidelity_report(
                model, data, episodes=rcfg.episodes, horizons=tuple(rcfg.horizons), twin=rcfg.twin
            )
    return report


def _dream(cfg: DictConfig) -> None:
    """A generated video of a prompt, beside MuJoCo's, with its fidelity figures."""
    import json
    import time

    import numpy as np

    from policies import make_policy
    from worldsim.checkpoints import load_world_model
    from worldsim.dream import dream, dream_report
    from worldsim.report.video import side_by_side, upscale, write_mp4
    from worldsim.scenes import caption, parse_prompt, sample

    spec = (
        parse_prompt(cfg.prompt, cfg.scene)
        if cfg.prompt
        else sample(cfg.scene, np.random.default_rng(cfg.seed), cfg.split)
    )
    model = load_world_model(cfg.checkpoint, cfg.scene, cfg.device)
    policy, actions = None, None
    if cfg.policy == "file":
        if not cfg.actions:
            raise SystemExit("policy=file needs actions=<path to a .npy of float32[steps, 2]>")
        actions = np.load(cfg.actions, allow_pickle=False)
    else:
        policy = make_policy(cfg.scene, cfg.policy, np.random.default_rng(cfg.seed))
    start = time.perf_counter()
    d = dream(
        model, spec, caption(spec), cfg.steps, policy, actions, cfg.context, cfg.sampling_steps, cfg.seed
    )
    seconds = time.perf_counter() - start
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "frames.npz", generated=d.generated, truth=d.truth, actions=d.actions)
    frames = [
        side_by_side([upscale(g, cfg.upscale), upscale(t, cfg.upscale)])
        for g, t in zip(d.generated, d.truth, strict=True)
    ]
    write_mp4(frames, out / "dream.mp4", fps=10)
    report = {
        **dream_report(d, spec),
        "seconds": seconds,
        "context": cfg.context,
        "checkpoint": str(cfg.checkpoint),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    h30 = report["centroid_error"]["h30"]["error_px"]
    print(
        f"{caption(spec)}\n{cfg.steps} frames in {seconds:.1f} s; wrote {out / 'dream.mp4'} (generated | MuJoCo), "
        f"frames.npz, report.json\ncentroid error vs MuJoCo over the first 30 steps: {h30} px; "
        f"objects persist over the whole video: {report['collapse']['all_persist']}"
    )


def _probe(cfg: DictConfig) -> None:
    """Train a state probe on truth frames and store it beside the generator checkpoint."""
    import numpy as np

    from worldsim.data.loader import load_dataset
    from worldsim.physics.state import state_layout
    from worldsim.train.probe import save_probe, train_probe

    train, val = load_dataset(cfg.data), load_dataset(cfg.val_data)
    probe = train_probe(
        train, val, cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, cfg.device, channels=cfg.channels
    )
    path = save_probe(probe, cfg.checkpoint)
    errors = np.asarray(probe.cfg.floor["val_mean_abs_error"])
    names = state_layout(train.family)
    print(
        f"state probe: {path}\nmean absolute error on {probe.cfg.floor['val_frames']} held-out truth frames:"
    )
    for name, e in zip(names, errors, strict=True):
        print(f"  {name:<16} {e:.4f}")


def _ship(cfg: DictConfig) -> None:
    """Copy a trained generator (and its probe) into the package as the shipped default."""
    from worldsim.checkpoints import ship

    dest = ship(cfg.checkpoint, cfg.scene, cfg.get("dest"))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"shipped {cfg.checkpoint} as {dest} ({size / 1e6:.1f} MB)")


def _report(cfg: DictConfig) -> None:
    """The fidelity report of a checkpoint (default: the shipped one) on held-out datasets."""
    import json

    from worldsim.checkpoints import shipped

    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else shipped(cfg.scene)
    report = _fidelity(checkpoint, cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for split in ("val", "ood"):
        for h in cfg.horizons:
            s = report.get(split, {}).get(f"h{h}", {}).get("summary")
            if s:
                print(
                    f"{split} h{h}: model {s['model']:.2f} px, frozen {s['frozen']:.2f}, engine "
                    f"{s.get('engine', float('nan')):.2f}, parsing {s['parsing']:.2f}; frozen ratio "
                    f"{s['frozen_ratio']:.2f}, engine ratio {s.get('engine_ratio', float('nan')):.2f}"
                )
    print(f"fidelity report: {out}")


def _bench(cfg: DictConfig) -> None:
    import runpy

    sys.argv = ["benchmarks/run.py", *[f"{k}={v}" for k, v in cfg.items()]]
    runpy.run_path(str(CONFIG_DIR.parent / "benchmarks" / "run.py"), run_name="__main__")


VERBS: dict[str, tuple[Callable[[DictConfig], None], str]] = {
    "collect": (_collect, "run truth envs in parallel with a policy mixture and write a dataset"),
    "train": (_train, "train a generator on a dataset; write checkpoints and a fidelity report"),
    "dream": (_dream, "generate a video from a prompt under a policy's actions, beside MuJoCo's"),
    "demo": (_demo, "run every truth world (MuJoCo and its PyBullet twin) and write videos"),
    "probe": (_probe, "train the state probe of a generator (frames -> state) on truth frames"),
    "ship": (_ship, "copy a trained generator into the package as the shipped checkpoint (float16)"),
    "report": (_report, "the fidelity report of a checkpoint (default: the shipped one)"),
    "bench": (_bench, "measure env and collection throughput; write benchmarks/results/*.json"),
}


def usage() -> str:
    lines = ["usage: worldsim <verb> [key=value ...]   (worldsim <verb> --help for its settings)", "verbs:"]
    lines += [f"  {name:<9} {doc}" for name, (_, doc) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"unknown verb {verb!r}\n{usage()}", file=sys.stderr)
        return 2
    fn, doc = VERBS[verb]
    if any(a in ("-h", "--help") for a in rest):
        cfg = load_config(verb, [])
        print(f"worldsim {verb}: {doc}\nsettings (override with key=value):\n{OmegaConf.to_yaml(cfg)}")
        return 0
    cfg = load_config(verb, rest)
    fn(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
