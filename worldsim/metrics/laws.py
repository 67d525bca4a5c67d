"""Physical laws checked on object trajectories in metres: gravity, restitution, penetration,
momentum in collisions, and object permanence.

Trajectories are objects' centres (``objects.lift_centroids``, or the simulator's truth) at the
control step, 0.1 s in our scenes. That is coarse: a ball dropped from 2 m falls 0.6 m in its last
step, and bounces happen between samples, where finite differences mix the speeds in and out. So the
fitters use the analytic shape of the motion: a parabola per free flight, contact times and speeds
solved from the parabolas. NaN means the object was not seen at that step; it ends a flight and
every figure skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONTACT_MARGIN_M = 0.05
"""A sample within this height of the contact height (floor + radius) counts as touching, not flying:
~1.5 px in the Balls view (1 px is ~3.5 cm, ``tests/test_metrics_objects.py``). Lower hops cannot
be told from rest, and a ball chattering on the floor hops faster than it is sampled, so its hops
alias into flat pseudo-flights. A 5-sample flight under real gravity rises 0.2 m: none is lost."""

BOUNCE_BAND_M = 0.5
"""A local minimum of height this close to the contact height is a bounce: at 0.1 s steps a ball
arriving at 6 m/s (a 2 m drop) is last seen up to 0.3 m above the contact. Higher minima are left
inside a flight, so noise on a hovering object does not cut it into pieces."""

PENETRATION_TOLERANCE_M = 0.01
"""Overlap ignored by ``penetration``: above the 8 mm worst error of lifted ball centroids."""

COLLISION_MARGIN_M = 0.05
"""Gap under which ``collision_steps`` calls two objects in contact: balls closing at a few m/s are
rarely sampled exactly touching."""


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-D boolean array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


@dataclass(frozen=True)
class _Parabola:
    """``z(t) = c[0] + c[1] (t - t0) + c[2] (t - t0)^2``, least squares on ``n`` samples."""

    t0: float
    c: np.ndarray
    rss: float
    n: int

    @staticmethod
    def fit(t: np.ndarray, z: np.ndarray) -> _Parabola:
        t0 = float(t.mean())  # centred time keeps the fit well conditioned late in a long video
        a = np.vander(t - t0, 3, increasing=True)
        c = np.linalg.lstsq(a, z, rcond=None)[0]
        r = z - a @ c
        return _Parabola(t0, c, float(r @ r), len(t))

    def __call__(self, t: float) -> float:
        s = t - self.t0
        return float(self.c[0] + self.c[1] * s + self.c[2] * s * s)

    def velocity(self, t: float) -> float:
        return float(self.c[1] + 2 * self.c[2] * (t - self.t0))

    def crossing(self, z: float, near: float) -> float:
        """The time nearest ``near`` at which the parabola is at height ``z``; NaN if never."""
        roots = np.roots([self.c[2], self.c[1], self.c[0] - z])
        roots = roots[np.isreal(roots)].real + self.t0
        return float(roots[np.abs(roots - near).argmin()]) if roots.size else float("nan")


def _flights(
    z: np.ndarray, dt_s: float, contact_m: float, margin_m: float, band_m: float, cut_steps: Sequence[int]
) -> list[tuple[int, int]]:
    """Free flights of one object, ``[start, stop)`` in time order: runs of seen samples above the
    contact band, cut at ``cut_steps`` and at bounces. A free flight under downward gravity has no
    interior minimum, so a minimum near the floor is a bounce; under flipped gravity, cutting at a
    minimum leaves two arcs of one parabola, which costs samples but not accuracy."""
    free = np.isfinite(z) & (z > contact_m + margin_m)
    free[np.asarray(cut_steps, dtype=int)] = False
    t = np.arange(len(z)) * dt_s
    out = []
    for a, b in _runs(free):
        i = np.arange(a + 1, b - 1)
        minima = i[(z[i] < z[i - 1]) & (z[i] <= z[i + 1]) & (z[i] < contact_m + band_m)].tolist()
        start = a
        for k, low in enumerate(minima):
            stop = minima[k + 1] if k + 1 < len(minima) else b
            cut = low + 1 if _before_contact(t, z, start, low, stop, contact_m) else low
            out.append((start, cut))
            start = cut
        out.append((start, b))
    return out


def _before_contact(t: np.ndarray, z: np.ndarray, start: int, low: int, stop: int, contact_m: float) -> bool:
    """Whether the lowest sample of a bounce was taken before the contact (on ``[start, low)``) or after
    it (on ``(low, stop)``). Either flight's parabola, run past the contact, dips below the contact
    height, so the sample sits on the side whose extrapolation it matches; a side too short to fit is
    credited with the least the other could miss by were the sample not its own (its clearance)."""

    def miss(lo: int, hi: int) -> float:
        if hi - lo < 3:
            return float(z[low] - contact_m)
        return abs(z[low] - _Parabola.fit(t[lo:hi], z[lo:hi])(t[low]))

    return miss(start, low) <= miss(low + 1, stop)


# ---------------------------------------------------------------------------------------------
# gravity and restitution


@dataclass(frozen=True)
class GravityFit:
    """Downward acceleration ``g_mps2`` (9.81 on Earth, negative when things fall up, ~0 when they
    float): the flights' values weighted by their samples, NaN without a flight. ``rms_residual_m``
    says how parabolic the flights are; ``segment_g_mps2`` and ``segment_samples`` give each one."""

    g_mps2: float
    segments: int
    samples: int
    rms_residual_m: float
    segment_g_mps2: np.ndarray
    segment_samples: np.ndarray


def _pool(fits: list[_Parabola]) -> GravityFit:
    n = np.array([f.n for f in fits], dtype=int)
    g = np.array([-2.0 * f.c[2] for f in fits], dtype=float)
    if not fits:
        return GravityFit(float("nan"), 0, 0, float("nan"), g, n)
    rms = float(np.sqrt(sum(f.rss for f in fits) / n.sum()))
    return GravityFit(float(n @ g / n.sum()), len(fits), int(n.sum()), rms, g, n)


def fit_gravity(
    z_m: np.ndarray,
    dt_s: float,
    floor_z_m: float,
    radius_m: float | Sequence[float],
    *,
    margin_m: float = CONTACT_MARGIN_M,
    bounce_band_m: float = BOUNCE_BAND_M,
    min_samples: int = 5,
    cut_steps: Sequence[int] = (),
    max_rms_m: float = np.inf,
) -> GravityFit:
    """Gravity from centre heights ``z_m[T]`` of one object, or ``z_m[T, N]`` of N objects with one
    radius or ``N`` (their flights pooled: one value per video), sampled every ``dt_s``: a least-squares
    parabola ``c0 + c1 t + c2 t^2`` on each free flight of at least ``min_samples`` samples, g = -2 c2.

    Five samples leave two degrees of freedom over three coefficients, so a bad sample shows in the
    residual. Bounces off the floor are found; other impacts (another ball, the ceiling) are not:
    pass their steps as ``cut_steps`` (e.g. from ``collision_steps``), or drop flights that are not
    parabolas: ``max_rms_m`` rejects a flight whose fit leaves a larger rms residual (an impact
    between two samples bends it).
    """
    z = np.asarray(z_m, dtype=float)
    if z.ndim not in (1, 2):
        raise ValueError(f"heights must be z_m[T] or z_m[T, N], got shape {z.shape}")
    z = z[:, None] if z.ndim == 1 else z
    radii = np.broadcast_to(np.asarray(radius_m, dtype=float), z.shape[1:])
    t = np.arange(len(z)) * dt_s
    fits = []
    for zk, rk in zip(z.T, radii, strict=True):
        flights = _flights(zk, dt_s, floor_z_m + rk, margin_m, bounce_band_m, cut_steps)
        fits += [_Parabola.fit(t[a:b], zk[a:b]) for a, b in flights if b - a >= min_samples]
    fits = [f for f in fits if np.sqrt(f.rss / f.n) <= max_rms_m]
    return _pool(fits)


@dataclass(frozen=True)
class RestitutionFit:
    """Restitution ``e = |v_out| / |v_in|`` of each floor bounce in time order, and its contact time
    (s, midway between the two flights' own crossings of the contact height)."""

    e: np.ndarray
    contact_time_s: np.ndarray

    @property
    def bounces(self) -> int:
        return int(self.e.size)

    @property
    def mean(self) -> float:
        return float(self.e.mean()) if self.e.size else float("nan")


def restitution(
    z_m: np.ndarray,
    dt_s: float,
    floor_z_m: float,
    radius_m: float,
    *,
    margin_m: float = CONTACT_MARGIN_M,
    bounce_band_m: float = BOUNCE_BAND_M,
    min_samples: int = 3,
    max_gap_steps: int = 2,
    same_g_tolerance: float = 0.3,
) -> RestitutionFit:
    """Restitution of each floor bounce of an object's centre height ``z_m[T]``.

    A bounce is a falling flight then, after at most ``max_gap_steps`` seen samples in contact, a
    rising one, each of ``min_samples`` or more (three fix a parabola). Each flight's parabola gives
    its own contact time and speed there, as the contact lies between samples. Both flights must
    bend alike (g within ``same_g_tolerance`` of the larger): at the end of a bouncing spell a short
    flight can hide another bounce between its samples and then bends far less than gravity. 30 % is
    ~8 sigma of the difference of two 3-sample fits at 1 mm noise (2.5 at 3.5 mm).
    """
    z = np.asarray(z_m, dtype=float)
    if z.ndim != 1:
        raise ValueError(f"heights must be z_m[T], got shape {z.shape}; take objects one by one")
    contact = floor_z_m + radius_m
    t = np.arange(len(z)) * dt_s
    flights = _flights(z, dt_s, contact, margin_m, bounce_band_m, ())
    e, tc = [], []
    for (a0, a1), (b0, b1) in zip(flights, flights[1:], strict=False):
        if b0 - a1 > max_gap_steps or not np.isfinite(z[a1:b0]).all() or min(a1 - a0, b1 - b0) < min_samples:
            continue
        fall, rise = _Parabola.fit(t[a0:a1], z[a0:a1]), _Parabola.fit(t[b0:b1], z[b0:b1])
        g_fall, g_rise = -2.0 * fall.c[2], -2.0 * rise.c[2]
        if abs(g_fall - g_rise) > same_g_tolerance * max(abs(g_fall), abs(g_rise)):
            continue
        near = (t[a1 - 1] + t[b0]) / 2
        t_in, t_out = fall.crossing(contact, near), rise.crossing(contact, near)
        v_in, v_out = fall.velocity(t_in), rise.velocity(t_out)
        if v_in < 0 < v_out:  # False for NaN: a flight that never reaches the floor is no bounce
            e.append(-v_out / v_in)
            tc.append((t_in + t_out) / 2)
    return RestitutionFit(np.array(e, dtype=float), np.array(tc, dtype=float))


# ---------------------------------------------------------------------------------------------
# contacts between objects


def _pairs(points_m: np.ndarray, radii_m: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points ``[T, N, D]``, radii ``[N]``, centre distances ``[T, P]`` of the pairs i < j, their ``r_i + r_j``."""
    p, r = np.asarray(points_m, dtype=float), np.asarray(radii_m, dtype=float)
    if p.ndim != 3 or p.shape[-1] not in (2, 3) or r.shape != p.shape[1:2]:
        raise ValueError(f"need points_m[T, N, 2 or 3] and radii_m[N], got {p.shape} and {r.shape}")
    i, j = np.triu_indices(len(r), 1)
    return p, r, np.linalg.norm(p[:, i] - p[:, j], axis=-1), r[i] + r[j]


@dataclass(frozen=True)
class PenetrationEvents:
    """Steps ``[T]`` where two objects (``pair_steps``) or an object and the floor (``floor_steps``)
    overlap by more than the tolerance; how many (step, pair) and (step, object) overlaps there are;
    and the deepest of them (m, 0 if none)."""

    pair_steps: np.ndarray
    floor_steps: np.ndarray
    pair_events: int
    floor_events: int
    max_depth_m: float


def penetration(
    points_m: np.ndarray,
    radii_m: Sequence[float] | np.ndarray,
    floor_z_m: float | None = None,
    tolerance_m: float = PENETRATION_TOLERANCE_M,
) -> PenetrationEvents:
    """Spheres of ``radii_m[N]`` centred at ``points_m[T, N, D]`` (height last, D = 2 or 3) passing
    into each other (centres closer than ``r_i + r_j - tolerance_m``) or into the floor (centre below
    ``floor_z_m + r - tolerance_m``; not checked if ``floor_z_m`` is None). Unseen objects are skipped."""
    p, r, dist, reach = _pairs(points_m, radii_m)
    pair_depth = reach - dist
    floor_depth = np.full(p.shape[:2], np.nan) if floor_z_m is None else floor_z_m + r - p[..., -1]
    pair_hit, floor_hit = pair_depth > tolerance_m, floor_depth > tolerance_m  # False where NaN
    depth = np.concatenate([pair_depth[pair_hit], floor_depth[floor_hit], [0.0]]).max()
    return PenetrationEvents(
        pair_hit.any(1), floor_hit.any(1), int(pair_hit.sum()), int(floor_hit.sum()), depth
    )


def collision_steps(
    points_m: np.ndarray, radii_m: Sequence[float] | np.ndarray, margin_m: float = COLLISION_MARGIN_M
) -> np.ndarray:
    """First step of each spell in which some pair of objects is within ``r_i + r_j + margin_m``
    (``int[K]``): one step per collision, where a spell of contact lasts several steps."""
    _, _, dist, reach = _pairs(points_m, radii_m)
    close = (dist <= reach + margin_m).any(1)
    return np.flatnonzero(close & ~np.concatenate([[False], close[:-1]]))


@dataclass(frozen=True)
class MomentumChange:
    """Total momentum (kg m/s) before and after each collision step, ``[K, D]``, and the relative
    change ``|p_after - p_before - expected| / |p_before|`` ``[K]``: NaN where an object is not seen,
    the steps leave the video, or nothing moved before; ``mean`` skips those."""

    steps: np.ndarray
    p_before: np.ndarray
    p_after: np.ndarray
    relative_change: np.ndarray

    @property
    def mean(self) -> float:
        ok = np.isfinite(self.relative_change)
        return float(self.relative_change[ok].mean()) if ok.any() else float("nan")


def momentum_change(
    velocities_mps: np.ndarray,
    masses_kg: Sequence[float] | np.ndarray,
    collision_steps: Sequence[int] | np.ndarray,
    *,
    offset_steps: int = 1,
    accel_mps2: Sequence[float] | None = None,
    dt_s: float | None = None,
) -> MomentumChange:
    """How much the total momentum of objects with ``velocities_mps[T, N, D]`` and ``masses_kg[N]``
    changes from ``offset_steps`` before each collision step to as many after (which keeps velocities
    differenced from positions clear of the contact). Momentum is conserved only without outside
    forces: pass a uniform field ``accel_mps2[D]`` (gravity) and ``dt_s`` to expect its impulse, or
    horizontal components only. Walls and the floor touched in those steps are not accounted for."""
    v, m = np.asarray(velocities_mps, dtype=float), np.asarray(masses_kg, dtype=float)
    if v.ndim != 3 or m.shape != v.shape[1:2]:
        raise ValueError(f"need velocities_mps[T, N, D] and masses_kg[N], got {v.shape} and {m.shape}")
    if accel_mps2 is not None and dt_s is None:
        raise ValueError("accel_mps2 needs dt_s, the time step, to give the impulse it adds")
    steps = np.asarray(collision_steps, dtype=int).reshape(-1)
    inside = (steps - offset_steps >= 0) & (steps + offset_steps < v.shape[0])
    p_before, p_after = np.full((2, len(steps), v.shape[-1]), np.nan)
    p_before[inside] = np.einsum("n,knd->kd", m, v[steps[inside] - offset_steps])
    p_after[inside] = np.einsum("n,knd->kd", m, v[steps[inside] + offset_steps])
    expected = 0.0 if accel_mps2 is None else m.sum() * np.asarray(accel_mps2) * 2 * offset_steps * dt_s
    size = np.linalg.norm(p_before, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.linalg.norm(p_after - p_before - expected, axis=-1) / np.where(size > 0, size, np.nan)
    return MomentumChange(steps, p_before, p_after, rel)


# ---------------------------------------------------------------------------------------------
# object permanence


@dataclass(frozen=True)
class Permanence:
    """Object permanence against the truth video, masks ``bool[T, N]``: ``vanished`` (truth shows the
    object, the other video does not), ``appeared`` (the reverse), ``size_changed`` (both show it,
    pixel counts off by a ratio outside the band), ``kept`` (shown and in size where truth shows it).
    Objects are found by colour, so a colour change is a vanish plus an appearance."""

    vanished: np.ndarray
    appeared: np.ndarray
    size_changed: np.ndarray
    kept: np.ndarray
    truth_visible: np.ndarray

    @property
    def kept_fraction(self) -> float:
        """Kept share of the (step, object) cells truth shows; NaN if it shows none."""
        n = int(self.truth_visible.sum())
        return float(self.kept.sum() / n) if n else float("nan")

    def summary(self) -> dict[str, Any]:
        """Totals and per-object counts (``by_object``), JSON-ready."""
        n = self.truth_visible.sum(0)
        kept = [float(k / c) if c else None for k, c in zip(self.kept.sum(0), n, strict=True)]
        masks = {"vanished": self.vanished, "appeared": self.appeared, "size_changed": self.size_changed}
        out: dict[str, Any] = {k: int(v.sum()) for k, v in masks.items()}
        out["kept_fraction"] = None if np.isnan(self.kept_fraction) else self.kept_fraction
        out["by_object"] = {k: v.sum(0).tolist() for k, v in masks.items()} | {"kept_fraction": kept}
        return out


def permanence(
    visible: np.ndarray,
    count_px: np.ndarray,
    truth_visible: np.ndarray,
    truth_count_px: np.ndarray,
    size_band: tuple[float, float] = (0.5, 2.0),
) -> Permanence:
    """Compare what a video shows of each object, ``visible`` and ``count_px`` ``[T, N]`` (as in
    ``ObjectTracks``), with the truth video's. The band (half to double the pixels, 1.4x across) is
    loose on purpose: a generated object's edge pixels come and go with blur, and only a change a
    viewer would notice should count."""
    vis, tvis = np.asarray(visible, dtype=bool), np.asarray(truth_visible, dtype=bool)
    cnt, tcnt = np.asarray(count_px, dtype=float), np.asarray(truth_count_px, dtype=float)
    if not vis.shape == tvis.shape == cnt.shape == tcnt.shape or vis.ndim != 2:
        raise ValueError(
            f"need four [T, N] arrays, got {vis.shape}, {cnt.shape}, {tvis.shape}, {tcnt.shape}; "
            "extract both videos with the same palette"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = cnt / tcnt
    both = vis & tvis
    changed = both & ~((ratio >= size_band[0]) & (ratio <= size_band[1]))
    return Permanence(tvis & ~vis, vis & ~tvis, changed, both & ~changed, tvis)
