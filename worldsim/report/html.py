"""The evaluation report: one self-contained directory a browser opens.

``write_report`` writes, next to ``metrics.json``: ``side_by_side.mp4`` (rows: episodes; columns:
MuJoCo | generated | PyBullet twin | difference), one PNG plot per metric against the step, and
``report.html`` with the scores, the summary tables, the laws, the plots and the video. Plain HTML
with relative links: no server, no scripts, nothing fetched.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.durable import write_text_atomic
from worldsim.report.video import grid, side_by_side, upscale, write_mp4

COLUMNS = ("truth", "model", "twin", "difference")
SOURCE_STYLE = {"model": "#d62728", "frozen": "#7f7f7f", "twin": "#1f77b4", "chaos": "#2ca02c"}
METRIC_LABELS = {
    "centroid_error_px": "centroid error (px; a vanished object counts half the diagonal)",
    "position_error_m": "position error (m)",
    "velocity_error_mps": "velocity error (m/s)",
    "psnr_db": "PSNR (dB)",
    "ssim": "SSIM",
    "mse": "MSE (frames in [0, 1])",
    "iou": "mask IoU per step",
    "vanished": "objects vanished (per episode)",
    "ghost": "objects appearing (per episode)",
}


def difference(a: np.ndarray, b: np.ndarray, gain: int = 3) -> np.ndarray:
    """Absolute difference of two frames, amplified and made grey: black where they agree."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) * gain
    return np.repeat(np.clip(d, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def side_by_side_video(episodes: Sequence[Any], context: int, path: Path, scale: int = 3) -> Path:
    """Rows of episodes, columns MuJoCo | generated | twin | difference(MuJoCo, generated)."""
    frames = []
    horizon = len(episodes[0].other["model"])
    for t in range(horizon):
        rows = []
        for e in episodes:
            truth, model = e.frames[context + t], e.other["model"][t]
            twin = e.other["twin"][t] if "twin" in e.other else np.full_like(truth, 255)
            rows.append(
                side_by_side([upscale(x, scale) for x in (truth, model, twin, difference(truth, model))])
            )
        frames.append(grid(rows, columns=1))
    return write_mp4(frames, path, fps=10)


def plot_curves(metrics: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per metric: each source's mean curve against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curves = metrics["curves"]
    names = list(next(iter(curves.values())))
    out.mkdir(parents=True, exist_ok=True)
    for m in names:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for source, c in curves.items():
            y = np.array([np.nan if v is None else v for v in c[m]], float)
            ax.plot(np.arange(1, len(y) + 1), y, label=source, color=SOURCE_STYLE.get(source), lw=1.5)
        if m == "position_error_m" and metrics.get("curves_parsing_position_m"):
            y = np.array([np.nan if v is None else v for v in metrics["curves_parsing_position_m"]], float)
            ax.plot(np.arange(1, len(y) + 1), y, label="parsing floor", color="k", ls=":", lw=1)
        ax.set_xlabel("step (0.1 s)")
        ax.set_title(METRIC_LABELS.get(m, m), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{m}.png"
        tmp = out / f".{m}.tmp{os.getpid()}.png"
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)
    for stale in set(out.glob("*.png")) - set(paths):  # metrics of an earlier run's family
        stale.unlink()
    return paths


def _fmt(x: Any) -> str:
    if x is None:
        return "&ndash;"
    if isinstance(x, float):
        return f"{x:.3g}"
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(metrics: dict[str, Any], plots: Sequence[Path], video: str | None) -> str:
    """The report page (plots and video by relative path)."""
    summary = metrics["summary"]
    sources = list(summary)
    top = [
        ("scene", metrics["scene"]),
        ("split", metrics["split"]),
        ("episodes", metrics["episodes"]),
        ("horizon (steps)", metrics["horizon"]),
        ("generator", metrics.get("generator")),
        (
            "engine_ratio (model / twin centroid error; 1 = as close as another engine)",
            metrics["engine_ratio"],
        ),
        (
            "frozen_ratio (model / repeating the last frame; < 1 = motion better than standing still)",
            metrics["frozen_ratio"],
        ),
        ("physics_iq (0-100; the twin is 100)", (metrics["physics_iq"] or {}).get("model")),
        ("valid horizon (steps)", metrics["valid_horizon_steps"]),
    ]
    metric_rows = [
        [m, *[summary[s].get(m) for s in sources], metrics["engine_ratio_by_metric"].get(m)]
        for m in summary[sources[0]]
    ]
    laws = metrics.get("laws", {})
    law_names = sorted({k for v in laws.values() for k in v})
    law_rows = [[n, *[laws[s].get(n) for s in laws]] for n in law_names]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>worldsim evaluation: {html.escape(metrics['scene'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{margin:4px}</style></head><body>",
        f"<h1>worldsim evaluation: {html.escape(metrics['scene'])} ({html.escape(metrics['split'])})</h1>",
        _table(["", "value"], top),
    ]
    if video:
        parts += [
            "<h2>Side by side</h2><p>Columns: MuJoCo | generated | PyBullet twin | difference "
            "(MuJoCo vs generated). Rows: episodes.</p>",
            f"<video src='{html.escape(video)}' controls loop autoplay muted></video>",
        ]
    parts += [
        "<h2>Summary (mean over episodes and steps)</h2>",
        "<p>engine ratio: the model's error over the twin's, similarities (SSIM, IoUs, kept fraction, "
        "agreements) taken as 1 - value.</p>",
        _table(["metric", *sources, "engine ratio"], metric_rows),
        "<h2>Floors</h2>",
        _table(
            ["floor", "centroid error (px)", "position error (m)"],
            [
                [
                    "engine (twin)",
                    *(metrics["floors"]["engine"].get(k) for k in ("centroid_error_px", "position_error_m")),
                ],
                [
                    "chaos",
                    *(metrics["floors"]["chaos"].get(k) for k in ("centroid_error_px", "position_error_m")),
                ],
                ["parsing", None, metrics["floors"]["parsing_position_m"]],
            ],
        ),
        f"<p>Parsing floor of the masks: IoU {_fmt(metrics['floors'].get('parsing_mask_iou'))} between the "
        "objects the colour extractor finds in MuJoCo's frames and MuJoCo's own segmentation.</p>",
    ]
    by_object = metrics.get("by_object", {})
    if "model" in by_object:
        ref = by_object.get("twin", {})
        rows = [
            [
                n,
                v["position_error_m"],
                ref.get(n, {}).get("position_error_m"),
                v["velocity_error_mps"],
                ref.get(n, {}).get("velocity_error_mps"),
            ]
            for n, v in by_object["model"].items()
        ]
        parts += [
            "<h2>By object</h2>",
            _table(
                ["object", "position error (m), model", "twin", "velocity error (m/s), model", "twin"], rows
            ),
        ]
    if law_rows:
        parts += ["<h2>Laws read off each video</h2>", _table(["law", *laws], law_rows)]
    parts.append("<h2>Against the step</h2>")
    parts += [f"<img src='plots/{html.escape(p.name)}' alt='{html.escape(p.stem)}'>" for p in plots]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(metrics: dict[str, Any], episodes: Sequence[Any], context: int, out: Path) -> Path:
    """``side_by_side.mp4``, ``plots/*.png`` and ``report.html`` in ``out``; returns the page."""
    video = side_by_side_video(episodes, context, out / "side_by_side.mp4") if episodes else None
    plots = plot_curves(metrics, out / "plots")
    page = out / "report.html"
    write_text_atomic(page, render_html(metrics, plots, video.name if video else None))
    return page
