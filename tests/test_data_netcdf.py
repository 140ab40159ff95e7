"""`svqbench prepare netcdf`: a researcher's own gridded file, and the CLI around `prepare`/`datasets`."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cftime
import netCDF4

import numpy as np
import pytest
import xarray as xr
from helpers import without_read_override

from svqbench.config import resolve
from svqbench.data import prepare
from svqbench.data.prepared import PreparedDataset
from svqbench.errors import UserError

SAMPLES = Path(__import__("iris_sample_data").__file__).parent / "sample_data"


def user_dataset(times=None) -> xr.Dataset:
    times = np.arange(np.datetime64("2000-01-01"), np.datetime64("2003-01-01"), np.timedelta64(1, "D")) \
        if times is None else times
    n = len(times)
    lat, lon = np.linspace(30, 60, 8), np.linspace(-10, 20, 12)
    base = np.arange(n, dtype=np.float32)[:, None, None] * 0.01 + lat[None, :, None].astype(np.float32)
    t = np.stack([base + 200, base + 250], axis=1) + 0 * lon
    return xr.Dataset({"t": (("time", "level", "latitude", "longitude"), t.astype(np.float32), {"units": "K"}),
                       "sst": (("time", "latitude", "longitude"), (base + 0 * lon).astype(np.float32),
                               {"units": "degC"})},
                      coords={"time": times, "level": [500.0, 850.0], "latitude": lat, "longitude": lon})


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "reanalysis.nc"
    user_dataset().to_netcdf(path)
    return path


def test_netcdf_level_years_and_values(user_file, tmp_path):
    path = prepare("netcdf", root=tmp_path, from_paths=[user_file], var=["t"], level=850, output_name="my-t850",
                   years="2000,2001,2002", in_len=4, out_len=2)
    assert path == tmp_path / "my-t850"
    ds = PreparedDataset(path)
    assert ds.frames.shape == (1096, 1, 8, 12) and ds.channels == ["t850"] and ds.meta["units"] == ["K"]
    assert {s: len(w) for s, w in ds.splits.items()} == {"train": 366 - 5, "val": 365 - 5, "test": 365 - 5}
    np.testing.assert_array_equal(ds.frames[:, 0], user_dataset()["t"].sel(level=850).values)
    assert ds.meta["step"] == "1 days" and ds.meta["splits"]["val"]["first"].startswith("2001-01-01")
    np.testing.assert_allclose(ds.mean, [user_dataset()["t"].sel(level=850).values[:366].mean()], rtol=1e-6)


def test_netcdf_default_fractions_time_range_and_two_channels(user_file, tmp_path):
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[user_file], var=["sst", "t"], level=500,
                                 time="2001-01-01:2001-12-31"))
    assert ds.path.name == "netcdf-sst-t" and ds.frames.shape == (365, 2, 8, 12)
    assert ds.channels == ["sst", "t500"] and (ds.in_len, ds.out_len) == (12, 12)
    a, b = int(365 * 0.7), int(365 * 0.85)
    assert [ds.splits[s][0] for s in ("train", "val", "test")] == [0, a, b]
    assert ds.splits["train"][-1] == a - 24 and ds.splits["test"][-1] == 365 - 24


@pytest.mark.parametrize("kwargs, message", [
    (dict(var=["t"]), r"t has a level dimension \(500, 850\); choose one with --level"),
    (dict(var=["t"], level=700), "--level 700 not in t's level values"),
    (dict(var=["sst"], level=850), "sst has no level dimension; drop --level"),
    (dict(var=["zz"]), r"no variable 'zz' \(found: t, sst\)"),
    (dict(var=["sst"], years="2000,2001,2004"), "test year 2004 is missing"),
    (dict(var=["sst"], time="2001-99:"), "bad --time '2001-99:'"),
    (dict(var=["sst"], output_name="kth"), "--name 'kth' is a built-in dataset"),
    (dict(var=["sst"], output_name="../escape"), "bad --name '../escape': use letters, digits"),
])
def test_netcdf_bad_options_are_named(user_file, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        prepare("netcdf", root=tmp_path, from_paths=[user_file], **kwargs)


def test_netcdf_irregular_time_and_nans_are_named(tmp_path):
    times = np.arange(np.datetime64("2000-01-01"), np.datetime64("2000-03-01"), np.timedelta64(1, "D"))
    user_dataset(np.delete(times, 10)).to_netcdf(tmp_path / "gap.nc")
    with pytest.raises(UserError, match=r"gap.nc: time step changes between 2000-01-10.* and 2000-01-12"):
        prepare("netcdf", root=tmp_path, from_paths=[tmp_path / "gap.nc"], var=["sst"])
    ds = user_dataset(times)
    ds["sst"][20, 1, 1] = np.nan
    ds.to_netcdf(tmp_path / "nan.nc")
    with pytest.raises(UserError, match=r"nan.nc: sst has NaNs that move: at 2000-01-21 1 cell\(s\) differ"):
        prepare("netcdf", root=tmp_path, from_paths=[tmp_path / "nan.nc"], var=["sst"], in_len=3, out_len=3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_netcdf_zarr_store(tmp_path):
    pytest.importorskip("zarr")
    times = np.arange(np.datetime64("2000-01-01"), np.datetime64("2000-04-01"), np.timedelta64(1, "D"))
    user_dataset(times).to_zarr(tmp_path / "user.zarr", zarr_format=2)
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[tmp_path / "user.zarr"], var=["sst"],
                                 in_len=3, out_len=3))
    np.testing.assert_array_equal(ds.frames[:, 0], user_dataset(times)["sst"].values)


def test_user_dataset_gets_the_generic_preset(user_file, tmp_path):
    prepare("netcdf", root=tmp_path, from_paths=[user_file], var=["sst"], output_name="mine")
    cfg = resolve(cli={"dataset": "mine"}, data_dir=tmp_path)
    assert cfg.dataset == "mine" and cfg.scale == "quick"
    assert resolve(cli={"dataset": "mine", "scale": "paper"}, data_dir=tmp_path).hid_t == 256
    with pytest.raises(UserError, match="unknown dataset 'theirs'.*svqbench prepare netcdf --name theirs"):
        resolve(cli={"dataset": "theirs"}, data_dir=tmp_path)


def cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SVQBENCH_DATA=str(root), OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "svqbench", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_prepare_netcdf_then_datasets_lists_it(user_file, tmp_path):
    res = cli("prepare", "netcdf", "--from", str(user_file), "--var", "sst", "--name", "my-sst",
              "--in-len", "4", "--out-len", "4", root=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "prepared my-sst" in res.stdout
    res = cli("datasets", root=tmp_path)
    assert res.returncode == 0
    row = next(line for line in res.stdout.splitlines() if "my-sst" in line)
    assert "(1096, 1, 8, 12)" in row and "4 -> 4" in row and "760/157/158" in row and "ready" in row
    assert "not prepared" in next(line for line in res.stdout.splitlines() if "weatherbench-m" in line)
    res = cli("prepare", "kth", "--var", "x", root=tmp_path)
    assert res.returncode == 2 and "option(s) --var do not apply to dataset 'kth'" in res.stderr
    assert "Traceback" not in res.stderr


def test_user_dataset_trains_end_to_end(tmp_path, tiny_config):
    """The generic preset and a prepared user dataset go through `run_experiment` (1 tiny epoch)."""
    from svqbench.experiment import run_experiment
    times = np.arange(np.datetime64("2000-01-01"), np.datetime64("2000-07-01"), np.timedelta64(1, "D"))
    land = user_dataset(times)
    land["sst"][:, :2, :3] = np.nan  # SST over land: masked, not refused
    land.to_netcdf(tmp_path / "u.nc")
    path = prepare("netcdf", root=tmp_path / "data", from_paths=[tmp_path / "u.nc"], var=["sst", "t"], level=850,
                   output_name="mine", in_len=4, out_len=4)
    assert PreparedDataset(path).mask.sum() == 8 * 12 - 6
    cfg = resolve(cli={**tiny_config().to_dict(), "dataset": "mine", "epochs": 1}, data_dir=tmp_path / "data")
    metrics = run_experiment(cfg, results_dir=tmp_path / "results", data_dir=tmp_path / "data", run_id="mine-1")
    saved = (tmp_path / "results" / "mine-1" / "config.json").read_text()
    assert '"dataset": "mine"' in saved and metrics["test"]["mse_per_pixel"] > 0



# ---- files in the conventions climate models and reanalyses write --------------------------------


def cf_file(path: Path, values: np.ndarray, time_values, time_attrs: dict, *, dims=("time", "lat", "lon"),
            coords: dict | None = None, name: str = "tas", attrs: dict | None = None, encoding: dict | None = None,
            **to_netcdf) -> Path:
    """Write `values` with raw (undecoded) CF time values and attributes, as a model's output file."""
    ny, nx = values.shape[-2:]
    coords = {dims[1]: (dims[1], np.linspace(-30, 30, ny), {"units": "degrees_north", "standard_name": "latitude"}),
              dims[2]: (dims[2], np.linspace(0, 90, nx), {"units": "degrees_east", "standard_name": "longitude"}),
              **(coords or {})}
    coords[dims[0]] = (dims[0], np.asarray(time_values, dtype=np.float64), time_attrs)
    ds = xr.Dataset({name: (dims, values.astype(np.float32), {"units": "K", **(attrs or {})})}, coords=coords)
    ds.to_netcdf(path, encoding={name: encoding or {}}, **to_netcdf)
    return path


def field(n: int, ny: int = 6, nx: int = 8) -> np.ndarray:
    return 280 + np.arange(n, dtype=np.float32)[:, None, None] * 0.1 + np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)


def test_embedded_a1b_file_prepares_through_the_cli(tmp_path):
    """The embedded file (360_day calendar, yearly means) given to `prepare netcdf` as a user would."""
    src = SAMPLES / "A1B_north_america.nc"
    res = cli("prepare", "netcdf", "--from", str(src), "--var", "air_temperature", "--name", "a1b", root=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "prepared a1b" in res.stdout
    ds = PreparedDataset(tmp_path / "a1b")
    assert ds.frames.shape == (240, 1, 37, 49) and ds.meta["step"] == "1 years"
    assert ds.meta["times"] == {"first": "1860-06-01", "last": "2099-06-01", "steps": 240, "step": "1 years",
                                "calendar": "360_day"}
    raw = netCDF4.Dataset(src)["air_temperature"][:].filled(np.nan)
    np.testing.assert_array_equal(ds.frames[:, 0], raw)
    np.testing.assert_allclose(ds.mean, [raw[:168].astype(np.float64).mean()], rtol=1e-6)  # train = first 70%
    assert ds.lat.shape == (37,) and ds.lat2d is None and ds.mask is None
    assert ds.meta["digest"].startswith("sha256:") and len(ds.meta["digest"]) == 71


def test_noleap_daily_cmip_file_with_date_splits(tmp_path):
    n = 3 * 365
    path = cf_file(tmp_path / "tas_day_CMIP.nc", field(n), np.arange(n) + 0.5,
                   {"units": "days since 1850-01-01", "calendar": "noleap", "axis": "T", "standard_name": "time"},
                   coords={"height": ((), 2.0, {"units": "m", "axis": "Z"})})
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], in_len=5, out_len=5,
                                 splits="1850:1851,1852-01:1852-06,1852-07:"))
    assert ds.frames.shape == (n, 1, 6, 8) and ds.meta["step"] == "1 days"
    assert ds.meta["times"]["first"] == "1850-01-01T12:00:00" and ds.meta["times"]["calendar"] == "noleap"
    assert {s: v["steps"] for s, v in ds.meta["splits"].items()} == {"train": 730, "val": 181, "test": 184}
    assert ds.splits["val"][0] == 730 and len(ds.splits["test"]) == 184 - 9
    np.testing.assert_allclose(ds.mean, [field(n)[:730].astype(np.float64).mean()], rtol=1e-6)


def test_months_since_with_ferret_style_names(tmp_path):
    """SODA / Ferret layout: TIME in `months since 1958-1-1` stamped mid-month, FNOCY/FNOCX without attributes."""
    n = 48
    path = tmp_path / "soda.nc"
    xr.Dataset({"TEMP": (("TIME", "FNOCY", "FNOCX"), field(n).astype(np.float32))},
               coords={"TIME": ("TIME", np.arange(n) + 0.5, {"units": "months since 1958-1-1"}),
                       "FNOCY": ("FNOCY", np.arange(6.0)), "FNOCX": ("FNOCX", np.arange(8.0))}).to_netcdf(path)
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["TEMP"], in_len=3, out_len=3,
                                 years="1958-1959,1960,1961"))
    assert ds.frames.shape == (48, 1, 6, 8) and ds.meta["step"] == "1 months"
    assert ds.meta["times"]["first"] == "1958-01-16T12:00:00" and ds.meta["splits"]["test"]["first"].startswith("1961-01")
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [24 - 5, 12 - 5, 12 - 5]
    assert ds.lat is None and "lat" not in ds.meta["grid"]  # FNOCY is an index here, not a latitude


def test_year_zero_origin_and_duplicated_var(tmp_path):
    with pytest.warns(cftime.CFWarning):  # CF deprecates year 0; older model output still uses it
        origin = cftime.date2num(cftime.datetime(2000, 1, 1, calendar="standard", has_year_zero=True),
                                 "days since 0000-01-01", "standard", has_year_zero=True)
    path = cf_file(tmp_path / "y0.nc", field(40), origin + np.arange(40), {"units": "days since 0000-01-01 00:00:00"})
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], in_len=2, out_len=2))
    assert ds.meta["times"]["first"] == "2000-01-01" and ds.meta["times"]["last"] == "2000-02-09"
    with pytest.raises(UserError, match="--var tas is given twice; name each variable once"):
        prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas", "tas"])


def rotated_pole(path: Path, n: int = 30) -> tuple[Path, np.ndarray]:
    """CORDEX EUR-11 layout: rlat/rlon grid_latitude/grid_longitude, 2-D lat/lon, a size-1 height dim."""
    ny, nx = 5, 7
    rlat, rlon = np.linspace(-2, 2, ny), np.linspace(-3, 3, nx)
    lat2d = 50 + rlat[:, None] + 0.1 * rlon[None]
    ds = xr.Dataset(
        {"tas": (("time", "height", "rlat", "rlon"), field(n, ny, nx)[:, None], {"units": "K", "coordinates": "lat lon",
                                                                              "grid_mapping": "rotated_pole"}),
         "rotated_pole": ((), 0, {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25})},
        coords={"time": ("time", np.arange(n) * 24.0, {"units": "hours since 1949-12-01", "calendar": "standard"}),
                "height": ("height", [2.0], {"units": "m", "positive": "up"}),
                "rlat": ("rlat", rlat, {"standard_name": "grid_latitude", "units": "degrees", "axis": "Y"}),
                "rlon": ("rlon", rlon, {"standard_name": "grid_longitude", "units": "degrees", "axis": "X"}),
                "lat": (("rlat", "rlon"), lat2d, {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": (("rlat", "rlon"), 10 + lat2d * 0, {"standard_name": "longitude", "units": "degrees_east"})})
    ds.to_netcdf(path)
    return path, lat2d


def test_rotated_pole_grid_keeps_native_indices_and_2d_latitude(tmp_path):
    path, lat2d = rotated_pole(tmp_path / "tas_EUR-11_rotated.nc")
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], in_len=2, out_len=2))
    assert ds.frames.shape == (30, 1, 5, 7) and ds.channels == ["tas"]
    assert ds.lat is None and ds.lat2d.shape == (5, 7)  # no 1-D row latitude: the rows are rotated
    np.testing.assert_allclose(ds.lat2d, lat2d)
    assert ds.meta["grid"]["y"] == "rlat" and len(ds.meta["grid"]["lon2d"]) == 5
    np.testing.assert_array_equal(ds.frames[:, 0], field(30, 5, 7))


def test_projected_and_pixel_grids_are_not_latitudes(tmp_path):
    n = 40
    projected = tmp_path / "stereo.nc"
    xr.Dataset({"tb": (("time", "y", "x"), field(n))},
               coords={"time": ("time", np.arange(n) * 6.0, {"units": "hours since 2016-05-16"}),
                       "y": ("y", np.arange(6) * 4000.0, {"units": "m", "standard_name": "projection_y_coordinate"}),
                       "x": ("x", np.arange(8) * 4000.0, {"units": "m", "standard_name": "projection_x_coordinate"})}
               ).to_netcdf(projected)
    pixels = tmp_path / "pixels.nc"
    xr.Dataset({"tb": (("time", "row", "col"), field(n))},
               coords={"time": ("time", np.arange(n) * 6.0, {"units": "hours since 2016-05-16"})}).to_netcdf(pixels)
    for path in (projected, pixels):
        ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["tb"], in_len=2, out_len=2,
                                     output_name=path.stem))
        assert ds.lat is None and ds.lat2d is None and ds.meta["step"] == "6 hours"
        assert "lat" not in ds.meta["grid"] and ds.meta["grid"]["latitude"].startswith("none")


def sst_file(path: Path, n: int = 48, *, moving: bool = False) -> tuple[Path, np.ndarray]:
    """Monthly SST stamped mid-month (OSTIA layout) with land as _FillValue, so NaN after decoding."""
    land = np.zeros((6, 8), dtype=bool)
    land[:2, :3] = land[5, 7] = True
    values = field(n)
    values[:, land] = np.nan
    if moving:
        values[30, 4, 4] = np.nan  # sea ice: a NaN that comes and goes
    stamps = cftime.date2num([cftime.datetime(2006 + (4 + i) // 12, (4 + i) % 12 + 1, 16, calendar="gregorian")
                              for i in range(n)], "hours since 1970-01-01 00:00:00", "gregorian")
    cf_file(path, values, stamps, {"units": "hours since 1970-01-01 00:00:00", "calendar": "gregorian", "axis": "T"},
            name="sst", encoding={"_FillValue": np.float32(1e20)})
    return path, ~land


def test_masked_monthly_sst_prepares_with_a_land_mask(tmp_path):
    path, ocean = sst_file(tmp_path / "sst_monthly.nc")
    assert np.isclose(netCDF4.Dataset(path)["sst"]._FillValue, 1e20)
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["sst"], in_len=3, out_len=3))
    assert ds.meta["step"] == "1 months" and ds.meta["times"]["first"] == "2006-05-16"
    np.testing.assert_array_equal(ds.mask, ocean)
    np.testing.assert_array_equal(np.load(ds.path / "mask.npy"), ocean)
    assert ds.meta["mask"]["valid_cells"] == ocean.sum()
    train = field(48)[: int(48 * 0.7)].astype(np.float64)[:, ocean]
    np.testing.assert_allclose(ds.mean, [train.mean()], rtol=1e-6)      # statistics of the ocean only
    np.testing.assert_allclose(ds.std, [train.std()], rtol=1e-5)
    assert np.isfinite(ds.frames).all()
    np.testing.assert_allclose(ds.frames[:, 0][:, ~ocean], ds.mean[0], rtol=1e-6)  # land holds the neutral mean
    np.testing.assert_array_equal(ds.frames[:, 0][:, ocean], field(48)[:, ocean])
    np.testing.assert_allclose(ds.climatology[0][~ocean], ds.mean[0], rtol=1e-6)
    np.testing.assert_allclose(ds.climatology[0][ocean], train.mean(axis=0), rtol=1e-6)


def test_sst_with_moving_nans_is_refused_and_the_old_dataset_survives(tmp_path):
    good, _ = sst_file(tmp_path / "good.nc")
    before = prepare("netcdf", root=tmp_path / "data", from_paths=[good], var=["sst"], output_name="sst", in_len=3,
                     out_len=3)
    digest = PreparedDataset(before).digest
    bad, _ = sst_file(tmp_path / "ice.nc", moving=True)
    with pytest.raises(UserError, match=r"ice.nc: sst has NaNs that move: at 2008-11-16 1 cell\(s\) differ .*"
                                        r"fill them, or cut those times out with --time"):
        prepare("netcdf", root=tmp_path / "data", from_paths=[bad], var=["sst"], output_name="sst", in_len=3, out_len=3)
    assert PreparedDataset(before).digest == digest
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["sst"]


def test_real_ostia_monthly_sample_prepares_with_its_land_mask(tmp_path):
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[SAMPLES / "ostia_monthly.nc"],
                                 var=["surface_temperature"], output_name="ostia", in_len=4, out_len=4,
                                 splits="0.5,0.25,0.25"))
    raw = netCDF4.Dataset(SAMPLES / "ostia_monthly.nc")["surface_temperature"][:]
    assert ds.frames.shape == (54, 1, 18, 432) and ds.meta["step"] == "1 months"
    np.testing.assert_array_equal(ds.mask, ~np.ma.getmaskarray(raw[0]))
    assert 0.6 < ds.mask.mean() < 0.8 and 270 < ds.mean[0] < 305


def test_coarsen_averages_valid_cells_and_latitudes(tmp_path):
    path, ocean = sst_file(tmp_path / "sst.nc", n=24)
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["sst"], in_len=2, out_len=2,
                                 coarsen="2x3"))
    assert ds.frames.shape == (24, 1, 3, 2) and ds.meta["coarsen"]["dropped"] == [0, 2]
    src = field(24)
    np.testing.assert_allclose(ds.frames[5, 0, 0, 0], src[5, 0:2, 0:3][ocean[0:2, 0:3]].mean() if ocean[0:2, 0:3].any()
                               else ds.mean[0], rtol=1e-6)
    np.testing.assert_allclose(ds.frames[5, 0, 2, 1], src[5, 4:6, 3:6].mean(), rtol=1e-6)
    assert ds.mask is not None and not ds.mask[0, 0] and ds.mask[0, 1]  # a block of land only stays masked
    np.testing.assert_allclose(ds.lat, np.linspace(-30, 30, 6).reshape(3, 2).mean(axis=1))
    np.testing.assert_allclose(ds.meta["grid"]["lon"], np.linspace(0, 90, 8)[:6].reshape(2, 3).mean(axis=1))
    with pytest.raises(UserError, match="bad --coarsen 'big'"):
        prepare("netcdf", root=tmp_path, from_paths=[path], var=["sst"], coarsen="big")


def test_resample_hourly_to_daily_means(tmp_path):
    n = 24 * 10
    path = cf_file(tmp_path / "hourly.nc", field(n), np.arange(n) + 3, {"units": "hours since 2001-03-01"})
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], in_len=1, out_len=1,
                                 resample="1D", splits="0.6,0.2,0.2"))
    assert ds.frames.shape == (9, 1, 6, 8) and ds.meta["step"] == "1 days"  # partial first and last days dropped
    assert ds.meta["times"]["first"] == "2001-03-02" and ds.meta["resample"]["source_step"] == "1 hours"
    np.testing.assert_allclose(ds.frames[0, 0], field(n)[21:45].astype(np.float64).mean(axis=0), rtol=1e-6)
    with pytest.raises(UserError, match="--resample 1 hours cannot average steps of 1 hours"):
        prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], resample="1h")


def yearly_files(folder: Path, names=("b.nc", "c.nc", "a.nc"), years=(2001, 2002, 2000)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, year in zip(names, years):
        first = (year - 2000) * 365
        cf_file(folder / name, field(365)[:, :, :] + (year - 2000), first + np.arange(365),
                {"units": "days since 2000-01-01", "calendar": "365_day"})
    return folder


def test_many_yearly_files_by_glob_or_folder_join_in_time_order(tmp_path):
    folder = yearly_files(tmp_path / "yearly")
    expected = np.concatenate([field(365) + k for k in range(3)])
    for spec in (folder, Path(f"{folder}/*.nc")):
        ds = PreparedDataset(prepare("netcdf", root=tmp_path / "data", from_paths=[spec], var=["tas"], in_len=3,
                                     out_len=3, years="2000,2001,2002"))
        np.testing.assert_array_equal(ds.frames[:, 0], expected)  # a.nc holds 2000: ordered by time, not name
        assert len(ds.meta["sources"]) == 3 and ds.meta["times"]["last"] == "2002-12-31"
    cf_file(folder / "d.nc", field(10), 700 + np.arange(10), {"units": "days since 2000-01-01", "calendar": "365_day"})
    with pytest.raises(UserError, match=r"times go back between 2001-12-31 \(b.nc\) and 2001-12-02 \(d.nc\)"):
        prepare("netcdf", root=tmp_path / "data", from_paths=[folder], var=["tas"])
    (folder / "d.nc").unlink()
    cf_file(folder / "e.nc", field(10, 4, 8), 1095 + np.arange(10), {"units": "days since 2000-01-01",
                                                                    "calendar": "365_day"})
    with pytest.raises(UserError, match=r"e.nc: grid 4 x 8 \(lat, lon\) differs from .*6 x 8"):
        prepare("netcdf", root=tmp_path / "data", from_paths=[folder], var=["tas"])
    with pytest.raises(UserError, match=r"--from '.*/\*.grib' matches no files"):
        prepare("netcdf", root=tmp_path / "data", from_paths=[Path(f"{folder}/*.grib")], var=["tas"])


def test_one_field_per_file_with_a_scalar_time_joins_into_a_series(tmp_path):
    """The layout of rotated_pole.nc / GRIB messages: a 2-D field, `time` a scalar coordinate."""
    folder = tmp_path / "fields"
    folder.mkdir()
    for i in range(10):
        xr.Dataset({"psl": (("grid_latitude", "grid_longitude"), field(10)[i], {"coordinates": "time"})},
                   coords={"time": ((), 6.0 * i, {"units": "hours since 2006-06-15", "standard_name": "time"}),
                           "grid_latitude": ("grid_latitude", np.arange(6.0), {"axis": "Y"}),
                           "grid_longitude": ("grid_longitude", np.arange(8.0), {"axis": "X"})}
                   ).to_netcdf(folder / f"psl_{9 - i}.nc")
    ds = PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[folder], var=["psl"], in_len=1, out_len=1,
                                 splits="0.4,0.3,0.3"))
    assert ds.frames.shape == (10, 1, 6, 8) and ds.meta["step"] == "6 hours"
    np.testing.assert_array_equal(ds.frames[:, 0], field(10))
    with pytest.raises(UserError, match=r"psl_0.nc: a single time step \(2006-06-17T06:00:00\); .* pass all its files"):
        prepare("netcdf", root=tmp_path, from_paths=[folder / "psl_0.nc"], var=["psl"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(splits="0.8,0.1,0.1"), r"split 'val' has 109 time steps \(2002-05-27 .. 2002-09-12\), fewer than one window "
                                 r"of 200 \(--in-len 100 \+ --out-len 100\): no windows; give it more steps, e.g. "
                                 r"--splits 0\.62,0\.19,0\.19"),
    (dict(splits="0.5,0.6,0.1"), "three fractions of the time steps, each > 0, summing to at most 1"),
    (dict(splits="2000:2001,2001-06:2001-12,2002"), r"splits 'train' and 'val' overlap"),
    (dict(splits="2000,2001,2009"), r"split 'test' selects no time steps \(data cover 2000-01-01 .. 2002-12-31\)"),
    (dict(splits="2000,2001"), "bad --splits '2000,2001': expected TRAIN,VAL,TEST"),
    (dict(splits="0.7,0.15,0.15", years="2000,2001,2002"), "--years and --splits both choose the splits"),
])
def test_bad_splits_are_named_with_the_fix(tmp_path, kwargs, message):
    path = cf_file(tmp_path / "d.nc", field(1095), np.arange(1095), {"units": "days since 2000-01-01",
                                                                    "calendar": "noleap"})
    with pytest.raises(UserError, match=message):
        prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], in_len=100, out_len=100, **kwargs)


def test_truncated_and_corrupt_files_are_one_line_errors(tmp_path):
    data = {"units": "days since 2000-01-01"}
    classic = cf_file(tmp_path / "classic.nc", field(200), np.arange(200), data, format="NETCDF3_CLASSIC",
                      unlimited_dims=["time"])
    assert PreparedDataset(prepare("netcdf", root=tmp_path / "data", from_paths=[classic], var=["tas"], in_len=2,
                                   out_len=2, output_name="ok")).frames.shape == (200, 1, 6, 8)
    cut = tmp_path / "cut.nc"
    cut.write_bytes(classic.read_bytes()[: classic.stat().st_size // 2])  # netCDF-C would read zeros here
    with pytest.raises(UserError, match=r"cut.nc: truncated: its header describes \d+ bytes but the file has \d+"):
        prepare("netcdf", root=tmp_path / "data", from_paths=[cut], var=["tas"])
    packed = cf_file(tmp_path / "packed.nc", np.random.default_rng(0).random((200, 6, 8)) + 280, np.arange(200), data,
                     encoding={"zlib": True, "chunksizes": (20, 6, 8)})
    raw = bytearray(packed.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 1500] = np.random.default_rng(1).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.nc").write_bytes(bytes(raw))
    res = cli("prepare", "netcdf", "--from", str(tmp_path / "damaged.nc"), "--var", "tas", "--name", "ok",
              root=tmp_path / "data")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "damaged.nc: reading tas at" in res.stderr and "the file is corrupt" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert PreparedDataset(tmp_path / "data" / "ok").frames.shape == (200, 1, 6, 8)  # the earlier dataset survives


def test_permission_denied_is_said_as_such(tmp_path):
    path = cf_file(tmp_path / "locked.nc", field(20), np.arange(20), {"units": "days since 2000-01-01"})
    path.chmod(0)
    prefix = without_read_override()
    code = ("import sys; from svqbench.data import prepare; from svqbench.errors import UserError\n"
            "try: prepare('netcdf', root=sys.argv[2], from_paths=[sys.argv[1]], var=['tas'])\n"
            "except UserError as e: print(e)")
    res = subprocess.run([*prefix, sys.executable, "-c", code, str(path), str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300)
    assert "Traceback" not in res.stderr, res.stderr
    assert "locked.nc: permission denied" in res.stdout and "corrupt" not in res.stdout


def test_grib_needs_cfgrib_or_reads_through_it(tmp_path):
    import importlib.util
    grib = SAMPLES / "polar_stereo.grib2"
    if importlib.util.find_spec("cfgrib") is None:
        with pytest.raises(UserError, match=r"polar_stereo.grib2 is a GRIB file; reading it needs cfgrib: "
                                            r"pip install cfgrib"):
            prepare("netcdf", root=tmp_path, from_paths=[grib], var=["t"])
    else:  # one field at one time: read, then refused as a single time step
        with pytest.raises(UserError, match="a single time step"):
            prepare("netcdf", root=tmp_path, from_paths=[grib], var=["t"])


def test_a_killed_prepare_leaves_nothing_behind_at_the_next(tmp_path, user_file):
    root = tmp_path / "data"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = root / f".my-sst.tmp-{int(dead.stdout)}"
    live = root / f".other.tmp-{os.getppid()}"  # a prepare still running elsewhere
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "frames.npy").write_bytes(b"0" * 1000)
    prepare("netcdf", root=root, from_paths=[user_file], var=["sst"], output_name="my-sst", in_len=4, out_len=4)
    assert not stale.exists() and live.exists()


def _refusal(tmp_path, path: Path, var: str, in_len: int, out_len: int, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        prepare("netcdf", root=tmp_path, from_paths=[path], var=[var], in_len=in_len, out_len=out_len, **kwargs)
    return str(info.value)


def _accepted(tmp_path, path: Path, var: str, in_len: int, out_len: int, **kwargs) -> PreparedDataset:
    return PreparedDataset(prepare("netcdf", root=tmp_path, from_paths=[path], var=[var], in_len=in_len,
                                   out_len=out_len, output_name="hinted", **kwargs))


def test_too_short_split_hint_on_the_real_ostia_file_is_the_bound_that_is_accepted(tmp_path):
    """54 monthly steps split 0.7/0.15/0.15 = 37/8/9: the hint used to say n // 3 = 18 steps, refused."""
    src, var = SAMPLES / "ostia_monthly.nc", "surface_temperature"
    message = _refusal(tmp_path, src, var, 10, 10)
    bound = int(re.search(r"at most (\d+) steps in all", message).group(1))
    assert bound == 8
    assert len(_accepted(tmp_path, src, var, bound // 2, bound - bound // 2).splits["val"]) == 1
    assert "at most 8 steps in all" in _refusal(tmp_path, src, var, bound // 2, bound - bound // 2 + 1)


@pytest.mark.parametrize("n, in_len, out_len", [(54, 4, 5), (60, 10, 10), (132, 11, 11)])
def test_suggested_split_fractions_and_length_are_accepted_and_one_more_is_not(tmp_path, n, in_len, out_len):
    """(60, 10+10): the old hint's --splits 0.30,0.35,0.35 left train 18 steps; (132, 11+11): the Ferret navy
    winds case (monthly 1982-1992), where the old hint said 44 steps and 22 was refused."""
    path = cf_file(tmp_path / "m.nc", field(n), np.arange(n) + 0.5, {"units": "months since 1982-01-01"})
    message = _refusal(tmp_path, path, "tas", in_len, out_len)
    splits = re.search(r"--splits (\S+,\S+,\S+) ", message).group(1)
    assert min(len(w) for w in _accepted(tmp_path, path, "tas", in_len, out_len, splits=splits).splits.values()) >= 1
    bound = int(re.search(r"at most (\d+) steps in all", message).group(1))
    assert bound == min(int(n * 0.85) - int(n * 0.7), n - int(n * 0.85))
    assert len(_accepted(tmp_path, path, "tas", 1, bound - 1).splits["test"]) >= 1
    assert f"at most {bound} steps in all" in _refusal(tmp_path, path, "tas", 1, bound)


def test_level_on_a_size_one_height_says_so(tmp_path):
    path, _ = rotated_pole(tmp_path / "tas_EUR-11_rotated.nc")
    with pytest.raises(UserError, match=r"tas has a size-1 height dimension \(value 2\), nothing to choose: drop "
                                        r"--level$"):
        prepare("netcdf", root=tmp_path, from_paths=[path], var=["tas"], level=2, in_len=2, out_len=2)
