"""How far a ratio of mean errors can be trusted, given the episodes it was measured on.

The report's headline figures are ratios of pooled means (the generator's centroid error over the
engine floor's, over 30 steps of 32 held-out episodes). A few episodes where a ball is lost or a
contact goes the other way move such a mean by tenths of a pixel, so two generators 0.1x apart may
differ by nothing but which episodes were drawn. A percentile bootstrap over episodes says how wide
that spread is: each resample draws the episodes again with replacement, keeping every episode's
steps, and its model and floor together (the two errors of one episode are paired).

A numpy bootstrap of a dozen lines, not ``scipy.stats.bootstrap``: the statistic is a ratio of
pooled sums, which a vectorised draw of episode indices computes directly, and nothing else here
needs scipy.
"""

from __future__ import annotations

import numpy as np


def _sums(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode sum and count of the defined (non-NaN) values of ``errors[E, T]``."""
    defined = ~np.isnan(errors)
    return np.where(defined, errors, 0.0).sum(1), defined.sum(1)


def ratio_interval(
    num: np.ndarray,
    den: np.ndarray,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """The ``level`` percentile-bootstrap interval, over episodes, of ``nanmean(num) / nanmean(den)``.

    ``num`` and ``den`` are ``[E, T]`` errors (NaN where undefined: an object not seen) of the same
    E episodes, e.g. the generator's and the engine floor's per-step centroid errors. The point
    estimate pools all steps as the report does (``nanmean`` over the stacked episodes), so every
    resample pools the same way; resamples whose floor has no defined value are dropped.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.ndim != 2 or num.shape[0] != den.shape[0] or den.ndim != 2:
        raise ValueError(
            f"num and den are [episodes, steps] of the same episodes, got {num.shape} and {den.shape}"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level is a probability in (0, 1), got {level}")
    if len(num) == 0:
        raise ValueError("no episodes to resample")
    (ns, nc), (ds, dc) = _sums(num), _sums(den)
    draw = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = (ns[draw].sum(1) / nc[draw].sum(1)) / (ds[draw].sum(1) / dc[draw].sum(1))
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios) == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(ratios, [tail, 100.0 - tail])
    return float(lo), float(hi)
