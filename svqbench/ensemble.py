"""Probabilistic scores of an ensemble forecast: CRPS (plain and fair) and the spread/skill ratio.

Conventions (the `scores` library's names, WeatherBench 2's weighting):
- `crps_ecdf` ("plain"; `scores.probability.crps_for_ensemble(method="ecdf")`): the CRPS of the
  ensemble's empirical distribution, mean_i |x_i - y| - 1/(2 M^2) sum_ij |x_i - x_j|.
- `crps_fair` (`method="fair"`): the same with 1/(2 M (M - 1)) in the second term, the CRPS an
  ensemble of M members drawn from the forecast distribution has in expectation as M grows
  (Ferro 2014); needs M >= 2.
  Both per cell, then averaged like the deterministic scores: latitude-weighted over the (valid)
  grid with cos(lat) / mean(cos(lat)) (no weighting without latitudes), over windows, lead times
  and channels; `_by_lead` keeps one value per lead.
- `spread_skill_ratio`: spread / skill, spread = sqrt of the weighted mean of the members' variance
  (ddof 1, unbiased), skill = the weighted RMSE of the ensemble mean (WeatherBench 2's definition);
  about 1 for a well-dispersed ensemble, below 1 for an over-confident one.
"""
from __future__ import annotations

import math

import numpy as np


def crps_ensemble(members: np.ndarray, truth: np.ndarray, *, fair: bool = False) -> np.ndarray:
    """CRPS of every cell: `members` (M, ...) against `truth` (...), float64."""
    x = np.asarray(members, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    m = x.shape[0]
    if fair and m < 2:
        raise ValueError("the fair CRPS needs at least two members")
    skill = np.abs(x - y).mean(axis=0)
    pairs = np.zeros_like(skill)
    for i in range(m):  # M^2 / 2 pairs, each counted twice; no (M, M, ...) array in memory
        for j in range(i + 1, m):
            pairs += np.abs(x[i] - x[j])
    pairs *= 2.0
    return skill - pairs / (2.0 * m * (m - 1 if fair else m))


class EnsembleAccumulator:
    """Streams (B, M, T, C, H, W) member forecasts and (B, T, C, H, W) truths in physical units and
    keeps (T, C) sums of the weighted CRPS (plain and fair), member variance and squared error of the
    ensemble mean. `weights` (H, W): latitude weights normalised over the valid cells, 0 at masked
    ones (metrics.cell_weights); None weights every cell once; `mask` (H, W, True = valid)."""

    def __init__(self, weights: np.ndarray | None = None, mask: np.ndarray | None = None):
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.sums: dict[str, np.ndarray] = {}
        self.forecasts = 0  # windows
        self.members = None

    def _mean_over_grid(self, field: np.ndarray) -> np.ndarray:
        """(..., H, W) -> (...): the weighted mean over the valid cells."""
        if self.weights is not None:
            return (field * self.weights).sum((-2, -1)) / (self.weights > 0).sum()
        if self.mask is not None:
            return field[..., self.mask].mean(-1)
        return field.mean((-2, -1))

    def update(self, members: np.ndarray, truth: np.ndarray) -> None:
        members = np.asarray(members, dtype=np.float64)
        truth = np.asarray(truth, dtype=np.float64)
        if members.ndim != 6 or members.shape[:1] + members.shape[2:] != truth.shape:
            raise ValueError(f"expected members (B, M, T, C, H, W) and truth (B, T, C, H, W), got "
                             f"{members.shape} and {truth.shape}")
        if self.members is None:
            self.members = members.shape[1]
        elif members.shape[1] != self.members:
            raise ValueError(f"{members.shape[1]} members after {self.members}")
        x = np.moveaxis(members, 1, 0)  # (M, B, T, C, H, W)
        fields = {"crps_ecdf": crps_ensemble(x, truth),
                  "spread_var": x.var(axis=0, ddof=1) if self.members > 1 else np.zeros_like(truth),
                  "mean_sq": (x.mean(axis=0) - truth) ** 2}
        if self.members > 1:
            fields["crps_fair"] = crps_ensemble(x, truth, fair=True)
        for name, field in fields.items():
            total = self._mean_over_grid(field).sum(axis=0)  # (T, C)
            self.sums[name] = self.sums.get(name, 0.0) + total
        self.forecasts += len(truth)

    def result(self) -> dict:
        if not self.forecasts:
            raise ValueError("no samples were accumulated")
        mean = {k: v / self.forecasts for k, v in self.sums.items()}  # (T, C) means over windows and grid
        out: dict = {"ensemble_members": int(self.members)}
        for name in ("crps_ecdf", "crps_fair"):
            if name in mean:
                out[name] = float(mean[name].mean())
                out[f"{name}_by_lead"] = mean[name].mean(1).tolist()
        if self.members > 1:
            out["ensemble_spread"] = math.sqrt(float(mean["spread_var"].mean()))
            out["ensemble_mean_rmse"] = math.sqrt(float(mean["mean_sq"].mean()))
            # a perfect ensemble mean (skill 0) has no ratio
            out["spread_skill_ratio"] = (out["ensemble_spread"] / out["ensemble_mean_rmse"]
                                         if out["ensemble_mean_rmse"] > 0 else None)
            spread, skill = np.sqrt(mean["spread_var"].mean(1)), np.sqrt(mean["mean_sq"].mean(1))
            out["spread_skill_ratio_by_lead"] = [float(a / b) if b > 0 else None for a, b in zip(spread, skill)]
        return out
