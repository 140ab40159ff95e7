"""WeatherBench-S/M preparation from files synthesised in the exact WeatherBench 1 / 2 layouts."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import without_read_override

from svqbench.data import prepare
from svqbench.data.prepared import PreparedDataset
from svqbench.errors import UserError

YEARS = "2010,2011,2012"  # train, val, test: three small blocks keep the files few
LAT = np.linspace(-87.1875, 87.1875, 32)
LON = np.arange(64) * 5.625


def hours(year: int, step: int = 1) -> np.ndarray:
    return np.arange(np.datetime64(f"{year}-01-01T00", "h"), np.datetime64(f"{year + 1}-01-01T00", "h"),
                     np.timedelta64(step, "h")).astype("datetime64[ns]")


def field(times: np.ndarray, base: float) -> np.ndarray:
    """A smooth, distinct value per (time, lat, lon): hour of year + latitude pattern + base."""
    t = ((times - times[0]) / np.timedelta64(1, "h")).astype(np.float32)
    year = times[0].astype("datetime64[Y]").astype(int) + 1970
    pattern = (10 * np.cos(np.deg2rad(LAT))[:, None] + 0.01 * LON[None]).astype(np.float32)
    return base + (year - 2010) + 0.001 * t[:, None, None] + pattern[None]


def wb1_dataset(var: str, year: int, *, base: float = 270.0, levels=None, lat=LAT, step: int = 1,
                times=None) -> xr.Dataset:
    times = hours(year, step) if times is None else times
    data = field(times, base)
    dims = ("time", "lat", "lon")
    coords = {"time": times, "lat": ("lat", lat, {"units": "degrees_north", "long_name": "latitude"}),
              "lon": ("lon", LON, {"units": "degrees_east", "long_name": "longitude"})}
    if levels is not None:
        data = np.stack([data + i for i in range(len(levels))], axis=1)
        dims = ("time", "level", "lat", "lon")
        coords["level"] = ("level", np.asarray(levels, dtype=np.int32), {"units": "millibars"})
    if lat is not LAT:
        data = data[:, ..., : len(lat), :]
    return xr.Dataset({var: (dims, data.astype(np.float32), {"units": "K", "long_name": var})}, coords=coords,
                      attrs={"Conventions": "CF-1.6", "history": "synthetic WeatherBench 1 layout"})


def write_wb1(folder: Path, var_dir: str, var: str, year: int, **kw) -> Path:
    path = folder / var_dir / f"{var_dir}_{year}_5.625deg.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb1_dataset(var, year, **kw).to_netcdf(path)
    return path


@pytest.fixture(scope="session")
def wb1_t2m(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wb1")
    for year in (2010, 2011, 2012):
        write_wb1(folder, "2m_temperature", "t2m", year)
    return folder


@pytest.fixture(scope="session")
def wb1_zip(wb1_t2m, tmp_path_factory) -> Path:
    """The published zip layout, with the long internal paths some WeatherBench zips hold."""
    archive = tmp_path_factory.mktemp("zip") / "2m_temperature_5.625deg.zip"
    prefix = "home/user/very/long/export/path/5.625deg/2m_temperature/"
    with zipfile.ZipFile(archive, "w") as zf:
        for year in (2010, 2011, 2012):
            name = f"2m_temperature_{year}_5.625deg.nc"
            zf.write(wb1_t2m / "2m_temperature" / name, prefix + name)
        zf.write(wb1_t2m / "2m_temperature" / "2m_temperature_2012_5.625deg.nc", prefix + "2m_temperature_2013_5.625deg.nc")
        zf.writestr(prefix + "README.txt", "not needed")
    return archive


def test_weatherbench_s_from_zip_layout_splits_and_train_stats(wb1_t2m, wb1_zip, tmp_path):
    path = prepare("weatherbench-s-t2m", root=tmp_path, from_paths=[wb1_zip], years=YEARS, progress=False)
    extracted = sorted(p.name for p in (tmp_path / ".raw" / "weatherbench1" / "extracted").glob("[!.]*"))
    assert extracted == [f"2m_temperature_{y}_5.625deg.nc" for y in (2010, 2011, 2012)]  # only what is needed
    ds = PreparedDataset(path)
    assert ds.frames.shape == (8760 + 8760 + 8784, 1, 32, 64) and ds.frames.dtype == np.float32
    assert (ds.in_len, ds.out_len, ds.channels, ds.kind) == (12, 12, ["t2m"], "weather")
    assert {s: len(w) for s, w in ds.splits.items()} == {"train": 8760 - 23, "val": 8760 - 23, "test": 8784 - 23}
    assert ds.splits["val"][0] == 8760 and ds.splits["test"][-1] + 24 == len(ds.frames)  # windows stay in their year
    src = xr.open_dataset(wb1_t2m / "2m_temperature" / "2m_temperature_2011_5.625deg.nc")["t2m"].values
    np.testing.assert_array_equal(ds.frames[8760: 2 * 8760, 0], src)
    train = np.asarray(ds.frames[:8760], dtype=np.float64)
    np.testing.assert_allclose(ds.mean, [train.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [train.std()], rtol=1e-5)
    np.testing.assert_allclose(ds.climatology[0], train[:, 0].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(ds.lat, LAT)
    assert ds.meta["step"] == "1 hours" and ds.meta["splits"]["test"]["years"] == [2012, 2012]
    assert len(ds.meta["sources"]) == 3 and all(len(s["sha256"]) == 64 for s in ds.meta["sources"])
    x, y = ds.window("test", 5)
    np.testing.assert_array_equal(np.concatenate([x, y]), ds.frames[2 * 8760 + 5: 2 * 8760 + 29])


def test_years_that_overlap_are_rejected(wb1_t2m, tmp_path):
    with pytest.raises(UserError, match="overlap"):
        prepare("weatherbench-s-t2m", root=tmp_path, from_paths=[wb1_t2m], years="2010-2011,2011,2012")


@pytest.mark.parametrize("member", ["../evil.nc", "/abs/2m_temperature_2010_5.625deg.nc"])
def test_zip_with_unsafe_member_is_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(member, b"x")
    with pytest.raises(UserError, match="unsafe member path"):
        prepare("weatherbench-s-t2m", root=tmp_path / "data", from_paths=[archive], years=YEARS, progress=False)
    assert not (tmp_path / "evil.nc").exists()


def read_one(path: Path, year: int):
    from svqbench.data.weatherbench import _WB1Files
    return _WB1Files({("2m_temperature", year): path}, step_hours=1).read("t2m", None, year)


def test_wrong_grid_is_named(tmp_path):
    bad = write_wb1(tmp_path, "2m_temperature", "t2m", 2011, lat=np.linspace(-84.375, 84.375, 16))
    with pytest.raises(UserError, match=rf"{bad.name}: grid is 16 x 64 \(lat x lon\), expected 32 x 64"):
        read_one(bad, 2011)


def test_shifted_coordinates_are_named(tmp_path):
    bad = write_wb1(tmp_path, "2m_temperature", "t2m", 2011, lat=LAT + 1.0)
    with pytest.raises(UserError, match="coordinates lat -86.1875..88.1875.* are not the WeatherBench grid"):
        read_one(bad, 2011)


def test_gap_in_time_is_named(tmp_path):
    bad = write_wb1(tmp_path, "2m_temperature", "t2m", 2011, times=np.delete(hours(2011), 500))
    with pytest.raises(UserError, match="time step is 2 h between 2011-01-21T19 and 2011-01-21T21"):
        read_one(bad, 2011)


def test_file_of_another_year_is_named(tmp_path):
    bad = write_wb1(tmp_path, "2m_temperature", "t2m", 2011)
    with pytest.raises(UserError, match=r"covers 2011-01-01T00 .. 2011-12-31T23 \(8760 steps\), expected all of 2012"):
        read_one(bad, 2012)


def test_implausible_values_are_named(tmp_path):
    bad = write_wb1(tmp_path, "2m_temperature", "t2m", 2011, base=0.0)  # degrees Celsius, not kelvin
    with pytest.raises(UserError, match=r"t2m spans .* K, outside the plausible 170..340; wrong variable or units\?"):
        read_one(bad, 2011)


def test_truncated_file_is_named(tmp_path):
    path = write_wb1(tmp_path, "2m_temperature", "t2m", 2011)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="2m_temperature_2011_5.625deg.nc: .*truncated or corrupt"):
        read_one(path, 2011)


def test_failure_leaves_the_prepared_dataset_untouched(wb1_t2m, tmp_path):
    """NaNs, then a missing year: the error names the file, the earlier dataset stays as it was."""
    root = tmp_path / "data"
    path = prepare("weatherbench-s-t2m", root=root, from_paths=[wb1_t2m], years=YEARS, progress=False)
    before = (path / "meta.json").read_text()
    src = tmp_path / "src"
    shutil.copytree(wb1_t2m, src)
    ds = wb1_dataset("t2m", 2010)
    ds["t2m"][100, 3, 4] = np.nan
    ds.to_netcdf(src / "2m_temperature" / "2m_temperature_2010_5.625deg.nc")
    with pytest.raises(UserError, match=r"2m_temperature_2010_5.625deg.nc: t2m has 1 NaN/infinite values "
                                        r"\(first at time index 100\)"):
        prepare("weatherbench-s-t2m", root=root, from_paths=[src], years=YEARS, progress=False)
    (src / "2m_temperature" / "2m_temperature_2012_5.625deg.nc").unlink()
    with pytest.raises(UserError, match="year 2012 of 2m_temperature is missing: no 2m_temperature_2012_5.625deg.nc"):
        prepare("weatherbench-s-t2m", root=root, from_paths=[src], years=YEARS, progress=False)
    assert (path / "meta.json").read_text() == before
    assert PreparedDataset(path).frames.shape[0] == 26304
    assert sorted(p.name for p in root.iterdir()) == ["weatherbench-s-t2m"]  # no temp folders left


def test_weatherbench_m_reads_levels_and_subsamples_once_to_six_hours(tmp_path):
    """Defect 3: the reference loader subsampled twice (36 h spacing); one subsampling keeps 6 h."""
    from svqbench.data.weatherbench import _WB1Files
    path = write_wb1(tmp_path, "relative_humidity", "r", 2015, base=10.0, levels=[300, 850])
    values = _WB1Files({("relative_humidity", 2015): path}, step_hours=6).read("r", (850,), 2015)
    assert values.shape == (365 * 4, 1, 32, 64)
    src = xr.open_dataset(path)["r"]
    np.testing.assert_array_equal(values[:, 0], src.sel(level=850).values[::6])
    spacing_h = np.diff(values[:, 0, 0, 0]) / 0.001  # the field rises 0.001 per hour
    np.testing.assert_allclose(spacing_h, 6.0, atol=0.05)
    with pytest.raises(UserError, match=r"pressure level\(s\) \[250\] hPa missing"):
        _WB1Files({("relative_humidity", 2015): path}, step_hours=6).read("r", (250,), 2015)


def _wb2_store(path: Path, years=(2010, 2011, 2012)) -> Path:
    times = np.concatenate([hours(y, 6) for y in years])
    data = np.concatenate([field(hours(y, 6), 270.0) for y in years])
    lat_desc = LAT[::-1]
    ds = xr.Dataset({"2m_temperature": (("time", "longitude", "latitude"),
                                        data[:, ::-1, :].transpose(0, 2, 1).astype(np.float32))},
                    coords={"time": times, "latitude": lat_desc, "longitude": LON})
    ds.to_zarr(path, mode="w", zarr_format=2)  # WeatherBench 2 stores are zarr v2, consolidated
    return path


def test_weatherbench2_zarr_is_renamed_transposed_and_six_hourly(tmp_path):
    pytest.importorskip("zarr")
    import os
    import subprocess
    import sys
    store = _wb2_store(tmp_path / "era5.zarr")
    res = subprocess.run([sys.executable, "-m", "svqbench", "prepare", "weatherbench-s-t2m", "--source", "wb2",
                          "--from", str(store), "--years", YEARS, "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr
    assert "note: WeatherBench 2 is 6-hourly: this dataset steps 6 h" in res.stdout
    assert "conservative regridding" in res.stdout
    ds = PreparedDataset(tmp_path / "data" / "weatherbench-s-t2m")
    assert ds.frames.shape == ((365 + 365 + 366) * 4, 1, 32, 64)
    assert ds.meta["step"] == "6 hours" and "6-hourly" in ds.meta["note"]
    np.testing.assert_allclose(ds.frames[365 * 4, 0], field(hours(2011, 6), 270.0)[0], rtol=1e-6)
    with pytest.raises(UserError, match="year 2013 is missing"):
        prepare("weatherbench-s-t2m", root=tmp_path / "data", source="wb2", from_paths=[store],
                years="2010,2011,2013", progress=False)


def test_weatherbench_s_group_checks_every_task_before_converting_any(tmp_path, monkeypatch):
    from svqbench.data import weatherbench
    calls = []
    monkeypatch.setattr(weatherbench, "_check_s_folders", lambda *a: None)
    monkeypatch.setattr(weatherbench, "_task", lambda dest, name, check_only=False, **kw:
                        calls.append((name, check_only, kw["years"])) or dest)
    paths = prepare("weatherbench-s", root=tmp_path, from_paths=[tmp_path], years=YEARS, progress=False)
    assert calls == [(n, True, YEARS) for n in weatherbench.S_NAMES] + [(n, False, YEARS) for n in weatherbench.S_NAMES]
    assert paths == [tmp_path / n for n in weatherbench.S_NAMES]
    with pytest.raises(UserError, match=r"option\(s\) --var do not apply to dataset 'weatherbench-s'"):
        prepare("weatherbench-s", root=tmp_path, var=["t2m"])


def test_weatherbench_s_lists_the_folders_it_needs_before_converting(wb1_t2m, wb1_zip, tmp_path):
    """Only t2m given: every needed folder and every missing one are named; nothing is converted."""
    with pytest.raises(UserError) as e:
        prepare("weatherbench-s", root=tmp_path / "data", from_paths=[wb1_zip], years=YEARS, progress=False)
    message = str(e.value)
    assert message.startswith("weatherbench-s needs 5 variable folders: 2m_temperature, relative_humidity, "
                              "10m_u_component_of_wind, 10m_v_component_of_wind, total_cloud_cover")
    assert "missing in --from: relative_humidity (all years); 10m_u_component_of_wind (all years)" in message
    assert "2m_temperature (" not in message.split("missing")[1]
    partial = tmp_path / "partial"
    shutil.copytree(wb1_t2m, partial)
    write_wb1(partial, "total_cloud_cover", "tcc", 2011, base=0.5)
    with pytest.raises(UserError, match=r"total_cloud_cover \(2010, 2012\)"):
        prepare("weatherbench-s", root=tmp_path / "data", from_paths=[partial], years=YEARS, progress=False)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_replaced_zip_is_read_again_not_its_stale_extraction(wb1_t2m, tmp_path):
    """A zip with a NaN year is replaced by a good one of the same sizes: the new content is used."""
    archive, root = tmp_path / "2m_temperature_5.625deg.zip", tmp_path / "data"
    bad = tmp_path / "bad" / "2m_temperature_2011_5.625deg.nc"
    bad.parent.mkdir()
    ds = wb1_dataset("t2m", 2011)
    ds["t2m"][7, 3, 4] = np.nan
    ds.to_netcdf(bad)
    for year_2011 in (bad, wb1_t2m / "2m_temperature" / "2m_temperature_2011_5.625deg.nc"):
        with zipfile.ZipFile(archive, "w") as zf:  # stored: same member sizes either way
            for year in (2010, 2011, 2012):
                name = f"2m_temperature_{year}_5.625deg.nc"
                zf.write(year_2011 if year == 2011 else wb1_t2m / "2m_temperature" / name, name)
        if year_2011 is bad:
            with pytest.raises(UserError, match=r"2011_5.625deg.nc: t2m has 1 NaN/infinite values"):
                prepare("weatherbench-s-t2m", root=root, from_paths=[archive], years=YEARS, progress=False)
    path = prepare("weatherbench-s-t2m", root=root, from_paths=[archive], years=YEARS, progress=False)
    assert np.isfinite(PreparedDataset(path).frames[8760 + 7]).all()


def test_unreadable_file_is_permission_denied_not_corrupt(tmp_path):
    import subprocess
    import sys
    path = write_wb1(tmp_path, "2m_temperature", "t2m", 2011)
    path.chmod(0)
    prefix = without_read_override()
    code = ("import sys; from pathlib import Path; from svqbench.data.weatherbench import _WB1Files\n"
            "from svqbench.errors import UserError\n"
            "try: _WB1Files({('2m_temperature', 2011): Path(sys.argv[1])}, 1).read('t2m', None, 2011)\n"
            "except UserError as e: print(e)")
    res = subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    assert "2m_temperature_2011_5.625deg.nc: permission denied" in res.stdout and "corrupt" not in res.stdout


def test_weatherbench2_without_zarr_or_gcsfs_says_what_to_install(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(UserError, match=r"reading gs://weatherbench2/.* needs `gcsfs`; pip install gcsfs, or copy"):
        prepare("weatherbench-s-t2m", root=tmp_path, source="wb2", years=YEARS)
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(UserError, match=r"the WeatherBench 2 source needs the `zarr` package; pip install zarr"):
        prepare("weatherbench-s-t2m", root=tmp_path, source="wb2", from_paths=[tmp_path / "x.zarr"], years=YEARS)
