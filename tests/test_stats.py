"""Paired comparisons on constructed runs whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from svqbench.stats import (BOOTSTRAP_METHOD, MIN_BLOCKS, block_length, bootstrap_interval, compare_runs,
                            paired_by_seed, seed_warning, t_interval, t_quantile, verdict)


def runs(seeds, values, metric="test_mae"):
    return pd.DataFrame({"seed": seeds, metric: values, "quantizer": "x"})


BASE = np.array([0.53, 0.51, 0.56, 0.50, 0.54])  # seed-to-seed spread far larger than the noise below
SEEDS = [0, 1, 2, 3, 4]
NOISE = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])  # zero mean: the mean difference is exactly the shift


@pytest.mark.parametrize("p, df, expected", [(0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 30, 2.042272),
                                             (0.975, 1, 12.706205), (0.025, 4, -2.776445)])
def test_t_quantiles_match_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6)


def test_identical_runs_are_within_noise():
    c = compare_runs(runs(SEEDS, BASE), runs(SEEDS, BASE))
    assert (c.n_pairs, c.mean_diff, c.ci_low, c.ci_high, c.rel_diff_pct) == (5, 0.0, 0.0, 0.0, 0.0)
    assert c.verdict == "within noise"
    assert c.method == "paired t over 5 seeds"


def test_constant_shift_up_is_worse_and_interval_is_the_textbook_one():
    c = compare_runs(runs(SEEDS, BASE + 1.0 + NOISE), runs(SEEDS, BASE))
    assert c.verdict == "worse"
    assert c.mean_diff == pytest.approx(1.0, abs=1e-12)
    assert c.ci_low < 1.0 < c.ci_high
    half = 2.776445 * NOISE.std(ddof=1) / math.sqrt(5)  # t_{0.975,4} s / sqrt(n)
    assert (c.ci_low, c.ci_high) == pytest.approx((1.0 - half, 1.0 + half), abs=1e-6)
    assert c.rel_diff_pct == pytest.approx(100.0 / BASE.mean())


def test_constant_shift_down_is_better():
    c = compare_runs(runs(SEEDS, BASE - 0.05 + NOISE / 10), runs(SEEDS, BASE))
    assert c.verdict == "better"
    assert c.ci_low < -0.05 < c.ci_high < 0


def test_pairing_removes_shared_seed_spread():
    # an unpaired comparison of these means would drown the 0.005 shift in the 0.03 seed spread
    c = compare_runs(runs(SEEDS, BASE + 0.005 + NOISE / 100), runs(SEEDS, BASE))
    assert c.verdict == "worse"
    noisy = compare_runs(runs(SEEDS, BASE + 0.005 + NOISE * 2), runs(SEEDS, BASE))
    assert noisy.verdict == "within noise" and noisy.ci_low < 0 < noisy.ci_high


def test_unpaired_seeds_are_dropped():
    method = runs([1, 2, 3, 4], [1.0, 2.0, 3.0, 100.0])
    base = runs([2, 3, 4, 5], [1.5, 2.5, 99.5, -50.0])
    p = paired_by_seed(method, base)
    assert p.seeds == (2, 3, 4) and p.dropped == (1, 5)
    np.testing.assert_allclose(p.diff, [0.5, 0.5, 0.5])
    c = compare_runs(method, base)
    assert c.n_pairs == 3 and c.mean_diff == pytest.approx(0.5) and c.dropped == (1, 5)


def test_runs_with_the_same_seed_count_once():
    # seed 1 was run twice (e.g. one process and torchrun): one seed of value 2.0, not two seeds
    method = runs([1, 1, 2], [1.0, 3.0, 5.0])
    base = runs([1, 2], [1.0, 4.0])
    p = paired_by_seed(method, base)
    assert p.seeds == (1, 2) and p.repeated == (1,)
    np.testing.assert_allclose(p.diff, [1.0, 1.0])
    c = compare_runs(method, base)
    assert c.n_pairs == 2 and c.repeated == (1,) and c.method == "paired t over 2 seeds"


def test_series_keyed_by_seed_are_accepted():
    m = pd.Series([2.0, 3.0, 4.0], index=[7, 8, 9])
    b = pd.Series([1.0, 2.1, 2.9], index=[9, 8, 7])  # order does not matter, the seed does
    p = paired_by_seed(m, b)
    np.testing.assert_allclose(p.diff, [-0.9, 0.9, 3.0])


def test_t_interval_needs_two():
    with pytest.raises(ValueError):
        t_interval(np.array([1.0]))


def test_verdict_edges():
    assert verdict(-2.0, -1.0) == "better"
    assert verdict(1.0, 2.0) == "worse"
    assert verdict(-1.0, 2.0) == "within noise"
    assert verdict(0.0, 1.0) == "within noise"  # touching 0 is not a difference
    assert verdict(float("nan"), float("nan")) == "n/a"


def _window_errors(shift, n=500, seed=3):
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 0.5, n)  # shared by both runs: the windows are the same
    base = difficulty + rng.normal(0, 0.05, n)
    return base + shift + rng.normal(0, 0.05, n), base


def test_bootstrap_is_deterministic_and_covers_the_true_difference():
    m, b = _window_errors(0.02)
    first = bootstrap_interval(m, b, seed=0)
    assert first == bootstrap_interval(m, b, seed=0)
    assert first != bootstrap_interval(m, b, seed=1)
    assert first.low < 0.02 < first.high
    assert first.mean == pytest.approx(float(np.mean(m - b)))
    # paired resampling: width follows the spread of the differences (sd ~0.07), not of the windows (~0.7)
    half = 1.96 * np.std(m - b, ddof=1) / np.sqrt(len(m))
    assert (first.high - first.low) / 2 == pytest.approx(half, rel=0.15)


def test_one_seed_uses_the_window_bootstrap():
    m, b = _window_errors(0.02)
    c = compare_runs(runs([5], [m.mean()]), runs([5], [b.mean()]), method_windows=m, baseline_windows=b)
    assert c.method == BOOTSTRAP_METHOD == "bootstrap over test windows (1 seed)"
    assert c.n_pairs == 1 and c.verdict == "worse"
    same = compare_runs(runs([5], [b.mean()]), runs([5], [b.mean()]), method_windows=b, baseline_windows=b)
    assert same.verdict == "within noise" and same.mean_diff == 0.0
    none = compare_runs(runs([5], [m.mean()]), runs([5], [b.mean()]))
    assert none.verdict == "n/a" and math.isnan(none.ci_low) and none.mean_diff == pytest.approx(0.02, abs=0.01)


def test_bootstrap_rejects_unequal_windows():
    with pytest.raises(ValueError):
        bootstrap_interval(np.ones(3), np.ones(4))


def test_no_common_seed():
    c = compare_runs(runs([1], [1.0]), runs([2], [1.0]))
    assert c.n_pairs == 0 and c.verdict == "n/a" and c.dropped == (1, 2)


def test_seed_warning():
    assert seed_warning(runs([1, 2, 3], [0, 0, 0]), label="svq") is None
    msg = seed_warning(runs([1, 2], [0, 0]), label="svq")
    assert "svq" in msg and "2 seeds" in msg and "fewer than 3" in msg
    msg = seed_warning(runs([1, 1, 2, 3], [0, 0, 0, 0]), label="none")
    assert "same seed (1)" in msg and "fewer" not in msg
    assert "1 seed " in seed_warning(pd.Series([0.5], index=[4]), label="mlp")


def test_block_bootstrap_widens_for_overlapping_windows():
    # differences of stride-1 windows 20 frames long: a moving average of 20 independent frame errors
    rng = np.random.default_rng(11)
    frame = rng.normal(0.0, 1.0, 2000 + 19)
    d = np.convolve(frame, np.ones(20) / 20, mode="valid")
    true_half = 1.96 * 1.0 / np.sqrt(len(d))  # the mean of d is (nearly) the mean of 2000 frames
    iid_half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # what resampling single windows would give
    assert iid_half < 0.4 * true_half
    blocks = bootstrap_interval(d, np.zeros_like(d), block=block_length(20))
    assert (blocks.high - blocks.low) / 2 == pytest.approx(true_half, rel=0.25)
    assert blocks == bootstrap_interval(d, np.zeros_like(d), block=block_length(20))
    # block 1 is only a floor: the automatic block length still sees the overlap
    automatic = bootstrap_interval(d, np.zeros_like(d), block=1)
    assert (automatic.high - automatic.low) / 2 == pytest.approx(true_half, rel=0.35)


def _ar1_window_errors(rng, n_windows: int, length: int, phi: float) -> np.ndarray:
    """Per-window error differences of `n_windows` stride-1 windows `length` frames long, each the mean
    of its frames' errors, which follow an AR(1) with coefficient `phi` and unit innovations."""
    from scipy.signal import lfilter
    frames = lfilter([1.0], [1.0, -phi], rng.normal(size=n_windows + length - 1 + 200))[200:]  # 200: burn-in
    return np.convolve(frames, np.ones(length) / length, mode="valid")


def _true_sd_of_mean(n_windows: int, length: int, phi: float) -> float:
    """The exact standard deviation of the mean of those window errors: frame t enters the mean with
    weight (windows containing t) / (n_windows * length); AR(1) covariance phi^|lag| / (1 - phi^2)."""
    weights = np.convolve(np.ones(n_windows), np.ones(length)) / (n_windows * length)
    lag = np.abs(np.subtract.outer(np.arange(len(weights)), np.arange(len(weights))))
    return float(np.sqrt(weights @ (phi ** lag / (1 - phi ** 2)) @ weights))


@pytest.mark.parametrize("length, phi, n", [
    (1, 0.5, 400),     # AR(1) errors alone, correlated over a few windows
    (15, 0.5, 450),    # overlapping 15-frame windows over AR(1) frame errors, the fewest windows that
])                     # give an interval: MIN_BLOCKS blocks of block_length(15)
def test_interval_coverage_is_near_nominal_for_autocorrelated_errors(length, phi, n):
    truth = _true_sd_of_mean(n, length, phi)
    rng = np.random.default_rng(2024)
    intervals = []
    for sim in range(300):
        d = _ar1_window_errors(rng, n, length, phi)  # true mean difference 0
        intervals.append(bootstrap_interval(d, np.zeros(n), block=block_length(length), resamples=400, seed=sim))
    made = [iv for iv in intervals if iv is not None]  # a long automatic block can leave too few blocks
    assert len(made) >= 0.95 * len(intervals)
    coverage = np.mean([iv.low < 0.0 < iv.high for iv in made])
    # a few hundred simulations estimate a 95% interval's coverage to about +-2.5% (two standard errors)
    assert 0.90 <= coverage <= 0.98
    assert np.mean([(iv.high - iv.low) / 2 for iv in made]) / (1.96 * truth) == pytest.approx(1.0, abs=0.15)


def test_one_seed_on_the_embedded_test_split_gives_no_interval_and_no_verdict():
    # the embedded data: 26 stride-1 test windows of 10 + 5 years; one seed of svq and one of none
    rng = np.random.default_rng(0)
    base = 0.53 + 0.05 * _ar1_window_errors(rng, 26, 15, 0.5)
    svq = base - 0.0338 + 0.002 * rng.normal(size=26)  # consistently lower: the old bootstrap said "better"
    c = compare_runs(runs([42], [0.4962]), runs([42], [0.5300]), method_windows=svq, baseline_windows=base,
                     block=block_length(15))
    assert c.method == "cannot tell from one seed on 26 windows: run 3 seeds"
    assert c.verdict == "n/a" and math.isnan(c.ci_low) and math.isnan(c.ci_high)
    assert c.n_pairs == 1 and c.mean_diff == pytest.approx(0.4962 - 0.5300, abs=1e-12)
    assert bootstrap_interval(svq, base, block=block_length(15)) is None
    # windows that are independent (block 1) are enough from MIN_BLOCKS on
    assert bootstrap_interval(np.arange(9.0), np.zeros(9)) is None
