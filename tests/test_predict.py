"""`svqbench predict`: forecasts of a split or of new input as NetCDF / zarr (WeatherBench 2 layout) or
.npy, in physical units; scoring the file reproduces metrics.json; bad input is one line, exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cftime
import numpy as np
import pytest
from helpers import cli
import xarray as xr

from svqbench.config import resolve
from svqbench.data.prepared import PreparedDataset, write_prepared
from svqbench.errors import UserError
from svqbench.experiment import run_experiment
from svqbench.predict import predict_run, read_forecast, score_forecast, skeleton, variables
from svqbench.runs import load_run

TINY = dict(hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, epochs=1, batch_size=8, warmup_epochs=0)
E1 = Path(__import__("iris_sample_data").path) / "E1_north_america.nc"
A1B = E1.with_name("A1B_north_america.nc")


@pytest.fixture(scope="module")
def run(embedded_root, tmp_path_factory):
    """A tiny finished run on the embedded dataset: (results dir, data dir)."""
    results = tmp_path_factory.mktemp("predict") / "results"
    run_experiment(resolve(cli=dict(TINY, codebook_size=32)), results_dir=results, data_dir=embedded_root,
                   run_id="r1")
    return results, embedded_root


def test_netcdf_forecast_has_the_weatherbench2_layout_and_reproduces_the_test_metrics(run):
    results, data = run
    path, summary = predict_run("r1", results_dir=results, data_dir=data)
    assert path == results / "r1" / "forecast_test.nc" and summary["forecasts"] == 26
    ds = PreparedDataset(data / "embedded")
    with xr.open_dataset(path) as f:
        da = f["air_temperature"]
        assert da.dims == ("time", "prediction_timedelta", "latitude", "longitude") and da.shape == (26, 5, 37, 49)
        assert da.dtype == np.float32 and da.attrs["units"] == "K"
        starts = ds.splits["test"]
        np.testing.assert_array_equal(f["window_start"], starts)
        # time = the source's time of the last input frame (mid-year, 360-day calendar); valid_time = the
        # source's times of the frames forecast; leads in whole years with units
        source = _source_times(A1B)
        np.testing.assert_array_equal(f["time"].values, source[starts + 9])
        np.testing.assert_array_equal(f["valid_time"].values, source[starts[:, None] + 10 + np.arange(5)])
        np.testing.assert_array_equal(f["time"].dt.year, [d.year for d in source[starts + 9]])
        assert f["time"].encoding["calendar"] == "360_day" and f["valid_time"].encoding["calendar"] == "360_day"
        assert f["time"].attrs["standard_name"] == "forecast_reference_time"
        assert f["valid_time"].attrs["standard_name"] == "time"
        np.testing.assert_array_equal(f["prediction_timedelta"], [1, 2, 3, 4, 5])
        assert f["prediction_timedelta"].attrs == {"standard_name": "forecast_period",
                                                   "long_name": "forecast lead time", "units": "years"}
        assert da.encoding["zlib"] and f["valid_time"].encoding["zlib"]
        np.testing.assert_array_equal(f["latitude"], ds.meta["grid"]["lat"])
        assert f["latitude"].attrs["units"] == "degrees_north" and f["longitude"].attrs["units"] == "degrees_east"
        assert f.attrs["Conventions"] == "CF-1.8" and f.attrs["svqbench_split"] == "test"
        # physical units: forecasts near the truth in kelvin, not z-scores
        truth = np.stack([ds.window("test", i)[1][:, 0] for i in range(26)])
        assert abs(float(da.mean()) - truth.mean()) < 5 and float(da.min()) > 200
    metrics = json.loads((results / "r1" / "metrics.json").read_text())["test"]
    scores = score_forecast(path, "r1", results_dir=results, data_dir=data)
    for key in ("mse_per_pixel", "mae_per_pixel", "rmse_latweighted", "mse_per_pixel_by_lead"):
        assert scores[key] == metrics[key], key  # exactly, not approximately


def _source_times(path: Path) -> np.ndarray:
    """A file's time coordinate as xarray decodes it (cftime for non-standard calendars)."""
    with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=None)) as f:
        return f["time"].values


@pytest.mark.parametrize("fmt", ["zarr", "npy"])
def test_zarr_and_npy_forecasts_round_trip_too(run, fmt, tmp_path):
    results, data = run
    path, _ = predict_run("r1", split="val", fmt=fmt, out=tmp_path / f"fc.{fmt}", results_dir=results, data_dir=data)
    values, attrs = read_forecast(path)
    ds = PreparedDataset(data / "embedded")
    assert values.shape == (len(ds.splits["val"]), 5, 1, 37, 49)
    np.testing.assert_array_equal(attrs["window_start"], ds.splits["val"])
    starts = ds.splits["val"]
    if fmt == "npy":
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["axes"] == ["sample", "lead", "channel", "y", "x"] and side["units"] == ["K"]
        assert side["calendar"] == "360_day" and side["init_time"][0] == str(_source_times(A1B)[starts[0] + 9])[:10]
    else:
        with xr.open_zarr(path) as f:  # zarr's reader decodes the same source times
            np.testing.assert_array_equal(f["valid_time"].values, _source_times(A1B)[starts[:, None] + 10 + np.arange(5)])
            assert f["time"].encoding["calendar"] == "360_day" and f["time"].dt.year.values[0] == 2029
    reference = load_run("r1", results_dir=results, data_dir=data)
    from svqbench.evaluate import evaluate_model
    expected = evaluate_model(reference.model, ds, reference.config, split="val")
    scores = score_forecast(path, "r1", results_dir=results, data_dir=data)
    assert scores["mse_per_pixel"] == expected["mse_per_pixel"]
    assert scores["mae_per_pixel"] == expected["mae_per_pixel"]


def test_forecast_file_equals_the_api_forecast_of_the_same_batches(run, tmp_path):
    results, data = run
    path, _ = predict_run("r1", out=tmp_path / "t.nc", results_dir=results, data_dir=data)
    loaded = load_run("r1", results_dir=results, data_dir=data)
    values, _ = read_forecast(path)
    x = np.stack([loaded.dataset.window("test", i)[0] for i in range(len(values))])
    np.testing.assert_array_equal(values, loaded.forecast(x, batch_size=loaded.config.batch_size))


def test_new_input_is_forecast_on_its_own_times(run, tmp_path):
    results, data = run
    path, summary = predict_run("r1", input=str(E1), var=["air_temperature"], out=tmp_path / "e1.nc",
                                results_dir=results, data_dir=data)
    with xr.open_dataset(E1) as src:
        x = src["air_temperature"].values.astype(np.float32)
    windows = np.stack([x[i: i + 10] for i in range(240 - 9)])[:, :, None]
    loaded = load_run("r1", results_dir=results, data_dir=data)
    with xr.open_dataset(path) as f:
        assert f["air_temperature"].shape == (231, 5, 37, 49) and "window_start" not in f.coords
        assert f["time"].values[0] == cftime.Datetime360Day(1869, 6, 1)  # the E1 file's own calendar
        assert f["valid_time"].values[0, -1] == cftime.Datetime360Day(1874, 6, 1)
        np.testing.assert_array_equal(f["air_temperature"].values[:, :, None],
                                      loaded.forecast(windows, batch_size=loaded.config.batch_size))
    with pytest.raises(UserError, match="forecasts new input, which has no truth"):
        score_forecast(path, "r1", results_dir=results, data_dir=data)


def test_input_stored_north_to_south_is_flipped_like_prepare_does(run, tmp_path):
    results, data = run
    kw = dict(var=["air_temperature"], results_dir=results, data_dir=data)
    flipped = _a1b(tmp_path, "flip.nc", lambda ds: ds.isel(latitude=slice(None, None, -1)))
    a, _ = predict_run("r1", input=str(A1B), out=tmp_path / "a.nc", **kw)
    b, _ = predict_run("r1", input=str(flipped), out=tmp_path / "b.nc", **kw)
    with xr.open_dataset(a) as fa, xr.open_dataset(b) as fb:
        np.testing.assert_array_equal(fb["latitude"], fa["latitude"])  # the run's grid, south to north
        np.testing.assert_array_equal(fb["air_temperature"], fa["air_temperature"])


def _a1b(tmp_path: Path, name: str, change) -> Path:
    with xr.open_dataset(A1B, decode_times=False) as ds:
        changed = change(ds.load())
    changed.to_netcdf(tmp_path / name)
    return tmp_path / name


def _nan(ds):
    ds["air_temperature"][5, 3, 4] = np.nan
    return ds


@pytest.mark.parametrize("name, change, var, message", [
    ("grid.nc", lambda ds: ds.isel(latitude=slice(1, None)), "air_temperature",
     r"grid 36 x 49 \(latitude, longitude\) differs from the run's 37 x 49"),
    ("lat.nc", lambda ds: ds.assign_coords(latitude=ds.latitude + 1), "air_temperature",
     r"latitudes differ from the run's grid \(16 .. 61, shape \(37,\) vs 15 .. 60"),
    ("units.nc", lambda ds: ds.assign(air_temperature=ds.air_temperature.assign_attrs(units="degC")),
     "air_temperature", "air_temperature is in units 'degC' but the run was trained in 'K'"),
    ("nan.nc", _nan, "air_temperature", r"NaN values at 1865-06-01 \(1 cell\(s\)\)"),
    ("step.nc", lambda ds: ds.isel(time=slice(None, None, 2)), "air_temperature",
     "time step 2 years differs from the run's 1 years"),
    ("short.nc", lambda ds: ds.isel(time=slice(0, 6)), "air_temperature",
     "6 time step\\(s\\), fewer than the run's 10 input frames"),
    ("var.nc", lambda ds: ds.rename(air_temperature="tas"), "tas",
     r"variable\(s\) tas differ from the run's channel\(s\) air_temperature"),
    ("var2.nc", lambda ds: ds, "tas", r"no variable 'tas'"),
])
def test_new_input_that_does_not_match_the_run_is_one_line(run, tmp_path, monkeypatch, capsys, name, change, var,
                                                           message):
    results, data = run
    path = _a1b(tmp_path, name, change)
    out = tmp_path / "out.nc"
    out.write_text("an earlier forecast")
    code, _, err = cli(["predict", "r1", "--input", str(path), "--var", var, "--out", str(out),
                        "--results-dir", str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert out.read_text() == "an earlier forecast"  # nothing already written is lost
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out.nc"])  # no temp files left


def test_bad_predict_options_are_one_line(run, tmp_path, monkeypatch, capsys):
    results, data = run
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    common = ["--results-dir", str(results), "--data-dir", str(data)]
    cases = [
        (["predict", "nope"], "no run 'nope'"),
        (["predict", "r1", "--split", "train"], "unknown split 'train'; choose one of: test, val"),
        (["predict", "r1", "--format", "grib"], "unknown --format 'grib'"),
        (["predict", "r1", "--format", "zarr", "--out", str(tmp_path / "x.nc")], "has the suffix of netcdf"),
        (["predict", "r1", "--out", str(folder)], "is a folder; give a file name"),
        (["predict", "r1", "--format", "zarr", "--out", str(folder)], "is a folder that is not a zarr store"),
        (["predict", "r1", "--var", "t"], "--var and --level describe an --input file"),
        (["predict", "r1", "--input", str(E1), "--split", "val"], "drop it with --input"),
        (["predict", "r1", "--input", str(E1)], "--input needs --var NAME"),
        (["predict", "r1", "--input", str(tmp_path / "missing.nc"), "--var", "t"],
         f"--input {tmp_path / 'missing.nc'}: no such file or store"),  # the flag the user gave, not --from
        (["predict", "r1", "--input", str(tmp_path / "none*.nc"), "--var", "t"],
         f"--input '{tmp_path / 'none*.nc'}' matches no files"),
        (["predict", "r1", "--input", str(folder), "--var", "t"],
         f"--input {folder}: the folder holds no .nc, .grib or .zarr inputs"),
    ]
    for args, message in cases:
        code, _, err = cli(args + common, monkeypatch, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert "--from" not in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert not list(tmp_path.glob("x.*"))


def test_cli_predict_writes_and_replaces_a_zarr_store(run, tmp_path, monkeypatch, capsys):
    results, data = run
    store = tmp_path / "fc.zarr"
    args = ["predict", "r1", "--split", "val", "--format", "zarr", "--out", str(store), "--results-dir", str(results),
            "--data-dir", str(data)]
    for _ in range(2):  # the second run replaces the first store whole
        code, out, err = cli(args, monkeypatch, capsys)
        assert code == 0, err
        assert f"wrote {store}: 26 forecasts of 5 steps of the val split (zarr)" in " ".join(out.split())
    with xr.open_zarr(store) as f:
        assert f["air_temperature"].sizes["time"] == 26
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.zarr"]


# ---- other grids and layouts --------------------------------------------------------------------

def test_curvilinear_hourly_dataset_keeps_native_dims_and_real_times(tmp_path):
    """A rotated grid (2-D latitude) with 6-hourly datetimes: dims y/x as in the file, datetime64 times
    and timedelta leads; the round trip is exact there too."""
    from svqbench.data import prepare
    n, rng = 90, np.random.default_rng(0)
    times = np.datetime64("2001-03-01T00") + np.arange(n) * np.timedelta64(6, "h")
    yy, xx = np.mgrid[0:8, 0:8]
    lat2d, lon2d = 40 + yy + 0.2 * xx, 10 + xx - 0.1 * yy
    values = (280 + 3 * np.sin(0.6 * xx + 0.4 * np.arange(n)[:, None, None]) + rng.normal(0, 0.2, (n, 8, 8)))
    src = xr.Dataset({"tas": (("time", "rlat", "rlon"), values.astype(np.float32),
                              {"units": "K", "coordinates": "lat lon"})},
                     coords={"time": times, "rlat": ("rlat", np.arange(8.0), {"standard_name": "grid_latitude"}),
                             "rlon": ("rlon", np.arange(8.0), {"standard_name": "grid_longitude"}),
                             "lat": (("rlat", "rlon"), lat2d, {"standard_name": "latitude", "units": "degrees_north"}),
                             "lon": (("rlat", "rlon"), lon2d, {"standard_name": "longitude", "units": "degrees_east"})})
    src.to_netcdf(tmp_path / "rot.nc")
    data, results = tmp_path / "data", tmp_path / "results"
    prepare("netcdf", root=data, from_paths=[tmp_path / "rot.nc"], var=["tas"], output_name="rot", in_len=4,
            out_len=2)
    cfg = resolve(cli=dict(TINY, dataset="rot", hid_s=4, hid_t=8, codebook_size=16), data_dir=data)
    metrics = run_experiment(cfg, results_dir=results, data_dir=data, run_id="c1")
    path, _ = predict_run("c1", results_dir=results, data_dir=data)
    ds = PreparedDataset(data / "rot")
    starts = ds.splits["test"]
    with xr.open_dataset(path) as f:
        assert f["tas"].dims == ("time", "prediction_timedelta", "rlat", "rlon")
        assert f["latitude"].dims == ("rlat", "rlon")
        np.testing.assert_allclose(f["latitude"], lat2d)
        np.testing.assert_array_equal(f["time"], times[starts + 3])
        np.testing.assert_array_equal(f["prediction_timedelta"], np.array([6, 12], dtype="timedelta64[h]"))
        np.testing.assert_array_equal(f["valid_time"], times[starts[:, None] + 4 + np.arange(2)])
        assert {"latitude", "longitude", "valid_time"} <= set(f["tas"].coords)
    scores = score_forecast(path, "c1", results_dir=results, data_dir=data)
    assert scores["mse_per_pixel"] == metrics["test"]["mse_per_pixel"]
    assert scores["mae_per_pixel"] == metrics["test"]["mae_per_pixel"]


def test_weatherbench_channels_become_wb2_variables_on_levels(tmp_path):
    """WeatherBench-M's 12 channels: four WB2-named variables on a `level` dim, datetime64 times from
    the dataset's year segments, and read back in the channel order."""
    from svqbench.data.weatherbench import TASKS
    from svqbench.predict import _NetCDF, frame_times, parse_step, split_times
    task = TASKS["weatherbench-m"]
    n = 40
    frames = np.random.default_rng(1).normal(size=(n, 12, 4, 8)).astype(np.float32)
    meta = dict(name="weatherbench-m", kind="weather", channels=task.channels, units=task.units, in_len=4, out_len=4,
                step="6 hours", grid={"lat": np.linspace(-60, 60, 4).tolist(), "lon": np.linspace(0, 315, 8).tolist()},
                times={"start": "2016-12-29T00:00", "step_hours": 6,
                       "segments": [["2016-12-29T00:00", 12], ["2017-01-01T00:00", 28]]}, splits={}, sources=[])
    ds = PreparedDataset(write_prepared(tmp_path / "weatherbench-m", frames,
                                        {"train": np.arange(10), "val": np.arange(15, 20), "test": np.arange(25, 33)},
                                        meta))
    assert [v.name for v in variables(ds, "weatherbench-m")] == [
        "relative_humidity", "temperature", "u_component_of_wind", "v_component_of_wind"]
    times = frame_times(ds)  # the year segments, in hours of the proleptic Gregorian calendar numpy uses
    assert times.units == "hours since 2016-12-29 00:00:00" and times.calendar == "proleptic_gregorian"
    np.testing.assert_array_equal(times.values[[0, 1, 12]], [0, 6, 72])
    starts = ds.splits["test"]
    base = skeleton(ds, dataset="weatherbench-m", times=split_times(ds, starts), step=parse_step("6 hours"),
                    window_start=starts, attrs={"svqbench_channels": json.dumps(
                        [[v.name, lev] for v in variables(ds, "weatherbench-m") for lev in v.levels])})
    block = np.stack([frames[s + 4: s + 8] for s in starts])  # any (N, T, C, H, W) block
    from svqbench.atomic import replacing
    with replacing(tmp_path / "wb.nc") as tmp:
        sink = _NetCDF(tmp, base, ds, "weatherbench-m")
        sink.write(0, block)
        sink.close()
    with xr.open_dataset(tmp_path / "wb.nc") as f:
        assert f["temperature"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
        np.testing.assert_array_equal(f["level"], [150, 500, 850])
        np.testing.assert_array_equal(f["temperature"].sel(level=500), block[:, :, task.channels.index("t500")])
        assert f["u_component_of_wind"].attrs["units"] == "m s-1"
        assert f["prediction_timedelta"].values[-1] == np.timedelta64(24, "h")
        first = np.datetime64("2017-01-01T00:00") + (starts[0] + 3 - 12) * np.timedelta64(6, "h")
        assert f["time"].values[0] == first and f["valid_time"].values[0, -1] == first + np.timedelta64(24, "h")
    values, _ = read_forecast(tmp_path / "wb.nc")
    np.testing.assert_array_equal(values, block)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """A tiny run on an RGB video dataset (kind video, values in [0, 1])."""
    root = tmp_path_factory.mktemp("video")
    rng = np.random.default_rng(2)
    frames = rng.uniform(0, 1, (60, 3, 16, 16)).astype(np.float32)
    meta = dict(name="clips", kind="video", channels=["r", "g", "b"], units=["intensity (0-1)"] * 3,
                value_range=[0.0, 1.0], in_len=3, out_len=2, grid={"height": 16, "width": 16}, step="1 frame",
                splits={}, sources=[])
    write_prepared(root / "data" / "clips", frames,
                   {"train": np.arange(30), "val": np.arange(35, 42), "test": np.arange(45, 56)}, meta)
    cfg = resolve(cli=dict(TINY, dataset="clips", hid_s=4, hid_t=8, codebook_size=16), data_dir=root / "data")
    run_experiment(cfg, results_dir=root / "results", data_dir=root / "data", run_id="v1")
    return root / "results", root / "data"


def test_video_runs_write_npy_with_png_strips(video_run, monkeypatch, capsys):
    results, data = video_run
    path, summary = predict_run("v1", strips=2, results_dir=results, data_dir=data)
    assert path == results / "v1" / "forecast_test.npy"
    array = np.load(path)
    assert array.shape == (11, 2, 3, 16, 16) and array.dtype == np.float32
    assert [Path(p).name for p in summary["strips"]] == ["sample_00000.png", "sample_00001.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in summary["strips"])
    metrics = json.loads((results / "v1" / "metrics.json").read_text())["test"]
    scores = score_forecast(path, "v1", results_dir=results, data_dir=data)
    # the same values, summed in another order (thread-count dependent): equal to 1e-9 relative
    for key in ("mse_per_frame", "mae_per_frame", "ssim", "psnr"):
        assert scores[key] == pytest.approx(metrics[key], rel=1e-9, abs=0), key
    code, _, err = cli(["predict", "v1", "--format", "netcdf", "--results-dir", str(results), "--data-dir", str(data)],
                       monkeypatch, capsys)
    assert code == 2 and "netcdf forecasts are for weather runs; a video run writes .npy" in err


# ---- real times, masked cells, old datasets (issue 19 item 4) -----------------------------------

OSTIA = E1.with_name("ostia_monthly.nc")


@pytest.fixture(scope="module")
def ostia_run(tmp_path_factory):
    """A tiny run on the real OSTIA monthly SST sample (mid-month stamps at 00:00 or 12:00, gregorian
    calendar, 2055 land cells): (results dir, data dir, metrics)."""
    from svqbench.data import prepare
    root = tmp_path_factory.mktemp("ostia")
    prepare("netcdf", root=root / "data", from_paths=[OSTIA], var=["surface_temperature"], output_name="ostia",
            in_len=4, out_len=4, splits="0.5,0.25,0.25")
    cfg = resolve(cli=dict(TINY, dataset="ostia", hid_s=4, hid_t=8, codebook_size=16), data_dir=root / "data")
    metrics = run_experiment(cfg, results_dir=root / "results", data_dir=root / "data", run_id="o1")
    return root / "results", root / "data", metrics


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_real_ostia_forecast_has_the_files_own_times_and_nan_land(ostia_run, fmt, tmp_path):
    results, data, metrics = ostia_run
    path, _ = predict_run("o1", fmt=fmt, out=tmp_path / f"fc.{'nc' if fmt == 'netcdf' else 'zarr'}",
                          results_dir=results, data_dir=data)
    ds = PreparedDataset(data / "ostia")
    starts = ds.splits["test"]
    source = _source_times(OSTIA)
    opener = xr.open_zarr if fmt == "zarr" else xr.open_dataset
    with opener(path) as f:
        np.testing.assert_array_equal(f["time"].values, source[starts + 3])
        np.testing.assert_array_equal(f["valid_time"].values, source[starts[:, None] + 4 + np.arange(4)])
        assert (f["valid_time"].dt.hour == 12).any() and (f["valid_time"].dt.hour == 0).any()  # as in the file
        assert f["time"].encoding["calendar"] == "gregorian"  # the file's own calendar name
        np.testing.assert_array_equal(f["time"].dt.year, source[starts + 3].astype("datetime64[Y]").astype(int) + 1970)
        first = str(source[starts[0] + 3])[:7]  # e.g. 2009-06: select by date as with any CF file
        assert f.sel(time=first)["time"].size == 1
        assert f["prediction_timedelta"].attrs["units"] == "months"
        np.testing.assert_array_equal(f["prediction_timedelta"], [1, 2, 3, 4])
        sst = f["surface_temperature"].values
    land = ~ds.mask
    assert land.sum() == 2055 and sst.shape == (len(starts), 4, 18, 432)
    assert np.isnan(sst[..., land]).all() and np.isfinite(sst[..., ds.mask]).all()
    scores = score_forecast(path, "o1", results_dir=results, data_dir=data)
    assert "acc_latweighted" in scores and "rmse_latweighted_by_lead" in scores
    assert scores == {k: metrics["test"][k] for k in scores}  # every score, exactly: land NaN changes none


def _monthly_file(path: Path, units: str, calendar: str, n: int = 40) -> np.ndarray:
    """Monthly means stamped mid-month at 12:00 on a small grid; returns the dates written."""
    import warnings
    dates = [cftime.datetime(1990 + (i // 12), i % 12 + 1, 15, 12, calendar=calendar, has_year_zero=True)
             for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cftime's CFWarning: a year-0 origin is what this file is about
        values = cftime.date2num(dates, units, calendar, has_year_zero=True)
    yy, xx = np.mgrid[0:8, 0:8]
    field = 280 + 5 * np.sin(0.5 * xx + 0.3 * np.arange(n)[:, None, None]) + yy
    xr.Dataset({"tas": (("time", "lat", "lon"), field.astype(np.float32), {"units": "K"})},
               coords={"time": ("time", values, {"units": units, "calendar": calendar, "axis": "T"}),
                       "lat": ("lat", np.linspace(40, 47, 8), {"units": "degrees_north"}),
                       "lon": ("lon", np.linspace(0, 7, 8), {"units": "degrees_east"})}).to_netcdf(path)
    return np.array(dates)


def test_standard_calendar_with_a_year_zero_origin_keeps_its_calendar_and_decodes_quietly(tmp_path):
    """`days since 0000-01-01` in the standard calendar (CF has no year 0 there): the forecast keeps
    the calendar name and the mid-month 12:00 stamps, and reads back without a CFWarning."""
    import warnings

    from svqbench.data import prepare
    dates = _monthly_file(tmp_path / "y0.nc", "days since 0000-01-01 00:00:00", "standard")
    data, results = tmp_path / "data", tmp_path / "results"
    prepare("netcdf", root=data, from_paths=[tmp_path / "y0.nc"], var=["tas"], output_name="y0", in_len=3,
            out_len=2)
    cfg = resolve(cli=dict(TINY, dataset="y0", hid_s=4, hid_t=8, codebook_size=16), data_dir=data)
    run_experiment(cfg, results_dir=results, data_dir=data, run_id="y")
    ds = PreparedDataset(data / "y0")
    starts = ds.splits["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CFWarning (or any other) fails the test
        path, _ = predict_run("y", results_dir=results, data_dir=data)
        with xr.open_dataset(path) as f:
            assert f["time"].encoding["calendar"] == "standard"
            want = [np.datetime64(f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}") for d in dates[starts + 2]]
            np.testing.assert_array_equal(f["time"].values, np.array(want, dtype="datetime64[ns]"))
            assert (f["valid_time"].dt.hour == 12).all() and (f["valid_time"].dt.day == 15).all()


def test_a_dataset_prepared_without_stored_times_is_refused_with_the_command_that_fixes_it(run, tmp_path, monkeypatch,
                                                                                           capsys):
    """An embedded dataset as an older svqbench prepared it (no times.npy): its times cannot be told,
    so predict refuses and names the re-prepare command; re-preparing lets the same run predict."""
    results, data = run
    old = tmp_path / "data"
    shutil.copytree(data, old)
    meta = json.loads((old / "embedded" / "meta.json").read_text())
    del meta["frame_times"]
    (old / "embedded" / "meta.json").write_text(json.dumps(meta))
    (old / "embedded" / "times.npy").unlink()
    args = ["predict", "r1", "--out", str(tmp_path / "fc.nc"), "--results-dir", str(results), "--data-dir", str(old)]
    code, _, err = cli(args, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "stores no frame times (prepared by an older svqbench); prepare it again with `svqbench prepare " \
           "embedded`" in err
    assert not (tmp_path / "fc.nc").exists()
    from svqbench.data import prepare
    prepare("embedded", root=old)
    code, _, err = cli(args, monkeypatch, capsys)
    assert code == 0, err


# ---- killed mid-write, full disk (issue 19 items 12, 13) ----------------------------------------

SLOW_PREDICT = """
import sys, time
import svqbench.predict as predict
ready = sys.argv[1]
for sink in (predict._NetCDF, predict._Zarr):
    def write(self, row, block, real=sink.write):
        real(self, row, block)
        open(ready, "w").close()  # the temp file holds forecasts now
        time.sleep(120)           # a slow disk: the test kills the process here
    sink.write = write
from svqbench.cli import main
sys.argv = ["svqbench", *sys.argv[2:]]
main()
"""


def _killed_mid_write(script: str, args: list[str], tmp_path: Path, signum: int):
    """Start `svqbench ARGS` through `script` (which stalls after its first write), send `signum` once it
    has written, and return the finished process (its stderr read)."""
    import signal  # noqa: F401  (signum values)
    import subprocess
    import sys
    import time
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", script, str(ready), *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate()[1] if proc.poll() is not None else "no write within 120 s"
    proc.send_signal(signum)
    proc.stderr_text = proc.communicate(timeout=60)[1]
    ready.unlink()
    return proc


@pytest.mark.parametrize("fmt", ["nc", "zarr"])
def test_a_killed_predict_leaves_a_temp_that_the_next_predict_removes(run, tmp_path, monkeypatch, capsys, fmt):
    import signal
    results, data = run
    out = tmp_path / "out"
    out.mkdir()
    args = ["predict", "r1", "--out", str(out / f"fc.{fmt}"), "--results-dir", str(results), "--data-dir", str(data)]
    proc = _killed_mid_write(SLOW_PREDICT, args, tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == [f".fc.{fmt}.tmp-{proc.pid}"]  # what a SIGKILL leaves
    code, _, err = cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [f"fc.{fmt}"]  # the dead writer's temp is gone


@pytest.mark.parametrize("fmt", ["nc", "zarr"])
def test_sigterm_stops_predict_cleanly_and_keeps_the_earlier_forecast(run, tmp_path, fmt):
    import signal
    results, data = run
    out = tmp_path / "out"
    out.mkdir()
    args = ["predict", "r1", "--split", "val", "--out", str(out / f"fc.{fmt}"), "--results-dir", str(results),
            "--data-dir", str(data)]
    predict_run("r1", out=out / f"fc.{fmt}", results_dir=results, data_dir=data)  # the earlier forecast (test)
    proc = _killed_mid_write(SLOW_PREDICT, args, tmp_path, signal.SIGTERM)
    err = proc.stderr_text.strip()
    assert proc.returncode == 143 and err == "interrupted by SIGTERM: no forecast was written; an earlier file at " \
                                             "that path is kept", err
    assert sorted(p.name for p in out.iterdir()) == [f"fc.{fmt}"]
    assert read_forecast(out / f"fc.{fmt}")[1]["svqbench_split"] == "test"


FULL_DISK = 64 * 1024  # bytes a process may write per file: the coordinates fit, the forecasts do not


def _small_disk():
    """In the child: files larger than FULL_DISK fail with EFBIG, as on a full disk (no SIGXFSZ kill)."""
    import resource
    import signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_DISK, FULL_DISK))


@pytest.mark.parametrize("fmt", ["nc", "zarr", "npy"])
def test_predict_on_a_full_disk_is_one_line_exit_2_and_keeps_the_earlier_forecast(run, tmp_path, fmt):
    import subprocess
    import sys
    results, data = run
    out = tmp_path / "out"
    out.mkdir()
    path = out / f"fc.{fmt}"
    predict_run("r1", split="val", out=path, results_dir=results, data_dir=data)
    before = sorted(p.name for p in out.iterdir())
    proc = subprocess.run([sys.executable, "-m", "svqbench", "predict", "r1", "--out", str(path), "--results-dir",
                           str(results), "--data-dir", str(data)], capture_output=True, text=True,
                          preexec_fn=_small_disk, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: cannot write {path}: "), err
    assert sorted(p.name for p in out.iterdir()) == before  # no temp file left
    assert read_forecast(path)[1]["svqbench_split"] == "val"  # the earlier forecast is whole


def test_predict_lead_20_rolls_the_model_out_with_cf_decodable_times(run, tmp_path, monkeypatch, capsys):
    results, data = run
    out = tmp_path / "lead20.nc"
    code, stdout, err = cli(["predict", "r1", "--lead", "20", "--out", str(out), "--results-dir", str(results),
                             "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 0 and "26 forecasts of 20 steps" in stdout, err
    ds = PreparedDataset(data / "embedded")
    starts = ds.splits["test"]
    with xr.open_dataset(out) as f:  # xarray's own decoding: cftime dates of the 360-day calendar
        assert f["air_temperature"].shape == (26, 20, 37, 49)
        np.testing.assert_array_equal(f["prediction_timedelta"], np.arange(1, 21))
        assert f["prediction_timedelta"].attrs["units"] == "years"
        init = f["time"].values
        assert isinstance(init[0], cftime.Datetime360Day)
        # every lead one year on, past the data's last year (2099) too: the last window reaches 2114
        years = np.array([[d.year for d in row] for row in f["valid_time"].values])
        np.testing.assert_array_equal(years, np.array([d.year for d in init])[:, None] + np.arange(1, 21))
        assert years.max() == 2114 and f["valid_time"].encoding["calendar"] == "360_day"
        rolled = f["air_temperature"].values
    base, _ = predict_run("r1", results_dir=results, data_dir=data, out=tmp_path / "base.nc")
    with xr.open_dataset(base) as f:
        np.testing.assert_array_equal(rolled[:, :5], f["air_temperature"].values)  # one pass: the plain forecast
    # leads 6..10: the model applied to the newest 10 frames, the last 5 of them its own forecast
    loaded = load_run("r1", results_dir=results, data_dir=data)
    x = np.stack([ds.window("test", i)[0] for i in range(len(starts))])
    fed = np.concatenate([x, rolled[:, :5, None]], axis=1)[:, -10:]
    np.testing.assert_allclose(rolled[:, 5:10], loaded.forecast(fed)[:, :, 0], rtol=1e-5, atol=1e-4)
    npy, summary = predict_run("r1", results_dir=results, data_dir=data, out=tmp_path / "lead.npy", lead=7)
    assert np.load(npy).shape == (26, 7, 1, 37, 49) and summary["lead_steps"] == 7
    np.testing.assert_allclose(np.load(npy)[:, :, 0], rolled[:, :7], rtol=1e-6, atol=1e-4)
    code, _, err = cli(["predict", "r1", "--lead", "0", "--results-dir", str(results), "--data-dir", str(data)],
                       monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: --lead must be >= 1, got 0"


def test_ostia_rolls_out_past_the_data_with_monthly_times_and_nan_land_and_scores_like_the_run(ostia_run, tmp_path):
    results, data, metrics = ostia_run
    from svqbench.score import evaluate_leads, score_file
    path, _ = predict_run("o1", out=tmp_path / "fc.nc", results_dir=results, data_dir=data, lead=10)
    ds = PreparedDataset(data / "ostia")
    with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as f:
        np.testing.assert_array_equal(f["prediction_timedelta"], np.arange(1, 11))
        valid = f["valid_time"].values
        months = np.array([[d.year * 12 + d.month for d in row] for row in valid])
        np.testing.assert_array_equal(np.diff(months, axis=1), 1)  # one month a lead, past the file's end too
        assert months.max() > max(d.year * 12 + d.month for d in ds.times.dates())
        sst = f["surface_temperature"].values
    assert np.isnan(sst[..., ~ds.mask]).all() and np.isfinite(sst[..., ds.mask]).all()
    # the file (NaN land, 10 leads) scored by `score` on its first 4 leads: the run's test scores
    _, scored = score_file(path, dataset="ostia", name="o1-file", beside="o1", results_dir=results, data_dir=data)
    for key in ("mse_per_pixel", "rmse_latweighted", "acc_latweighted"):
        assert scored["test"][key] == pytest.approx(metrics["test"][key], rel=1e-6), key
    assert scored["external"]["leads_not_scored"] == 6
    _, record = evaluate_leads("o1", 6, results_dir=results, data_dir=data)
    np.testing.assert_allclose([r["model_rmse"] for r in record["leads"][:4]],
                               metrics["test"]["rmse_latweighted_by_lead"], rtol=1e-6)
