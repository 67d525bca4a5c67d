"""Physical-law fitters on analytic trajectories sampled at the scenes' 0.1 s step, where each test
knows the exact answer."""

import numpy as np
import pytest

from worldsim.metrics.laws import (
    collision_steps,
    fit_gravity,
    momentum_change,
    penetration,
    permanence,
    restitution,
)

DT = 0.1
G = 9.81
FLOOR, R = 0.0, 0.1
CONTACT = FLOOR + R


def drop(z0: float, v0: float, steps: int, g: float = G) -> np.ndarray:
    t = np.arange(steps) * DT
    return z0 + v0 * t - 0.5 * g * t**2


def bouncing(z0: float, e: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Heights of a ball dropped from rest at ``z0`` and its contact times: exact free flight, each
    contact reflecting the velocity times ``e``, at rest once it leaves the floor slower than 0.5 m/s."""
    starts, heights, speeds = [0.0], [z0], [0.0]
    while True:
        z, v = heights[-1], speeds[-1]
        tau = (v + np.sqrt(v * v + 2 * G * (z - CONTACT))) / G
        v_out = -e * (v - G * tau)
        starts.append(starts[-1] + tau)
        heights.append(CONTACT)
        speeds.append(v_out if v_out >= 0.5 else 0.0)
        if v_out < 0.5:
            break
    t = np.arange(steps) * DT
    k = np.searchsorted(starts, t, side="right") - 1
    s = t - np.asarray(starts)[k]
    z = np.asarray(heights)[k] + np.asarray(speeds)[k] * s - 0.5 * G * s**2
    z[k == len(starts) - 1] = CONTACT  # at rest on the floor
    return z, np.asarray(starts[1:])


# ---------------------------------------------------------------------------------------------
# gravity


def test_gravity_of_a_drop_is_exact_and_robust_to_millimetre_noise():
    z = drop(2.0, 0.0, 7)  # 0.6 s, still 0.13 m above the floor contact
    assert z[-1] > CONTACT + 0.1
    fit = fit_gravity(z, DT, FLOOR, R)
    assert fit.segments == 1 and fit.samples == 7
    assert fit.g_mps2 == pytest.approx(G, rel=0.01)
    assert fit.rms_residual_m < 1e-9

    noisy = z + np.random.default_rng(0).normal(0.0, 0.001, z.shape)
    fit = fit_gravity(noisy, DT, FLOOR, R)
    assert fit.g_mps2 == pytest.approx(G, rel=0.03)
    assert 1e-4 < fit.rms_residual_m < 2e-3


@pytest.mark.parametrize(
    "z", [np.full(20, 1.0), 0.5 + 0.8 * np.arange(20) * DT, 1.8 - 0.5 * np.arange(20) * DT]
)
def test_floating_or_uniform_motion_has_no_gravity(z):
    fit = fit_gravity(z, DT, FLOOR, R)
    assert fit.segments == 1
    assert abs(fit.g_mps2) < 1e-6


def test_flipped_gravity_is_caught():
    z = drop(0.5, 0.0, 8, g=-G)  # starts at rest and accelerates upwards
    assert fit_gravity(z, DT, FLOOR, R).g_mps2 == pytest.approx(-G, rel=0.01)


def test_no_flight_gives_nan():
    fit = fit_gravity(np.full(30, CONTACT), DT, FLOOR, R)  # at rest on the floor
    assert fit.segments == 0 and fit.samples == 0 and np.isnan(fit.g_mps2)
    assert np.isnan(fit_gravity(np.full(30, np.nan), DT, FLOOR, R).g_mps2)


def test_nan_gap_splits_a_flight_without_crashing():
    z = drop(1.0, 6.0, 14)  # thrown up, 1.3 s aloft
    assert z.min() > CONTACT + 0.05
    z[6:8] = np.nan  # not seen for two steps, around the apex
    fit = fit_gravity(z, DT, FLOOR, R)
    assert fit.segments == 2
    assert fit.samples == 12
    assert fit.g_mps2 == pytest.approx(G, rel=0.01)
    z[10] = np.nan  # the second flight is now too short to fit
    assert fit_gravity(z, DT, FLOOR, R).segments == 1


def test_impacts_other_than_the_floor_are_cut_where_told():
    # thrown up at 4 m/s, then at 0.65 s, falling 1.5 m up, kicked to rise at 2 m/s (another ball)
    t = np.arange(14) * DT
    s = t - 0.65
    z = np.where(
        s < 0, 1.0 + 4.0 * t - 0.5 * G * t**2, 1.0 + 2.6 - 0.5 * G * 0.65**2 + 2.0 * s - 0.5 * G * s**2
    )
    fit = fit_gravity(z, DT, FLOOR, R)  # its lowest sample is far above the floor: not a bounce
    assert fit.segments == 1 and fit.rms_residual_m > 0.01
    fit = fit_gravity(z, DT, FLOOR, R, cut_steps=[7])
    assert fit.segments == 2 and fit.samples == 13
    assert fit.g_mps2 == pytest.approx(G, rel=1e-6)
    assert np.isnan(fit_gravity(np.zeros(0), DT, FLOOR, R).g_mps2)


def test_gravity_pools_objects():
    a = drop(2.0, 0.0, 7)
    b = np.full(7, np.nan)
    b[1:6] = drop(1.0, 3.0, 5)
    fit = fit_gravity(np.stack([a, b], 1), DT, FLOOR, [R, R])
    assert fit.segments == 2 and fit.samples == 12
    assert fit.g_mps2 == pytest.approx(G, rel=0.01)


# ---------------------------------------------------------------------------------------------
# restitution


@pytest.mark.parametrize("e", [0.8, 0.5])
def test_restitution_and_gravity_of_a_bouncing_ball(e):
    z, contacts = bouncing(2.0, e, 60)
    # the contacts fall between samples, so no sample is at the floor before the ball rests
    assert np.abs(contacts / DT - np.round(contacts / DT)).min() > 0.01

    fit = restitution(z, DT, FLOOR, R)
    assert fit.bounces == (5 if e == 0.8 else 2)
    np.testing.assert_allclose(fit.e, e, rtol=0.05)
    assert fit.mean == pytest.approx(e, rel=0.05)
    # each found contact is a true one, in order, to the microsecond
    for tc in fit.contact_time_s:
        assert np.abs(contacts - tc).min() < 1e-6
    assert np.all(np.diff(fit.contact_time_s) > 0)

    gravity = fit_gravity(z, DT, FLOOR, R)
    assert gravity.segments >= 2
    assert gravity.g_mps2 == pytest.approx(G, rel=0.01)
    assert gravity.rms_residual_m < 1e-9  # no flight mixes samples from both sides of a bounce


def test_a_flight_hiding_a_bounce_is_left_out():
    z, contacts = bouncing(2.0, 0.5, 60)
    # with a 1 cm contact band the second rising flight (1.3-1.5 s) takes in the sample at 1.6 s,
    # 2.4 cm up and past the third contact; that flight bends like g = 4.8 and its bounce is dropped
    fit = restitution(z, DT, FLOOR, R, margin_m=0.01)
    assert fit.bounces == 1
    assert fit.e[0] == pytest.approx(0.5, rel=1e-6)
    assert fit.contact_time_s[0] == pytest.approx(contacts[0])
    assert restitution(z, DT, FLOOR, R, margin_m=0.01, same_g_tolerance=1.0).e[1] < 0.4  # what it hid


def test_restitution_with_noise_and_without_bounces():
    z, _ = bouncing(2.0, 0.8, 60)
    noisy = z + np.random.default_rng(1).normal(0.0, 0.001, z.shape)
    assert restitution(noisy, DT, FLOOR, R).mean == pytest.approx(0.8, rel=0.05)

    none = restitution(drop(2.0, 0.0, 7), DT, FLOOR, R)
    assert none.bounces == 0 and np.isnan(none.mean)


def test_restitution_does_not_bridge_an_unseen_bounce():
    z, _ = bouncing(2.0, 0.8, 60)
    first = restitution(z, DT, FLOOR, R).contact_time_s[0]
    k = int(first / DT)
    z[k : k + 2] = np.nan  # the samples either side of the first contact
    fit = restitution(z, DT, FLOOR, R)
    assert np.abs(fit.contact_time_s - first).min() > DT


# ---------------------------------------------------------------------------------------------
# penetration and collisions


def test_penetration_between_spheres_and_into_the_floor():
    radii = [0.2, 0.15]
    touching = np.array([[[0.0, 0.0, 1.0], [0.35, 0.0, 1.0]]])
    overlapping = np.array([[[0.0, 0.0, 1.0], [0.33, 0.0, 1.0]]])  # 2 cm deep
    below = np.array([[[0.0, 0.0, 0.17], [1.0, 0.0, 1.0]]])  # 3 cm into the floor
    unseen = np.full((1, 2, 3), np.nan)
    ev = penetration(np.concatenate([touching, overlapping, below, unseen]), radii, FLOOR, 0.005)
    assert ev.pair_steps.tolist() == [False, True, False, False]
    assert ev.floor_steps.tolist() == [False, False, True, False]
    assert ev.pair_events == 1 and ev.floor_events == 1
    assert ev.max_depth_m == pytest.approx(0.03)

    assert penetration(touching, radii, FLOOR, 0.005).max_depth_m == 0.0
    assert not penetration(below, radii, None, 0.005).floor_steps.any()


def test_collision_steps_are_onsets_of_contact():
    x = np.array([-1.0, -0.6, -0.2, -0.17, -0.17, -0.5, -0.9, -0.18])  # ball 0 at x, ball 1 at 0
    points = np.zeros((len(x), 2, 2))
    points[:, 0, 0] = x
    points[:, :, 1] = 0.5
    points[3, 1] = np.nan  # ball 1 unseen for a step inside the spell
    assert collision_steps(points, [0.1, 0.1], margin_m=0.05).tolist() == [2, 4, 7]


def test_momentum_of_elastic_and_inelastic_collisions():
    elastic = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])[..., None]  # equal masses swap velocities
    ch = momentum_change(elastic, [1.0, 1.0], [1])
    assert ch.relative_change[0] == pytest.approx(0.0, abs=1e-12)

    stops = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.5]])[..., None]  # ball 0 stops, half the push lost
    ch = momentum_change(stops, [1.0, 1.0], [1])
    assert ch.relative_change[0] == pytest.approx(0.5)
    np.testing.assert_allclose(ch.p_before, [[1.0]])
    np.testing.assert_allclose(ch.p_after, [[0.5]])

    unseen = stops.copy()
    unseen[2, 1] = np.nan
    ch = momentum_change(np.concatenate([stops, unseen]), [1.0, 1.0], [1, 4, 5])  # 5 leaves the video
    assert ch.relative_change[0] == pytest.approx(0.5)
    assert np.isnan(ch.relative_change[1:]).all() and ch.mean == pytest.approx(0.5)


def test_momentum_expects_the_impulse_of_gravity():
    v = np.zeros((3, 2, 2))
    v[:, 0, 0] = 1.0  # ball 0 moves along x, ball 1 rests; both fall freely
    v[:, :, 1] = -G * np.arange(3)[:, None] * DT
    assert momentum_change(v, [1.0, 2.0], [1]).relative_change[0] > 1.0
    ch = momentum_change(v, [1.0, 2.0], [1], accel_mps2=[0.0, -G], dt_s=DT)
    assert ch.relative_change[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="dt_s"):
        momentum_change(v, [1.0, 2.0], [1], accel_mps2=[0.0, -G])


# ---------------------------------------------------------------------------------------------
# permanence


def test_an_object_vanishing_half_way():
    T = 20
    truth_vis, truth_px = np.ones((T, 2), bool), np.full((T, 2), 50)
    vis = truth_vis.copy()
    vis[T // 2 :, 0] = False
    p = permanence(vis, np.where(vis, 50, 0), truth_vis, truth_px)
    s = p.summary()
    assert s["vanished"] == T // 2 and s["appeared"] == 0 and s["size_changed"] == 0
    assert s["by_object"]["vanished"] == [T // 2, 0]
    assert s["by_object"]["kept_fraction"] == [0.5, 1.0]
    assert p.kept_fraction == pytest.approx(0.75)


def test_appearing_and_changing_size():
    T = 10
    truth_vis = np.zeros((T, 1), bool)
    truth_vis[:5] = True
    truth_px = np.where(truth_vis, 40, 0)
    vis = np.ones((T, 1), bool)  # shown throughout: appears at steps 5..9
    px = np.full((T, 1), 60)  # x1.5: within the band
    px[:2] = 120  # x3 for the first two steps
    p = permanence(vis, px, truth_vis, truth_px)
    assert p.appeared.sum() == 5 and p.vanished.sum() == 0
    assert p.size_changed[:, 0].tolist() == [True, True] + [False] * 8
    assert p.kept_fraction == pytest.approx(3 / 5)
    assert np.isnan(permanence(vis, px, ~vis, px).kept_fraction)
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        permanence(vis[:, 0], px, truth_vis, truth_px)
