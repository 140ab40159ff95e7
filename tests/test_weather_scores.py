"""WeatherBench-style scores of ErrorAccumulator: bias, channel-mean RMSE, lat-weighted MAE/bias,
ACC against a climatology, masks and 2-D latitudes, per-window errors (direct numpy formulas and
hand-computed values)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svqbench.metrics import ErrorAccumulator, cell_weights, latitude_weights


def accumulate(pred, true, *chunks, **kwargs) -> ErrorAccumulator:
    acc = ErrorAccumulator(pred.shape[1], kwargs.pop("lat", None), **kwargs)
    bounds = (0, *chunks, len(pred))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc.update(torch.from_numpy(pred[lo:hi]), torch.from_numpy(true[lo:hi]))
    return acc


def wb2_acc(pred, true, clim, w):
    """WeatherBench 2's ACC written out: per (window, lead, channel) over the grid, then the mean."""
    fa, oa = pred - clim, true - clim
    num = (w * fa * oa).sum((-2, -1))
    den = np.sqrt((w * fa ** 2).sum((-2, -1)) * (w * oa ** 2).sum((-2, -1)))
    return num / den  # (B, T, C)


@pytest.fixture
def weather():
    rng = np.random.default_rng(11)
    b, t, c, h, w = 6, 3, 2, 5, 7
    clim = rng.normal(280, 5, size=(c, h, w))
    true = clim + rng.normal(0, 2, size=(b, t, c, h, w))
    pred = true + rng.normal(0.3, 1, size=true.shape)
    lat = np.linspace(-70, 50, h)
    return pred, true, clim, lat


def test_bias_channel_rmse_and_latweighted_scores_equal_numpy(weather):
    pred, true, clim, lat = weather
    r = accumulate(pred, true, 2, 5, lat=lat, climatology=clim).result()
    err = pred - true
    assert r["bias_per_pixel"] == pytest.approx(err.mean(), rel=1e-12)
    np.testing.assert_allclose(r["bias_per_pixel_by_lead"], err.mean((0, 2, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(r["bias_per_pixel_by_channel"], err.mean((0, 1, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(r["bias_per_pixel_by_lead_by_channel"], err.mean((0, 3, 4)), rtol=1e-12)
    per_channel_rmse = np.sqrt((err ** 2).mean((0, 1, 3, 4)))
    np.testing.assert_allclose(r["rmse_per_pixel_by_channel"], per_channel_rmse, rtol=1e-12)
    assert r["rmse_mean_over_channels"] == pytest.approx(per_channel_rmse.mean(), rel=1e-12)
    np.testing.assert_allclose(r["rmse_mean_over_channels_by_lead"], np.sqrt((err ** 2).mean((0, 3, 4))).mean(1),
                               rtol=1e-12)
    np.testing.assert_allclose(r["rmse_per_pixel_by_lead_by_channel"], np.sqrt((err ** 2).mean((0, 3, 4))), rtol=1e-12)
    wts = latitude_weights(lat)[:, None]
    assert r["mae_latweighted"] == pytest.approx(np.mean(np.abs(err) * wts), rel=1e-12)
    assert r["bias_latweighted"] == pytest.approx(np.mean(err * wts), rel=1e-12)
    np.testing.assert_allclose(r["mae_latweighted_by_lead"], np.mean(np.abs(err) * wts, axis=(0, 2, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(r["bias_latweighted_by_channel"], np.mean(err * wts, axis=(0, 1, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(r["rmse_latweighted_by_lead_by_channel"], np.sqrt(np.mean(err ** 2 * wts, axis=(0, 3, 4))),
                               rtol=1e-12)
    acc = wb2_acc(pred, true, clim, wts)
    assert r["acc_latweighted"] == pytest.approx(acc.mean(), rel=1e-12)
    np.testing.assert_allclose(r["acc_latweighted_by_lead"], acc.mean((0, 2)), rtol=1e-12)
    np.testing.assert_allclose(r["acc_latweighted_by_channel"], acc.mean((0, 1)), rtol=1e-12)
    np.testing.assert_allclose(r["acc_latweighted_by_lead_by_channel"], acc.mean(0), rtol=1e-12)
    assert "acc_unweighted" not in r


def test_without_latitudes_nothing_is_latitude_weighted(weather):
    pred, true, clim, _ = weather
    r = accumulate(pred, true, climatology=clim).result()
    assert not any("latweighted" in k for k in r)
    assert r["acc_unweighted"] == pytest.approx(wb2_acc(pred, true, clim, 1.0).mean(), rel=1e-12)


def test_rmse_per_pixel_and_mean_over_channels_are_different_numbers():
    """Channel errors 1 K and 3 K everywhere: sqrt of the mean MSE is sqrt(5), the mean RMSE is 2."""
    true = np.zeros((2, 1, 2, 3, 3))
    pred = true.copy()
    pred[:, :, 0], pred[:, :, 1] = 1.0, -3.0
    r = accumulate(pred, true).result()
    assert r["rmse_per_pixel"] == pytest.approx(math.sqrt(5.0), rel=1e-15)
    assert r["rmse_mean_over_channels"] == pytest.approx(2.0, rel=1e-15)
    assert r["rmse_per_pixel_by_channel"] == [1.0, 3.0] and r["bias_per_pixel_by_channel"] == [1.0, -3.0]
    assert r["bias_per_pixel"] == -1.0


def test_acc_hand_values_and_undefined_forecasts():
    clim = np.zeros((1, 2, 2))
    truth_anom = np.array([[1.0, -1.0], [2.0, 0.0]])
    true = np.broadcast_to(truth_anom, (1, 3, 1, 2, 2)).copy()
    pred = np.stack([2 * truth_anom, -truth_anom, np.zeros((2, 2))])[None, :, None]  # leads: scaled, flipped, climatology
    r = accumulate(pred, true, climatology=clim).result()
    assert r["acc_unweighted_by_lead"] == [pytest.approx(1.0), pytest.approx(-1.0), None]
    assert r["acc_unweighted"] == pytest.approx(0.0)  # the mean over the two forecasts that have an anomaly
    # a hand-worked uncentered case: f' = (1, 0, 0, 1), o' = (1, 1, 0, 0): 1 / sqrt(2 * 2)
    r = accumulate(np.array([1.0, 0, 0, 1]).reshape(1, 1, 1, 2, 2), np.array([1.0, 1, 0, 0]).reshape(1, 1, 1, 2, 2),
                   climatology=clim).result()
    assert r["acc_unweighted"] == pytest.approx(0.5, rel=1e-15)
    # the climatology forecast itself has no ACC at all: None, never NaN in metrics.json
    r = accumulate(np.zeros((2, 1, 1, 2, 2)), np.repeat(true[:, :1], 2, 0), climatology=clim).result()
    assert r["acc_unweighted"] is None and r["acc_unweighted_by_lead"] == [None]


def test_mask_counts_and_sums_valid_cells_only(weather):
    pred, true, clim, lat = weather
    rng = np.random.default_rng(5)
    mask = rng.random(pred.shape[-2:]) > 0.35
    r = accumulate(pred, true, 3, lat=lat, mask=mask, climatology=clim).result()
    # what lies on masked cells cannot matter (multiplied by 0 before any sum: the very same numbers)
    junk = pred.copy()
    junk[..., ~mask] = 1e6
    assert accumulate(junk, true, 3, lat=lat, mask=mask, climatology=clim).result() == r
    err = (pred - true)[..., mask]  # (B, T, C, valid)
    assert r["mse_per_pixel"] == pytest.approx(np.mean(err ** 2), rel=1e-12)
    assert r["mae_per_pixel"] == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    assert r["bias_per_pixel"] == pytest.approx(np.mean(err), rel=1e-12)
    np.testing.assert_allclose(r["mse_per_pixel_by_lead"], np.mean(err ** 2, axis=(0, 2, 3)), rtol=1e-12)
    cos = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], mask.shape)[mask]
    wts = cos / cos.mean()  # normalised over the valid cells
    assert r["rmse_latweighted"] == pytest.approx(math.sqrt(np.mean(err ** 2 * wts)), rel=1e-12)
    assert r["mae_latweighted"] == pytest.approx(np.mean(np.abs(err) * wts), rel=1e-12)
    acc = wb2_acc(pred, true, clim, np.where(mask, np.cos(np.deg2rad(lat))[:, None], 0.0))
    assert r["acc_latweighted"] == pytest.approx(acc.mean(), rel=1e-12)
    # an all-valid mask is no mask: the same numbers bit for bit
    same = accumulate(pred, true, 3, lat=lat, mask=np.ones(mask.shape, bool), climatology=clim).result()
    assert same == accumulate(pred, true, 3, lat=lat, climatology=clim).result()


def test_two_dimensional_latitude(weather):
    pred, true, clim, lat = weather
    h, w = pred.shape[-2:]
    lat2d = lat[:, None] + np.linspace(-8, 8, w)[None, :]  # a tilted (rotated-pole-like) grid
    r = accumulate(pred, true, lat2d=lat2d, climatology=clim).result()
    wts = np.cos(np.deg2rad(lat2d)) / np.cos(np.deg2rad(lat2d)).mean()
    err = pred - true
    assert r["rmse_latweighted"] == pytest.approx(math.sqrt(np.mean(err ** 2 * wts)), rel=1e-12)
    assert r["bias_latweighted"] == pytest.approx(np.mean(err * wts), rel=1e-12)
    assert r["acc_latweighted"] == pytest.approx(wb2_acc(pred, true, clim, wts).mean(), rel=1e-12)
    # a 2-D latitude constant along rows is the 1-D case
    rows = accumulate(pred, true, lat2d=np.repeat(lat[:, None], w, 1), climatology=clim).result()
    assert rows["rmse_latweighted"] == pytest.approx(accumulate(pred, true, lat=lat).result()["rmse_latweighted"],
                                                     rel=1e-13)
    # weights: mean 1 over the valid cells, 0 on masked ones
    mask = np.ones((h, w), bool)
    mask[0, :3] = False
    cw = cell_weights((h, w), lat2d=lat2d, mask=mask)
    assert cw[mask].mean() == pytest.approx(1.0) and (cw[~mask] == 0).all()
    assert cell_weights((h, w)) is None


def test_per_window_errors(weather):
    pred, true, clim, lat = weather
    acc = accumulate(pred, true, 2, lat=lat, climatology=clim, keep_windows=True)
    mse, mae = acc.window_errors()
    err = pred - true
    np.testing.assert_allclose(mse, np.mean(err ** 2, axis=(1, 2, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(mae, np.mean(np.abs(err), axis=(1, 2, 3, 4)), rtol=1e-12)
    assert mse.mean() == pytest.approx(acc.result()["mse_per_pixel"], rel=1e-12)
    mask = np.ones(pred.shape[-2:], bool)
    mask[1:3, 2:] = False
    masked = accumulate(pred, true, mask=mask, keep_windows=True)
    np.testing.assert_allclose(masked.window_errors()[1], np.mean(np.abs(err[..., mask]), axis=(1, 2, 3)), rtol=1e-12)
    with pytest.raises(ValueError, match="keep_windows"):
        accumulate(pred, true).window_errors()


def test_video_results_gain_no_weather_keys():
    rng = np.random.default_rng(2)
    pred, true = rng.random((2, 2, 3, 8, 8)), rng.random((2, 2, 3, 8, 8))
    r = accumulate(pred, true, per_frame=True).result()
    assert not any(k.startswith(("bias", "acc", "rmse_mean_over")) for k in r)


# ---- regions (svqbench.regions) ------------------------------------------------------------------

def regional_reference(pred, true, clim, lat, lon, select) -> dict[str, np.ndarray]:
    """RMSE and ACC over one region with xarray's own weighted means (cos(lat) weights over the cells
    `select` keeps, WeatherBench 2's SliceRegion), independent of svqbench.regions."""
    import xarray as xr
    dims = ("window", "lead", "channel", "lat", "lon")
    f, o, c = (xr.DataArray(a, dims=dims[-a.ndim:], coords={"lat": lat, "lon": lon}) for a in (pred, true, clim))
    f, o, c = select(f), select(o), select(c)
    w = np.cos(np.deg2rad(f["lat"]))
    mse = ((f - o) ** 2).weighted(w).mean(("lat", "lon"))  # (window, lead, channel)
    fa, oa = f - c, o - c
    acc = (fa * oa).weighted(w).mean(("lat", "lon")) / np.sqrt(
        (fa ** 2).weighted(w).mean(("lat", "lon")) * (oa ** 2).weighted(w).mean(("lat", "lon")))
    return {"rmse": np.sqrt(float(mse.mean())), "rmse_by_lead": np.sqrt(mse.mean(("window", "channel")).values),
            "acc": float(acc.mean()), "acc_by_lead": acc.mean(("window", "channel")).values}


def regional_scores(pred, true, clim, lat, lon, spec, mask=None) -> dict:
    from svqbench.regions import parse_regions, region_mask, region_weights
    h, w = pred.shape[-2:]
    weights = {r.name: region_weights(region_mask(r, (h, w), lat=lat, lon=lon), lat=lat, valid=mask)
               for r in parse_regions(spec)}
    return accumulate(pred, true, 2, 5, lat=lat, climatology=clim, mask=mask, regions=weights).result()


def test_regional_rmse_and_acc_equal_xarray(weather):
    pred, true, clim, _ = weather
    lat, lon = np.array([-70.0, -20.0, 0.0, 20.0, 50.0]), np.arange(7) * 50.0  # rows on the band edges
    r = regional_scores(pred, true, clim, lat, lon, "wb2 box=-30,60,300,60")
    cases = {
        "tropics": lambda a: a.sel(lat=slice(-20, 20)),                     # bounds inclusive, as WB2
        "extratropics": lambda a: a.where((abs(a["lat"]) >= 20), drop=True),
        "northern_extratropics": lambda a: a.sel(lat=slice(20, 90)),
        "southern_extratropics": lambda a: a.sel(lat=slice(-90, -20)),
        "box": lambda a: a.sel(lat=slice(-30, 60)).where((a["lon"] >= 300) | (a["lon"] <= 60), drop=True),
    }
    for name, select in cases.items():
        ref = regional_reference(pred, true, clim, lat, lon, select)
        assert r[f"rmse_latweighted_{name}"] == pytest.approx(ref["rmse"], rel=1e-12), name
        np.testing.assert_allclose(r[f"rmse_latweighted_{name}_by_lead"], ref["rmse_by_lead"], rtol=1e-12, err_msg=name)
        assert r[f"acc_latweighted_{name}"] == pytest.approx(ref["acc"], rel=1e-12), name
        np.testing.assert_allclose(r[f"acc_latweighted_{name}_by_lead"], ref["acc_by_lead"], rtol=1e-12, err_msg=name)
    # the regions differ from each other and from the whole grid (the comparison is sharp)
    values = [r["rmse_latweighted"]] + [r[f"rmse_latweighted_{n}"] for n in cases]
    assert len({round(v, 9) for v in values}) == len(values)
    # existing keys are untouched by regions: the same numbers as without them
    plain = accumulate(pred, true, 2, 5, lat=lat, climatology=clim).result()
    assert {k: v for k, v in r.items() if k in plain} == plain


def test_regions_with_a_mask_count_valid_cells_only(weather):
    pred, true, clim, _ = weather
    lat, lon = np.array([-70.0, -20.0, 0.0, 20.0, 50.0]), np.arange(7) * 50.0
    mask = np.ones((5, 7), bool)
    mask[3, 2:5] = False
    r = regional_scores(pred, true, clim, lat, lon, "northern_extratropics", mask=mask)
    import xarray as xr
    valid = xr.DataArray(mask, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    ref = regional_reference(np.where(mask, pred, np.nan), np.where(mask, true, np.nan), clim, lat, lon,
                             lambda a: a.sel(lat=slice(20, 90)).where(valid.sel(lat=slice(20, 90))))
    assert r["rmse_latweighted_northern_extratropics"] == pytest.approx(ref["rmse"], rel=1e-12)
    assert r["acc_latweighted_northern_extratropics"] == pytest.approx(ref["acc"], rel=1e-12)


def test_region_mask_files_and_lon_wrap_pick_the_same_cells(tmp_path):
    from svqbench.regions import parse_regions, region_mask
    lat, lon = np.array([-70.0, -20.0, 0.0, 20.0, 50.0]), np.arange(7) * 50.0
    (box,) = parse_regions("box=-30,60,-60,60")  # -60 = 300 E: across the 0/360 meridian
    inside = region_mask(box, (5, 7), lat=lat, lon=lon)
    assert inside.sum() == 4 * 3 and inside[:, [0, 1, 6]].all(axis=1)[1:].all() and not inside[0].any()
    np.save(tmp_path / "m.npy", inside)
    (from_file,) = parse_regions(f"m={tmp_path / 'm.npy'}")
    np.testing.assert_array_equal(region_mask(from_file, (5, 7)), inside)
    import xarray as xr
    xr.Dataset({"m": (("y", "x"), inside.astype("int8"))}).to_netcdf(tmp_path / "m.nc")
    (nc,) = parse_regions(f"m={tmp_path / 'm.nc'}")
    np.testing.assert_array_equal(region_mask(nc, (5, 7)), inside)
    from svqbench.errors import UserError
    with pytest.raises(UserError, match=r"has shape \(5, 7\), the grid is \(4, 7\)"):
        region_mask(from_file, (4, 7))


@pytest.mark.parametrize("spec, message", [
    ("box=10,0", "LAT0 <= LAT1"), ("box=1,2,3", "NAME=LAT0,LAT1"), ("Box=0,1", "bad region name"),
    ("tropics=0,10", "bad region name"), ("atlantis", "unknown region 'atlantis'"), ("a=0,1 a=2,3", "given twice")])
def test_bad_region_specs_are_one_line_errors(spec, message):
    from svqbench.errors import UserError
    from svqbench.regions import parse_regions
    with pytest.raises(UserError, match=message) as info:
        parse_regions(spec)
    assert "\n" not in str(info.value)


def test_empty_regions_refused_when_named_left_out_when_implied(embedded_root):
    """The embedded grid is 15-60 N: WB2's southern band holds none of it."""
    from svqbench.data.prepared import open_prepared
    from svqbench.errors import UserError
    from svqbench.evaluate import regions_for
    ds = open_prepared("embedded", embedded_root, auto_prepare=False)
    weights, described = regions_for(ds, "wb2")
    assert set(weights) == {"tropics", "extratropics", "northern_extratropics"}
    assert described["southern_extratropics"] == {"definition": "lat -90..-20", "scored": False,
                                                  "reason": "no cell of the grid lies in it"}
    assert described["tropics"]["cells"] == 5 * 49  # rows 15, 16.25, 17.5, 18.75, 20
    for spec in ("southern_extratropics", "arctic=70,90", "pacific=20,40,100,180"):
        with pytest.raises(UserError, match="holds no cell of the grid of dataset embedded") as info:
            regions_for(ds, spec)
        assert "\n" not in str(info.value)


def test_run_with_an_empty_region_is_refused_before_training(embedded_root, tmp_path, monkeypatch, capsys):
    from helpers import cli
    monkeypatch.setenv("SVQBENCH_DATA", str(embedded_root))
    results = tmp_path / "results"
    code, _, err = cli(["run", "--dataset", "embedded", "--epochs", "1", "--regions", "arctic=70,90",
                        "--results-dir", str(results)], monkeypatch, capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "region arctic (lat 70..90) holds no cell" in err
    assert not results.exists() or not any(results.iterdir())  # nothing trained, nothing written


def test_regions_on_a_video_dataset_are_refused(tmp_path):
    from svqbench.config import RunConfig
    from svqbench.data.prepared import open_prepared, write_prepared
    from svqbench.errors import UserError
    from svqbench.evaluate import check_evaluation
    frames = np.random.default_rng(0).uniform(size=(30, 1, 8, 8)).astype(np.float32)
    windows = {"train": np.arange(10), "val": np.arange(12, 16), "test": np.arange(18, 24)}
    write_prepared(tmp_path / "clips", frames, windows, dict(name="clips", kind="video", channels=["gray"],
                                                             units=["1"], in_len=2, out_len=2))
    ds = open_prepared("clips", tmp_path, auto_prepare=False)
    check_evaluation(RunConfig(), ds)  # the default wb2 bands: nothing to refuse
    with pytest.raises(UserError, match="--regions is for weather datasets; dataset clips is of kind video"):
        check_evaluation(RunConfig(regions="box=0,10"), ds)
