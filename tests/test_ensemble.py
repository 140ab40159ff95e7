"""svqbench.ensemble: CRPS (plain = ecdf, fair) equals the `scores` library's crps_for_ensemble, per cell and
latitude-weighted over windows, leads and the grid; the spread/skill ratio equals an xarray computation."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scores.probability import crps_for_ensemble

from svqbench.ensemble import EnsembleAccumulator, crps_ensemble
from svqbench.metrics import cell_weights

LAT = np.array([-60.0, -20.0, 10.0, 45.0, 80.0])


def _case(seed: int = 0, b: int = 6, m: int = 5, t: int = 3, h: int = 5, w: int = 7):
    rng = np.random.default_rng(seed)
    truth = rng.normal(280.0, 5.0, (b, t, 1, h, w)).astype(np.float32)
    members = (truth[:, None] + rng.normal(0.5, 2.0, (b, m, t, 1, h, w))).astype(np.float32)
    return members, truth


def _as_xarray(members, truth):
    dims = ("window", "lead", "channel", "latitude", "longitude")
    fcst = xr.DataArray(members, dims=(dims[0], "member", *dims[1:]), coords={"latitude": LAT})
    obs = xr.DataArray(truth, dims=dims, coords={"latitude": LAT})
    return fcst, obs


@pytest.mark.parametrize("method", ["ecdf", "fair"])
def test_crps_per_cell_equals_scores(method):
    members, truth = _case()
    fcst, obs = _as_xarray(members, truth)
    expected = crps_for_ensemble(fcst, obs, ensemble_member_dim="member", method=method, preserve_dims="all")
    got = crps_ensemble(np.moveaxis(members, 1, 0), truth, fair=method == "fair")
    np.testing.assert_allclose(got, expected.transpose(*obs.dims).values, rtol=1e-6, atol=1e-9)


def test_weighted_crps_and_spread_skill_of_the_accumulator_equal_scores_and_xarray():
    members, truth = _case(seed=1)
    acc = EnsembleAccumulator(cell_weights((5, 7), lat=LAT))
    acc.update(members[:4], truth[:4])  # streamed in two batches
    acc.update(members[4:], truth[4:])
    out = acc.result()
    fcst, obs = _as_xarray(members, truth)
    weights = xr.DataArray(np.cos(np.deg2rad(LAT)), dims="latitude", coords={"latitude": LAT})
    for method in ("ecdf", "fair"):
        expected = crps_for_ensemble(fcst, obs, ensemble_member_dim="member", method=method, weights=weights)
        assert out[f"crps_{method}"] == pytest.approx(float(expected), rel=1e-6)
        by_lead = crps_for_ensemble(fcst, obs, ensemble_member_dim="member", method=method, weights=weights,
                                    preserve_dims="lead")
        np.testing.assert_allclose(out[f"crps_{method}_by_lead"], by_lead.values, rtol=1e-6)
    # WeatherBench 2's spread/skill: sqrt(weighted mean of the unbiased member variance) / weighted RMSE of the mean
    spread = np.sqrt(fcst.astype(np.float64).var("member", ddof=1).weighted(weights).mean())
    skill = np.sqrt(((fcst.astype(np.float64).mean("member") - obs) ** 2).weighted(weights).mean())
    assert out["spread_skill_ratio"] == pytest.approx(float(spread / skill), rel=1e-6)
    assert out["ensemble_members"] == 5


def test_an_ensemble_of_copies_of_the_truth_scores_zero_and_one_member_has_no_fair_crps():
    members, truth = _case(seed=2, m=1)
    acc = EnsembleAccumulator(None)
    acc.update(np.repeat(truth[:, None], 3, axis=1), truth)
    perfect = acc.result()
    assert perfect["crps_ecdf"] == 0.0 and perfect["crps_fair"] == 0.0
    assert perfect["spread_skill_ratio"] is None and perfect["spread_skill_ratio_by_lead"] == [None] * 3
    one = EnsembleAccumulator(None)
    one.update(members, truth)  # one member: the CRPS is the MAE, and there is neither fair CRPS nor spread
    result = one.result()
    assert result["crps_ecdf"] == pytest.approx(float(np.abs(members[:, 0] - truth).astype(np.float64).mean()),
                                                rel=1e-9)
    assert "crps_fair" not in result and "spread_skill_ratio" not in result
    with pytest.raises(ValueError, match="fair CRPS needs at least two members"):
        crps_ensemble(members[:, :1].swapaxes(0, 1), truth, fair=True)
