"""`svqbench prepare netcdf`: a researcher's own gridded file, and the CLI around `prepare`/`datasets`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from svqbench.config import resolve
from svqbench.data import prepare
from svqbench.data.prepared import PreparedDataset
from svqbench.errors import UserError


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
    assert ds.meta["step"] == "1440 minutes" and ds.meta["splits"]["val"]["first"].startswith("2001-01-01")
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
    with pytest.raises(UserError, match=r"nan.nc: NaN or infinite values at 2000-01-21"):
        prepare("netcdf", root=tmp_path, from_paths=[tmp_path / "nan.nc"], var=["sst"])
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
    user_dataset(times).to_netcdf(tmp_path / "u.nc")
    prepare("netcdf", root=tmp_path / "data", from_paths=[tmp_path / "u.nc"], var=["sst", "t"], level=850,
            output_name="mine", in_len=4, out_len=4)
    cfg = resolve(cli={**tiny_config().to_dict(), "dataset": "mine", "epochs": 1}, data_dir=tmp_path / "data")
    metrics = run_experiment(cfg, results_dir=tmp_path / "results", data_dir=tmp_path / "data", run_id="mine-1")
    saved = (tmp_path / "results" / "mine-1" / "config.json").read_text()
    assert '"dataset": "mine"' in saved and metrics["test"]["mse_per_pixel"] > 0
