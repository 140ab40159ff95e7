"""svqbench's weather scores against an independent verification library, `scores` (Bureau of
Meteorology, xarray based), on the same arrays: latitude-weighted RMSE, MAE and bias, per-pixel
errors, and the anomaly correlation (ACC) — overall, per lead time and per channel, with 1-D and
2-D latitudes and with masks (masked cells given to `scores` as NaN, its missing-data convention).

`scores` has no ACC function; WeatherBench 2's ACC is built here from its weighted spatial means
(`scores.processing.aggregate`) with its NaN matching (`broadcast_and_match_nan`), so the
weighting, NaN handling and reductions are the library's, not svqbench's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

scores = pytest.importorskip("scores", reason="the cross-check needs `scores` (pip install -e '.[test]')")
from scores.continuous import mae, mean_error, mse, rmse  # noqa: E402
from scores.functions import create_latitude_weights  # noqa: E402
from scores.processing import aggregate, broadcast_and_match_nan  # noqa: E402

from svqbench.data.prepared import open_prepared  # noqa: E402
from svqbench.evaluate import evaluate_references  # noqa: E402
from svqbench.metrics import ErrorAccumulator  # noqa: E402

DIMS = ("window", "lead", "channel", "lat", "lon")


def as_xr(a: np.ndarray, mask: np.ndarray | None = None) -> xr.DataArray:
    a = np.asarray(a, dtype=np.float64)
    if mask is not None:
        a = np.where(mask, a, np.nan)  # scores' convention for missing data
    return xr.DataArray(a, dims=DIMS[-a.ndim:])


def library_scores(pred, true, clim, *, lat=None, lat2d=None, mask=None) -> dict[str, np.ndarray]:
    """The scores library's numbers for the keys svqbench reports (overall, by lead, by channel)."""
    f, o, c = as_xr(pred), as_xr(true, mask), as_xr(clim)
    if lat2d is not None:
        w = xr.DataArray(create_latitude_weights(lat2d), dims=("lat", "lon"))
    elif lat is not None:
        w = xr.DataArray(create_latitude_weights(lat), dims=("lat",))
    else:
        w = None
    out = {}
    for suffix, keep in (("", None), ("_by_lead", ["lead"]), ("_by_channel", ["channel"])):
        out["mse_per_pixel" + suffix] = mse(f, o, preserve_dims=keep)
        out["mae_per_pixel" + suffix] = mae(f, o, preserve_dims=keep)
        out["bias_per_pixel" + suffix] = mean_error(f, o, preserve_dims=keep)
        if w is not None:
            out["rmse_latweighted" + suffix] = rmse(f, o, preserve_dims=keep, weights=w)
            out["mae_latweighted" + suffix] = mae(f, o, preserve_dims=keep, weights=w)
            out["bias_latweighted" + suffix] = mean_error(f, o, preserve_dims=keep, weights=w)
    # WeatherBench 2's ACC: per forecast, weighted spatial means of anomaly products, then the mean
    fa, oa = broadcast_and_match_nan(f - c, o - c)
    spatial = dict(reduce_dims=["lat", "lon"], weights=w if w is not None else xr.ones_like(fa.isel(window=0, lead=0,
                                                                                                   channel=0)))
    acc = aggregate(fa * oa, **spatial) / np.sqrt(aggregate(fa ** 2, **spatial) * aggregate(oa ** 2, **spatial))
    name = "acc_latweighted" if w is not None else "acc_unweighted"
    out[name] = acc.mean()
    out[name + "_by_lead"] = acc.mean(["window", "channel"])
    out[name + "_by_channel"] = acc.mean(["window", "lead"])
    return {k: np.asarray(v.values, dtype=np.float64) for k, v in out.items()}


def ours(pred, true, clim, *, lat=None, lat2d=None, mask=None) -> dict:
    acc = ErrorAccumulator(pred.shape[1], lat, lat2d=lat2d, mask=mask, climatology=clim)
    for lo in range(0, len(pred), 4):  # streamed in batches
        acc.update(torch.from_numpy(pred[lo: lo + 4]), torch.from_numpy(true[lo: lo + 4]))
    return acc.result()


def differences(pred, true, clim, **grid) -> dict[str, float]:
    """Max |svqbench - scores| of every compared key (also used to report the agreement)."""
    mine, theirs = ours(pred, true, clim, **grid), library_scores(pred, true, clim, **grid)
    channels = pred.shape[2]
    out = {}
    for key, value in theirs.items():
        if key.endswith("_by_channel") and channels == 1:
            continue
        if key.startswith("mse_per_pixel") and key not in mine:
            continue
        assert key in mine, key
        out[key] = float(np.max(np.abs(np.asarray(mine[key], dtype=np.float64) - value)))
    return out


def synthetic(seed=0, b=9, t=3, c=2, h=6, w=8):
    rng = np.random.default_rng(seed)
    clim = rng.normal(270, 10, size=(c, h, w))
    true = clim + rng.normal(0, 3, size=(b, t, c, h, w)) + np.linspace(0, 2, t)[None, :, None, None, None]
    pred = 0.7 * true + 0.3 * clim + rng.normal(0.2, 1.5, size=true.shape)
    return pred, true, clim


@pytest.mark.parametrize("case", ["lat", "lat2d", "lat+mask", "lat2d+mask", "no-lat", "no-lat+mask"])
def test_weather_scores_equal_the_scores_library(case):
    pred, true, clim = synthetic(seed=len(case))
    h, w = pred.shape[-2:]
    grid = {}
    if "lat2d" in case:
        grid["lat2d"] = np.linspace(20, 70, h)[:, None] + np.linspace(-6, 6, w)[None, :]
    elif "lat" in case and "no-lat" not in case:
        grid["lat"] = np.linspace(-80, 80, h)
    if "mask" in case:
        mask = np.ones((h, w), bool)
        mask[2:4, 3:7] = False
        mask[0, 0] = False
        grid["mask"] = mask
    diffs = differences(pred, true, clim, **grid)
    weighted = "no-lat" not in case
    expected = {"acc_latweighted", "rmse_latweighted_by_lead", "mae_latweighted", "bias_latweighted_by_channel"} \
        if weighted else {"acc_unweighted", "mae_per_pixel", "bias_per_pixel_by_lead"}
    assert expected <= set(diffs)
    bad = {k: d for k, d in diffs.items() if not d <= 1e-12}  # measured: at most 2.2e-15
    assert not bad, bad


def test_a_wrong_weighting_would_be_caught():
    """The comparison is sharp: latitude weights normalised over all cells instead of the valid ones
    (what a mask must change) move the lat-weighted scores far beyond the tolerance."""
    pred, true, clim = synthetic(seed=3)
    h, w = pred.shape[-2:]
    lat = np.linspace(-80, 80, h)
    mask = np.ones((h, w), bool)
    mask[:2] = False  # the southern rows are masked
    theirs = library_scores(pred, true, clim, lat=lat, mask=mask)
    unmasked = ours(pred, true, clim, lat=lat)
    assert abs(unmasked["rmse_latweighted"] - theirs["rmse_latweighted"]) > 1e-3


def test_embedded_references_equal_the_scores_library(embedded_root):
    """The real test split: the input-mean reference svqbench stores in metrics.json, recomputed by
    `scores` from the same windows."""
    ds = open_prepared("embedded", embedded_root)
    windows = [ds.window("test", i) for i in range(len(ds.splits["test"]))]
    true = np.stack([y for _, y in windows]).astype(np.float64)
    pred = np.broadcast_to(np.stack([x.astype(np.float64).mean(0) for x, _ in windows])[:, None], true.shape)
    stored = evaluate_references(ds, split="test")["input_mean"]
    theirs = library_scores(pred, true, ds.climatology.astype(np.float64), lat=ds.lat)
    for key in ("rmse_latweighted", "mae_latweighted", "bias_latweighted", "acc_latweighted", "mae_per_pixel",
                "bias_per_pixel", "rmse_latweighted_by_lead", "acc_latweighted_by_lead", "mae_latweighted_by_lead"):
        np.testing.assert_allclose(stored[key], theirs[key], rtol=0, atol=1e-12, err_msg=key)
    assert float(np.sqrt(theirs["mse_per_pixel"])) == pytest.approx(stored["rmse_per_pixel"], rel=1e-9)


@pytest.mark.parametrize("masked", [False, True])
def test_regional_rmse_equals_the_scores_library(masked):
    """Regional RMSE against `scores`' weighted RMSE with WeatherBench 2's region weights: cos(lat)
    times the region's indicator (its ExtraTropicalRegion), masked cells NaN."""
    from svqbench.regions import parse_regions, region_mask, region_weights
    pred, true, clim = synthetic(seed=5)
    h, w = pred.shape[-2:]
    lat, lon = np.linspace(-80, 80, h), np.arange(w) * 45.0
    mask = None
    if masked:
        mask = np.ones((h, w), bool)
        mask[3, 1:4] = False
    specs = parse_regions("wb2 box=-40,40,300,90")
    insides = {r.name: region_mask(r, (h, w), lat=lat, lon=lon) for r in specs}
    acc = ErrorAccumulator(pred.shape[1], lat, mask=mask, climatology=clim,
                           regions={n: region_weights(m, lat=lat, valid=mask) for n, m in insides.items()})
    for lo in range(0, len(pred), 4):
        acc.update(torch.from_numpy(pred[lo: lo + 4]), torch.from_numpy(true[lo: lo + 4]))
    mine = acc.result()
    f, o = as_xr(pred), as_xr(true, mask)
    for name, inside in insides.items():
        weights = xr.DataArray(create_latitude_weights(lat)[:, None] * inside, dims=("lat", "lon"))
        assert mine[f"rmse_latweighted_{name}"] == pytest.approx(float(rmse(f, o, weights=weights)), rel=1e-12), name
        np.testing.assert_allclose(mine[f"rmse_latweighted_{name}_by_lead"],
                                   rmse(f, o, weights=weights, preserve_dims=["lead"]).values, rtol=1e-12, err_msg=name)
