"""The seasonal climatology (svqbench.climatology) against an independent xarray computation.

Synthetic series with a known seasonal (and diurnal) cycle in three calendars and steps: daily
360_day, monthly noleap, 6-hourly standard (with a leap year). The reference is computed here with
xarray's own calendar handling — `groupby("time.month")`, or `groupby("time.dayofyear")` (per
`time.hour`) smoothed with WeatherBench 2's window, written out from its definition — and ACC and
the climatology forecast's RMSE are computed from it with numpy. The static climatology gives a
visibly worse climatology forecast on the same data.
"""
from __future__ import annotations

import cftime
import numpy as np
import pytest
import torch
import xarray as xr

from svqbench.climatology import days_in_year, wb2_window_weights
from svqbench.config import RunConfig
from svqbench.data.prepared import FrameTimes, open_prepared, write_prepared
from svqbench.evaluate import climatology_for, evaluate_model, evaluate_references

LAT = np.array([-50.0, -10.0, 30.0, 70.0])
LON = np.arange(6) * 60.0
IN_LEN, OUT_LEN = 2, 3
WB2_WINDOW_DAYS = 61  # WeatherBench 2's --window_size default (scripts/compute_climatology.py)


def make_dataset(root, name: str, dates, season_of, *, seed: int = 0):
    """Frames 280 + 10 cos(season) (sign flipped south of the equator) + a diurnal term + noise, with
    train / val / test the first 70% / next 15% / last 15% of the windows (contiguous)."""
    rng = np.random.default_rng(seed)
    phase = season_of(dates)  # radians per frame
    hours = np.array([d.hour for d in dates], dtype=float)
    sign = np.sign(LAT)[:, None] * np.ones((1, len(LON)))
    frames = (280.0 + 10.0 * np.cos(phase)[:, None, None] * sign + 2.0 * np.sin(2 * np.pi * hours / 24)[:, None, None]
              + rng.normal(0, 1.0, (len(dates), len(LAT), len(LON))))[:, None].astype(np.float32)
    n = len(dates) - IN_LEN - OUT_LEN + 1
    a, b = int(n * 0.7), int(n * 0.85)
    windows = {"train": np.arange(0, a - IN_LEN - OUT_LEN), "val": np.arange(a, b - IN_LEN - OUT_LEN),
               "test": np.arange(b, n)}
    meta = dict(name=name, kind="weather", channels=["t"], units=["K"], in_len=IN_LEN, out_len=OUT_LEN,
                grid={"lat": LAT.tolist(), "lon": LON.tolist()})
    write_prepared(root / name, frames, windows, meta, times=FrameTimes.encode(dates))
    return open_prepared(name, root, auto_prepare=False)


def daily_360(root):
    dates = [cftime.Datetime360Day(2000, 1, 1) + __import__("datetime").timedelta(days=i) for i in range(360 * 7)]
    return make_dataset(root, "daily360", np.array(dates), lambda d: np.array([2 * np.pi * x.dayofyr / 360 for x in d]))


def monthly_noleap(root):
    dates = np.array([cftime.DatetimeNoLeap(1950 + i // 12, i % 12 + 1, 15) for i in range(12 * 40)])
    return make_dataset(root, "monthly", dates, lambda d: np.array([2 * np.pi * x.month / 12 for x in d]))


def six_hourly_standard(root):
    import datetime
    start = cftime.DatetimeGregorian(2003, 1, 1)
    dates = np.array([start + datetime.timedelta(hours=6 * i) for i in range(4 * 365 * 5 + 4)])
    return make_dataset(root, "sixhourly", dates, lambda d: np.array([2 * np.pi * x.dayofyr / 365.25 for x in d]))


def train_frames(ds) -> np.ndarray:
    return np.unique((ds.splits["train"][:, None] + np.arange(IN_LEN + OUT_LEN)).ravel())


def reference_climatology(ds) -> xr.DataArray:
    """The climatology at every frame's time, from xarray: month of year, or day of year (per hour)
    smoothed with WeatherBench 2's 61-day triangular window (its utils.create_window_weights and
    smooth_dayofyear_variable_with_rolling_window, written out here)."""
    dates = ds.times.dates()
    frames = np.asarray(ds.frames[:, 0], dtype=np.float64)
    da = xr.DataArray(frames, dims=("time", "lat", "lon"), coords={"time": xr.CFTimeIndex(dates)})
    train = da.isel(time=train_frames(ds))
    months = {d.month for d in dates}
    if len(months) == 12 and len({d.day for d in dates}) == 1:  # monthly: month of year, unsmoothed
        clim = train.groupby("time.month").mean()
        return clim.sel(month=da["time"].dt.month).drop_vars("month")
    half = WB2_WINDOW_DAYS // 2
    weights = np.concatenate([np.linspace(0, 1, half + 1), np.linspace(1, 0, half + 1)[1:]])
    weights = weights / weights.mean()
    out = xr.zeros_like(da)
    for hour in np.unique(da["time"].dt.hour.values):
        raw = train.isel(time=train["time"].dt.hour.values == hour).groupby("time.dayofyear").mean()
        assert raw.sizes["dayofyear"] == days_in_year(dates[0].calendar)  # every day of year is in the train split
        smooth = sum(raw.roll(dayofyear=i) * weights[i + half] for i in range(-half, half + 1)) / len(weights)
        at = da["time"].dt.hour.values == hour
        out[at] = smooth.sel(dayofyear=da["time"].dt.dayofyear[at]).values
    return out


def scores_against(ds, clim_at_frames: np.ndarray, forecast: str) -> tuple[float, float]:
    """(ACC of `forecast`, lat-weighted RMSE of the climatology forecast) on the test split, numpy."""
    starts = ds.splits["test"]
    target = starts[:, None] + IN_LEN + np.arange(OUT_LEN)
    truth = np.asarray(ds.frames[:, 0], np.float64)[target]                   # (N, T, H, W)
    clim = clim_at_frames[target]
    pred = np.repeat(np.asarray(ds.frames[:, 0], np.float64)[starts + IN_LEN - 1][:, None], OUT_LEN, 1) \
        if forecast == "persistence" else clim
    w = np.cos(np.deg2rad(LAT))[:, None] / np.cos(np.deg2rad(LAT)).mean()
    fa, oa = pred - clim, truth - clim
    acc = (w * fa * oa).sum((2, 3)) / np.sqrt((w * fa ** 2).sum((2, 3)) * (w * oa ** 2).sum((2, 3)))
    rmse_clim = np.sqrt(np.mean(w * (clim - truth) ** 2))
    return float(acc.mean()), float(rmse_clim)


@pytest.mark.parametrize("build, kind", [(daily_360, "day_of_year"), (monthly_noleap, "month_of_year"),
                                         (six_hourly_standard, "day_of_year_time_of_day")])
def test_seasonal_climatology_acc_and_rmse_equal_xarray(tmp_path, build, kind):
    ds = build(tmp_path)
    clim = climatology_for(ds, "seasonal")
    assert clim.kind == kind and clim.reason is None
    reference = reference_climatology(ds).values
    np.testing.assert_allclose(clim.at_frames(np.arange(len(ds.frames)))[:, 0], reference, rtol=0, atol=2e-4)

    refs = evaluate_references(ds, cfg=RunConfig(climatology="seasonal", regions="none"))
    acc, rmse_clim = scores_against(ds, reference, "persistence")
    assert refs["climatology"]["kind"] == kind
    assert refs["persistence"]["acc_latweighted"] == pytest.approx(acc, rel=1e-5)
    assert refs["climatology"]["rmse_latweighted"] == pytest.approx(rmse_clim, rel=1e-5)
    assert refs["climatology"]["acc_latweighted"] is None  # the climatology has no anomaly

    # the static climatology (one train mean per cell) misses the 10 K seasonal cycle
    static = evaluate_references(ds, cfg=RunConfig(climatology="static", regions="none"))
    assert static["climatology"]["kind"] == "static"
    assert static["climatology"]["rmse_latweighted"] > 2 * refs["climatology"]["rmse_latweighted"]
    static_acc, _ = scores_against(ds, np.broadcast_to(ds.climatology[0], reference.shape), "persistence")
    assert static["persistence"]["acc_latweighted"] == pytest.approx(static_acc, rel=1e-5)
    assert abs(static_acc - acc) > 0.05


class Persistence(torch.nn.Module):
    """The last input frame at every lead (in normalised space): the model path of evaluate_model."""

    def forward(self, x):
        return x[:, -1:].expand(-1, OUT_LEN, -1, -1, -1), None


def test_model_scores_use_the_seasonal_climatology_and_name_it(tmp_path):
    ds = daily_360(tmp_path)
    cfg = RunConfig(batch_size=7, regions="none")
    scores = evaluate_model(Persistence(), ds, cfg)
    refs = evaluate_references(ds, cfg=cfg)
    assert scores["acc_latweighted"] == pytest.approx(refs["persistence"]["acc_latweighted"], rel=1e-4)
    described = scores["metric_set"]["climatology"]
    assert described["used"] == "seasonal" and described["kind"] == "day_of_year"
    assert described["calendar"] == "360_day" and "61-day triangular" in described["smoothing"]
    static = evaluate_model(Persistence(), ds, RunConfig(batch_size=7, regions="none", climatology="static"))
    assert static["metric_set"]["climatology"]["used"] == "static"
    assert static["mse_per_pixel"] == scores["mse_per_pixel"]  # only ACC depends on the climatology
    assert abs(static["acc_latweighted"] - scores["acc_latweighted"]) > 0.05


def test_yearly_data_have_no_season_and_use_static_saying_why(embedded_root):
    ds = open_prepared("embedded", embedded_root, auto_prepare=False)
    clim = climatology_for(ds, "seasonal")
    assert clim.kind == "static" and "no season" in clim.reason
    assert clim.describe()["requested"] == "seasonal" and clim.describe()["used"] == "static"
    # and its numbers are those of the static climatology, bit for bit
    seasonal = evaluate_references(ds)
    static = evaluate_references(ds, cfg=RunConfig(climatology="static"))
    for name in ("persistence", "climatology", "input_mean"):
        assert {k: v for k, v in seasonal[name].items() if k != "kind"} == \
            {k: v for k, v in static[name].items() if k != "kind"}


def test_a_dataset_without_frame_times_uses_static_saying_why(tmp_path):
    frames = np.random.default_rng(0).normal(size=(40, 1, 4, 6)).astype(np.float32)
    windows = {"train": np.arange(20), "val": np.arange(22, 28), "test": np.arange(30, 35)}
    meta = dict(name="notimes", kind="weather", channels=["t"], units=["K"], in_len=IN_LEN, out_len=OUT_LEN,
                grid={"lat": LAT.tolist()})
    write_prepared(tmp_path / "notimes", frames, windows, meta)
    clim = climatology_for(open_prepared("notimes", tmp_path, auto_prepare=False), "seasonal")
    assert clim.kind == "static" and "stores no frame times" in clim.reason


def test_window_weights_are_wb2s():
    w = wb2_window_weights(61)
    assert len(w) == 61 and w[0] == 0 and w[-1] == 0 and w[30] == w.max()
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w[:31] / w[30], np.linspace(0, 1, 31), atol=1e-12)
    with pytest.raises(ValueError):
        wb2_window_weights(60)


def test_a_file_prepared_by_prepare_netcdf_gets_its_seasonal_climatology(tmp_path):
    """The real path: a daily noleap NetCDF file -> `prepare netcdf` (stores the frames' times) ->
    a day-of-year climatology in that calendar, equal to xarray's on the prepared frames."""
    import datetime

    from svqbench.data import netcdf
    dates = np.array([cftime.DatetimeNoLeap(1990, 1, 1) + datetime.timedelta(days=i) for i in range(365 * 6)])
    rng = np.random.default_rng(3)
    doy = np.array([d.dayofyr for d in dates])
    values = 280 + 8 * np.cos(2 * np.pi * doy / 365)[:, None, None] + rng.normal(0, 1, (len(dates), len(LAT), len(LON)))
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), values.astype(np.float32), {"units": "K"})},
                    coords={"time": dates, "lat": ("lat", LAT, {"units": "degrees_north"}),
                            "lon": ("lon", LON, {"units": "degrees_east"})})
    ds.to_netcdf(tmp_path / "tas.nc")
    netcdf.prepare(tmp_path / "data" / "tas", from_paths=[tmp_path / "tas.nc"], var=["tas"], output_name="tas",
                   in_len=IN_LEN, out_len=OUT_LEN, progress=False)
    prepared = open_prepared("tas", tmp_path / "data", auto_prepare=False)
    assert prepared.times.calendar == "noleap"
    clim = climatology_for(prepared, "seasonal")
    assert clim.kind == "day_of_year" and clim.calendar == "noleap" and len(clim.table) == 365
    np.testing.assert_allclose(clim.at_frames(np.arange(len(prepared.frames)))[:, 0],
                               reference_climatology(prepared).values, rtol=0, atol=2e-4)


@pytest.mark.parametrize("build", [daily_360, monthly_noleap, six_hourly_standard])
def test_climatology_by_date_equals_by_frame_and_reaches_past_the_data(tmp_path, build):
    import datetime
    ds = build(tmp_path)
    clim = climatology_for(ds, "seasonal")
    dates = ds.times.dates()
    np.testing.assert_array_equal(clim.at_dates(dates), clim.at_frames(np.arange(len(dates))))
    # a date a year after the last frame (a roll-out's lead) has the climatology of its point in the year
    later = dates[0].replace(year=dates[-1].year + 2)  # the first frame's day of year (in January)
    np.testing.assert_array_equal(clim.at_dates([later])[0], clim.at_frames([0])[0])
    if clim.kind == "day_of_year_time_of_day":
        with pytest.raises(ValueError, match="no climatology for time of day 3600 s"):
            clim.at_dates([dates[0] + datetime.timedelta(hours=1)])
