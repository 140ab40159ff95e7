"""Is a difference between a method and the `none` baseline of the same cell real?

Runs are paired by seed (same seed = same initialisation and data order), so seed-to-seed spread
that both runs share cancels in the difference `method - baseline` (lower error is better, so a
negative difference means the method helps).

- two or more paired seeds: mean difference and a Student-t 95% interval over the seeds
  ("paired t over N seeds");
- one paired seed: a moving-block bootstrap over the test windows of the two runs (the same
  windows, resampled together; `arch.bootstrap`), labelled "bootstrap over test windows (1 seed)".
  It measures the noise of the test set only, not the seed-to-seed spread, so it is narrower than
  a seed interval would be. Overlapping windows are correlated, so whole blocks of windows are
  resampled; a test split with fewer than MIN_BLOCKS blocks gives no interval and no verdict
  ("cannot tell from one seed on N windows: run 3 seeds").

Verdict: "better" when the whole interval lies below 0, "worse" when it lies above 0, otherwise
"within noise". Runs that share a seed (e.g. a one-process run and a torchrun run) are one seed:
they are averaged per seed first, and the seeds this happened to are reported.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

LEVEL = 0.95
MIN_SEEDS = 3
T_METHOD = "paired t over {n} seeds"
BOOTSTRAP_METHOD = "bootstrap over test windows (1 seed)"
TOO_FEW_WINDOWS = "cannot tell from one seed on {n} windows: run {seeds} seeds"
# Stride-1 windows of L frames share frames with their neighbours up to L apart, so their errors are
# correlated; blocks of 3 L windows keep most of that correlation inside a block (blocks of 2 L
# with a percentile interval covered a 95% interval only 85-90% of the time in simulations). Errors
# that stay correlated for longer than that get the longer automatic block length (Politis and
# White). Fewer than MIN_BLOCKS whole blocks are too few to estimate a spread from.
# tests/test_stats.py measures the coverage (93-94% on AR(1) errors, with or without overlap).
BLOCK_WINDOW_LENGTHS = 3
MIN_BLOCKS = 10


class PerSeed(NamedTuple):
    values: pd.Series          # metric per seed (index: seed, sorted), runs with the same seed averaged
    repeated: tuple            # seeds that had more than one run


class Paired(NamedTuple):
    seeds: tuple               # seeds present in both, sorted
    method: np.ndarray         # per-seed metric of the method
    baseline: np.ndarray       # per-seed metric of the baseline
    diff: np.ndarray           # method - baseline, per seed
    dropped: tuple             # seeds present in only one of the two (not used)
    repeated: tuple            # seeds with several runs (in either), averaged before pairing


class Interval(NamedTuple):
    mean: float
    low: float
    high: float


class Comparison(NamedTuple):
    n_pairs: int               # paired seeds (1 with the bootstrap)
    mean_diff: float           # mean of method - baseline (negative = lower error = better)
    ci_low: float
    ci_high: float
    rel_diff_pct: float        # mean_diff in % of the baseline mean (negative = better)
    method: str                # how the interval was made, or why there is none
    verdict: str               # better / worse / within noise / n/a
    dropped: tuple             # unpaired seeds left out
    repeated: tuple            # seeds whose several runs were averaged


def per_seed(runs: pd.DataFrame | pd.Series, *, metric: str = "test_mae", seed: str = "seed") -> PerSeed:
    """One value per seed. `runs` is a frame with `seed` and `metric` columns (leaderboard rows) or
    a series indexed by seed. Several runs with the same seed are averaged, not counted twice."""
    if isinstance(runs, pd.DataFrame):
        runs = pd.Series(pd.to_numeric(runs[metric], errors="coerce").to_numpy(), index=runs[seed].to_numpy())
    values = pd.to_numeric(runs, errors="coerce").astype(float)
    values = values[values.notna()]
    counts = values.groupby(level=0).size()
    return PerSeed(values.groupby(level=0).mean().sort_index(), tuple(sorted(counts.index[counts > 1].tolist())))


def paired_by_seed(method: pd.DataFrame | pd.Series, baseline: pd.DataFrame | pd.Series, *,
                   metric: str = "test_mae", seed: str = "seed") -> Paired:
    """Pair the method's and the baseline's per-seed values on the seeds both have."""
    m = per_seed(method, metric=metric, seed=seed)
    b = per_seed(baseline, metric=metric, seed=seed)
    common = m.values.index.intersection(b.values.index).sort_values()
    dropped = tuple(sorted(m.values.index.symmetric_difference(b.values.index).tolist()))
    mv = m.values.loc[common].to_numpy(dtype=float)
    bv = b.values.loc[common].to_numpy(dtype=float)
    return Paired(tuple(common.tolist()), mv, bv, mv - bv, dropped, tuple(sorted(set(m.repeated) | set(b.repeated))))


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom."""
    return float(_scipy_stats.t.ppf(p, df))


def t_interval(diff: np.ndarray, *, level: float = LEVEL) -> Interval:
    """Mean and t-interval of paired differences (needs at least two)."""
    d = np.asarray(diff, dtype=float)
    if len(d) < 2:
        raise ValueError(f"a t-interval needs at least 2 paired differences, got {len(d)}")
    mean = float(d.mean())
    half = t_quantile(0.5 + level / 2, len(d) - 1) * float(d.std(ddof=1)) / np.sqrt(len(d))
    return Interval(mean, float(mean - half), float(mean + half))


def block_length(window_length: int) -> int:
    """The moving-block length, in windows, for stride-1 windows `window_length` frames long."""
    return BLOCK_WINDOW_LENGTHS * max(1, int(window_length))


def bootstrap_interval(method_errors: np.ndarray, baseline_errors: np.ndarray, *, resamples: int = 2000,
                       seed: int = 0, level: float = LEVEL, block: int = 1) -> Interval | None:
    """Interval of the mean of `method - baseline` per-window errors (both runs scored the same
    windows, so the differences are resampled), or None when the windows hold fewer than MIN_BLOCKS
    whole blocks. Deterministic for a given `seed`.

    Blocks are `block` windows long (1 for independent windows, block_length(in_len + out_len) for
    stride-1 windows), or longer where the differences' own automatic block length is
    (arch.bootstrap.optimal_block_length, circular). The standard error is the spread of the mean
    over `resamples` moving-block bootstrap resamples (arch.bootstrap.MovingBlockBootstrap); the
    interval is the mean +- Student's t quantile with k - 1 degrees of freedom times it, k = whole
    blocks, because the spread rests on about k independent pieces (the normal quantile covered too
    rarely with 10-20 blocks)."""
    m = np.asarray(method_errors, dtype=float).ravel()
    b = np.asarray(baseline_errors, dtype=float).ravel()
    if len(m) != len(b) or len(m) == 0:
        raise ValueError(f"per-window errors must be non-empty and of equal length, got {len(m)} and {len(b)}")
    d = m - b
    if len(d) // max(1, int(block)) < MIN_BLOCKS:
        return None
    # statsmodels stands behind arch: imported only when an interval is made
    from arch.bootstrap import MovingBlockBootstrap, optimal_block_length
    with np.errstate(invalid="ignore", divide="ignore"):  # constant differences: NaN, i.e. no dependence
        automatic = float(optimal_block_length(d)["circular"].iloc[0])
    block = max(1, int(block), int(np.ceil(automatic)) if np.isfinite(automatic) else 1)
    blocks = len(d) // block
    if blocks < MIN_BLOCKS:
        return None
    variance = MovingBlockBootstrap(block, d, seed=seed).cov(np.mean, reps=resamples)
    mean = float(d.mean())
    half = t_quantile(0.5 + level / 2, blocks - 1) * float(np.sqrt(np.asarray(variance).item()))
    return Interval(mean, mean - half, mean + half)


def verdict(low: float, high: float) -> str:
    """Lower error is better: the whole interval below 0 is "better", above 0 "worse"."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "within noise"


def compare_runs(method: pd.DataFrame | pd.Series, baseline: pd.DataFrame | pd.Series, *,
                 metric: str = "test_mae", seed: str = "seed",
                 method_windows: np.ndarray | None = None, baseline_windows: np.ndarray | None = None,
                 resamples: int = 2000, bootstrap_seed: int = 0, block: int = 1,
                 level: float = LEVEL) -> Comparison:
    """A method's runs against the baseline runs of the same cell.

    Two or more paired seeds: paired t-interval. One paired seed: bootstrap over test windows when
    both runs' per-window errors of `metric` (`method_windows`, `baseline_windows`: the same windows
    in the same order) are given and hold at least MIN_BLOCKS blocks, and mean_diff is then their
    mean difference (`block`: see bootstrap_interval); otherwise no interval (verdict "n/a") and
    `method` says why."""
    p = paired_by_seed(method, baseline, metric=metric, seed=seed)
    n = len(p.diff)
    nan = float("nan")
    if n >= 2:
        iv, how = t_interval(p.diff, level=level), T_METHOD.format(n=n)
    elif n == 1 and method_windows is not None and baseline_windows is not None:
        iv = bootstrap_interval(method_windows, baseline_windows, resamples=resamples, seed=bootstrap_seed,
                                level=level, block=block)
        how = BOOTSTRAP_METHOD
        if iv is None:  # too few blocks of windows: no interval rather than a falsely narrow one
            iv = Interval(float(p.diff[0]), nan, nan)
            how = TOO_FEW_WINDOWS.format(n=len(np.ravel(method_windows)), seeds=MIN_SEEDS)
    else:
        mean = float(p.diff[0]) if n else nan
        iv = Interval(mean, nan, nan)
        how = "1 seed, no per-window errors" if n else "no seed in common"
    base = float(p.baseline.mean()) if n else nan
    rel = 100.0 * iv.mean / base if n and base != 0 else nan
    return Comparison(n, iv.mean, iv.low, iv.high, rel, how, verdict(iv.low, iv.high), p.dropped, p.repeated)


def seed_warning(runs: pd.DataFrame | pd.Series, *, label: str, seed: str = "seed",
                 minimum: int = MIN_SEEDS) -> str | None:
    """A message when `runs` (one method of one cell) has fewer than `minimum` distinct seeds,
    and when several runs share a seed; None when neither."""
    seeds = pd.Series(runs[seed] if isinstance(runs, pd.DataFrame) else runs.index)
    distinct = seeds.nunique()
    notes = []
    if distinct < minimum:
        notes.append(f"{label}: {distinct} seed{'s' if distinct != 1 else ''} (fewer than {minimum}); "
                     f"differences may be seed noise — run more with `svqbench sweep ... --seeds {minimum}`")
    shared = sorted(seeds[seeds.duplicated()].unique().tolist())
    if shared:
        notes.append(f"{label}: runs with the same seed ({', '.join(map(str, shared))}) averaged as one seed")
    return "; ".join(notes) or None
