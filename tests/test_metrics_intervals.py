"""The bootstrap interval of the report's ratios: paired by episode, honest about its spread."""

import numpy as np
import pytest

from worldsim.metrics.intervals import ratio_interval


def _errors(episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A floor whose episodes differ 10x in difficulty, and a model twice as far off, noisily."""
    rng = np.random.default_rng(seed)
    hardness = rng.uniform(0.5, 5.0, size=(episodes, 1))
    den = hardness * rng.uniform(0.8, 1.2, size=(episodes, 30))
    num = 2.0 * hardness * rng.uniform(0.5, 1.5, size=(episodes, 30))
    return num, den


def test_the_interval_holds_the_ratio_and_narrows_with_more_episodes():
    widths = []
    for episodes in (8, 32, 256):
        num, den = _errors(episodes, seed=1)
        lo, hi = ratio_interval(num, den)
        assert lo < np.nanmean(num) / np.nanmean(den) < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0
    lo, hi = ratio_interval(*_errors(256, seed=2))
    assert lo < 2.0 < hi and hi - lo < 0.3


def test_the_model_and_the_floor_of_one_episode_are_drawn_together():
    """A model exactly 1.5x the floor on every episode has no spread, however unequal the episodes;
    drawn apart, the episodes' unequal difficulty alone would make a wide interval."""
    _, den = _errors(32, seed=3)
    assert ratio_interval(1.5 * den, den) == pytest.approx((1.5, 1.5))
    assert ratio_interval(den, den) == pytest.approx((1.0, 1.0))


def test_undefined_steps_are_skipped_as_the_report_skips_them():
    num, den = _errors(32, seed=4)
    num[3, :] = np.nan  # an episode whose objects the extractor never finds in the generator's frames
    num[5, 10:] = np.nan
    lo, hi = ratio_interval(num, den)
    assert np.isfinite([lo, hi]).all() and lo < np.nanmean(num) / np.nanmean(den) < hi
    assert ratio_interval(num, den, seed=7) != (lo, hi)  # a different draw, reproducibly seeded
    assert ratio_interval(num, den) == (lo, hi)


@pytest.mark.parametrize(
    ("num", "den", "level"),
    [
        (np.ones((4, 3)), np.ones((5, 3)), 0.95),  # not the same episodes
        (np.ones(4), np.ones(4), 0.95),  # not [episodes, steps]
        (np.ones((0, 3)), np.ones((0, 3)), 0.95),
        (np.ones((4, 3)), np.ones((4, 3)), 1.5),
    ],
)
def test_ill_shaped_input_is_refused(num, den, level):
    with pytest.raises(ValueError):
        ratio_interval(num, den, level=level)
