"""svqbench.score: `evaluate RUN --lead N` (skill per lead of a rolled-out run against persistence and
climatology) and `score FILE --dataset` (a WeatherBench 2 layout forecast written by another tool, here a
plain xarray script, scored like a run and added to the leaderboard); bad files are one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import cli
from scores.probability import crps_for_ensemble

from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.experiment import run_experiment
from svqbench.predict import predict_run
from svqbench.results import compare_table, load_leaderboards

TINY = dict(hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, epochs=1, batch_size=8, warmup_epochs=0)


@pytest.fixture(scope="module")
def run(embedded_root, tmp_path_factory):
    """A tiny finished `none` run on the embedded data (yearly, 10 -> 5, 26 test windows): (results, data)."""
    results = tmp_path_factory.mktemp("score") / "results"
    run_experiment(resolve(cli=dict(TINY, quantizer="none")), results_dir=results, data_dir=embedded_root,
                   run_id="r0")
    return results, embedded_root


def write_persistence(data: Path, out: Path, members: int = 0, seed: int = 0) -> xr.Dataset:
    """Another tool's forecast: the last input frame at every lead, in the WeatherBench 2 layout, from the
    prepared dataset's files with numpy and xarray alone; `members` > 0 adds Gaussian noise per member."""
    meta = json.loads((data / "meta.json").read_text())
    frames = np.load(data / "frames.npy", mmap_mode="r")                  # (frame, channel, lat, lon) in K
    last = np.load(data / "windows_test.npy") + meta["in_len"] - 1       # initialisation: the last input frame
    cf_time = {k: meta["frame_times"][k] for k in ("units", "calendar")}
    stamps = xr.Dataset(coords={"t": ("t", np.load(data / "times.npy"), cf_time)})
    init = xr.decode_cf(stamps, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))["t"].values[last]
    leads = np.arange(1, meta["out_len"] + 1)
    values = np.repeat(np.asarray(frames[last, 0])[:, None], len(leads), axis=1)
    dims = ("time", "prediction_timedelta", "latitude", "longitude")
    if members:
        noise = np.random.default_rng(seed).normal(0.0, 0.7, (members, *values.shape)).astype(np.float32)
        values, dims = (values[None] + noise).swapaxes(0, 1), ("time", "member", *dims[1:])
    forecast = xr.Dataset({"air_temperature": (dims, values, {"units": "K"})},
                          coords={"time": init, "latitude": meta["grid"]["lat"], "longitude": meta["grid"]["lon"],
                                  "prediction_timedelta": ("prediction_timedelta", leads, {"units": "years"})})
    forecast.to_netcdf(out)
    return forecast


def _truth(data: Path) -> np.ndarray:
    """(window, lead, lat, lon) test truth read straight from frames.npy."""
    meta = json.loads((data / "meta.json").read_text())
    frames = np.load(data / "frames.npy", mmap_mode="r")
    starts = np.load(data / "windows_test.npy")
    return np.asarray(frames[starts[:, None] + meta["in_len"] + np.arange(meta["out_len"]), 0])


def test_evaluate_lead_20_prints_skill_per_lead_and_plots_it(run, monkeypatch, capsys):
    results, data = run
    code, out, err = cli(["evaluate", "r0", "--lead", "20", "--results-dir", str(results), "--data-dir", str(data)],
                         monkeypatch, capsys)
    assert code == 0, err
    record = json.loads((results / "r0" / "metrics_leads_test.json").read_text())
    leads = record["leads"]
    assert [r["lead"] for r in leads] == list(range(1, 21))
    # lead k needs its truth inside the test split: all 26 windows up to out_len, then one fewer per lead
    assert [r["windows"] for r in leads] == [26] * 5 + list(range(25, 10, -1))
    metrics = json.loads((results / "r0" / "metrics.json").read_text())
    for k in range(5):  # within the training horizon: the very scores of the run's metrics.json
        assert leads[k]["model_rmse"] == pytest.approx(metrics["test"]["rmse_latweighted_by_lead"][k], rel=1e-6)
        assert leads[k]["model_acc"] == pytest.approx(metrics["test"]["acc_latweighted_by_lead"][k], rel=1e-6)
        assert leads[k]["persistence_rmse"] == pytest.approx(metrics["persistence"]["rmse_latweighted_by_lead"][k],
                                                             rel=1e-9)
        assert leads[k]["climatology_rmse"] == pytest.approx(metrics["climatology"]["rmse_latweighted_by_lead"][k],
                                                             rel=1e-9)
    for r in leads:
        assert r["skill_vs_persistence"] == pytest.approx(1 - r["model_rmse"] / r["persistence_rmse"], rel=1e-12)
    # persistence at lead 20 from frames.npy alone: the 11 windows whose truth lies in the split
    meta = json.loads((data / "embedded" / "meta.json").read_text())
    frames = np.load(data / "embedded" / "frames.npy").astype(np.float64)
    starts = np.load(data / "embedded" / "windows_test.npy")[:11]
    err2 = (frames[starts + 9 + 20, 0] - frames[starts + 9, 0]) ** 2
    w = np.cos(np.deg2rad(meta["grid"]["lat"]))
    expected = np.sqrt((err2.mean(axis=(0, 2)) * w).sum() / w.sum())
    assert leads[19]["persistence_rmse"] == pytest.approx(expected, rel=1e-9)
    lines = out.splitlines()
    assert any(line.split("│")[1:3] == [" 20   ", " 11      "] for line in lines if "│" in line), out
    png = results / "r0" / "skill_by_lead_test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in out.replace("\n", "")
    code, _, err = cli(["evaluate", "r0", "--lead", "0", "--results-dir", str(results), "--data-dir", str(data)],
                       monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: --lead must be >= 1, got 0"


def test_a_persistence_file_written_by_xarray_reproduces_svqbench_persistence_and_joins_compare(run, tmp_path,
                                                                                               monkeypatch, capsys):
    results, data = run
    path = tmp_path / "persistence.nc"
    write_persistence(data / "embedded", path)
    code, out, err = cli(["score", str(path), "--dataset", "embedded", "--name", "persistence-xr", "--beside", "r0",
                          "--results-dir", str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 0, err
    mine = json.loads((results / "external-persistence-xr" / "metrics.json").read_text())
    theirs = json.loads((results / "r0" / "metrics.json").read_text())["persistence"]
    compared = 0
    for key, value in theirs.items():
        if isinstance(value, float):
            assert mine["test"][key] == pytest.approx(value, rel=1e-6), key
            compared += 1
        elif isinstance(value, list) and value and isinstance(value[0], float):
            np.testing.assert_allclose(mine["test"][key], value, rtol=1e-6, err_msg=key)
    assert compared == 14  # per-pixel (4), lat-weighted (3), ACC (1) and RMSE and ACC of the 3 WB2 regions (6)
    # per-window errors, as a run saves them, from frames.npy alone
    frames = np.load(data / "embedded" / "frames.npy").astype(np.float64)
    starts = np.load(data / "embedded" / "windows_test.npy")
    last = frames[starts + 9]
    expected = ((_truth(data / "embedded") - last[:, 0, None]) ** 2).mean(axis=(1, 2, 3))
    with np.load(results / "external-persistence-xr" / "window_errors_test.npz") as saved:
        np.testing.assert_allclose(saved["mse"], expected, rtol=1e-6)
        np.testing.assert_array_equal(saved["window_start"], starts)
    # beside svqbench's own run in compare, paired with that cell's `none` baseline
    code, out, err = cli(["compare", str(results)], monkeypatch, capsys)
    assert code == 0 and "external persistence-xr" in out, err
    table = compare_table(load_leaderboards(results, warn=lambda m: None))
    row = table[table["method"] == "external persistence-xr"].iloc[0]
    assert row["model"] == "external" and row["mse_mean"] == pytest.approx(theirs["mse_per_pixel"], rel=1e-6)
    assert isinstance(row["mse_verdict"], str) and row["mse_verdict"]
    assert row["ci_method"] == "cannot tell from one seed on 26 windows: run 3 seeds"
    assert "none: 1 seed" in err and "persistence-xr: 1 seed" not in err  # a file has no seeds to run more of
    code, out, err = cli(["compare", str(results), "--scorecard"], monkeypatch, capsys)
    assert code == 0 and "external-persistence-xr" in out, err


def test_an_ensemble_file_gets_the_crps_of_scores_and_a_spread_skill_ratio(run, tmp_path, monkeypatch, capsys):
    results, data = run
    path = tmp_path / "ensemble.nc"
    forecast = write_persistence(data / "embedded", path, members=4)
    code, out, err = cli(["score", str(path), "--dataset", "embedded", "--name", "noisy-persistence",
                          "--results-dir", str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 0, err
    assert "crps_fair" in out and "spread_skill_ratio" in out
    test = json.loads((results / "external-noisy-persistence" / "metrics.json").read_text())["test"]
    fcst = forecast["air_temperature"].astype(np.float64)
    obs = xr.DataArray(_truth(data / "embedded"), dims=("time", "prediction_timedelta", "latitude", "longitude"),
                       coords={"time": fcst["time"], "prediction_timedelta": fcst["prediction_timedelta"],
                               "latitude": fcst["latitude"]})
    weights = np.cos(np.deg2rad(fcst["latitude"]))
    for method in ("ecdf", "fair"):
        expected = crps_for_ensemble(fcst, obs, ensemble_member_dim="member", method=method, weights=weights)
        assert test[f"crps_{method}"] == pytest.approx(float(expected), rel=1e-6)
    mean_error = (fcst.mean("member") - obs) ** 2
    assert test["rmse_latweighted"] == pytest.approx(float(np.sqrt(mean_error.weighted(weights).mean())), rel=1e-6)
    spread = np.sqrt(fcst.var("member", ddof=1).weighted(weights).mean())
    assert test["spread_skill_ratio"] == pytest.approx(float(spread / np.sqrt(mean_error.weighted(weights).mean())),
                                                       rel=1e-6)
    assert test["ensemble_members"] == 4


def _bad(name: str, forecast: xr.Dataset) -> xr.Dataset:
    if name == "grid":
        return forecast.isel(latitude=slice(1, None))
    if name == "shifted":
        return forecast.assign_coords(longitude=forecast["longitude"] + 0.5)
    if name == "lead":
        return forecast.isel(prediction_timedelta=slice(0, 4))
    if name == "units":
        forecast["air_temperature"].attrs["units"] = "degC"
        return forecast
    if name == "outside":  # 30 years earlier: the validation years
        return forecast.assign_coords(time=[d.replace(year=d.year - 30) for d in forecast["time"].values])
    if name == "windows":
        return forecast.isel(time=slice(0, 20))
    if name == "nan":
        forecast["air_temperature"][3, 1, 5, 5] = np.nan
        return forecast
    raise AssertionError(name)


@pytest.mark.parametrize("name, message", [
    ("grid", "latitude has 36 points, the dataset's grid 37: another grid"),
    ("shifted", "its longitude (225.5..315.5) differs from the dataset's (225..315) by up to 0.5 degrees"),
    ("lead", "missing lead(s) 5 (in steps of 1 year); the dataset is scored on leads 1..5"),
    ("units", "air_temperature has units 'degC'; the dataset's are 'K' (convert it)"),
    ("outside", "26 initialisation time(s) are not the last input frame of a test window of dataset embedded"),
    ("windows", "forecasts 20 of the 26 test windows; score needs every one"),
    ("nan", "NaN or infinite values in the forecast initialised at 2072-06-01 00:00:00 (1 value(s))"),
])
def test_bad_forecast_files_are_one_line_and_record_nothing(run, tmp_path, monkeypatch, capsys, name, message):
    results, data = run
    good = tmp_path / "good.nc"
    path = tmp_path / f"{name}.nc"
    _bad(name, write_persistence(data / "embedded", good)).to_netcdf(path)
    board = (results / "leaderboard.csv").read_text()
    code, out, err = cli(["score", str(path), "--dataset", "embedded", "--name", f"bad-{name}",
                          "--results-dir", str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (results / f"external-bad-{name}").exists() and (results / "leaderboard.csv").read_text() == board


def test_predict_members_writes_a_seed_ensemble_that_score_reads(run, tmp_path, monkeypatch, capsys):
    results, data = run
    run_experiment(resolve(cli=dict(TINY, quantizer="none", seed=7)), results_dir=results, data_dir=data,
                   run_id="r0-seed7")
    out = tmp_path / "seeds.nc"
    code, stdout, err = cli(["predict", "r0", "--members", "r0-seed7", "--out", str(out), "--results-dir",
                             str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 0 and "26 forecasts by 2 members of 5 steps" in stdout, err
    with xr.open_dataset(out) as f:
        ensemble = f["air_temperature"].load()
        assert ensemble.dims == ("time", "member", "prediction_timedelta", "latitude", "longitude")
        assert json.loads(f.attrs["svqbench_members"]) == ["r0", "r0-seed7"]
    for i, member in enumerate(["r0", "r0-seed7"]):  # each member is that run's own forecast
        single, _ = predict_run(member, results_dir=results, data_dir=data, out=tmp_path / f"{member}.nc")
        with xr.open_dataset(single) as f:
            np.testing.assert_array_equal(ensemble.isel(member=i).values, f["air_temperature"].values)
    code, stdout, err = cli(["score", str(out), "--dataset", "embedded", "--name", "seeds", "--results-dir",
                             str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 0, err
    test = json.loads((results / "external-seeds" / "metrics.json").read_text())["test"]
    obs = xr.DataArray(_truth(data / "embedded"), dims=("time", "prediction_timedelta", "latitude", "longitude"),
                       coords={"latitude": ensemble["latitude"]})
    fcst = ensemble.drop_vars(["time", "prediction_timedelta", "valid_time", "window_start"]).astype(np.float64)
    weights = np.cos(np.deg2rad(ensemble["latitude"]))
    expected = crps_for_ensemble(fcst, obs, ensemble_member_dim="member", method="fair", weights=weights)
    assert test["crps_fair"] == pytest.approx(float(expected), rel=1e-6) and test["ensemble_members"] == 2
    # another recipe is not a seed ensemble
    run_experiment(resolve(cli=dict(TINY, quantizer="none", seed=8, loss="l2", max_steps_per_epoch=2)),
                   results_dir=results, data_dir=data, run_id="r0-mse")
    code, _, err = cli(["predict", "r0", "--members", "r0-mse", "--out", str(tmp_path / "bad.nc"), "--results-dir",
                        str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 2 and "--members r0-mse is not the recipe of r0: loss 'l2' vs" in err


def test_leads_past_the_datasets_horizon_are_said_and_not_scored(run, tmp_path, monkeypatch, capsys):
    results, data = run
    path = tmp_path / "longer.nc"
    five = write_persistence(data / "embedded", tmp_path / "five.nc")
    longer = xr.concat([five, five.isel(prediction_timedelta=[0, 1]).assign_coords(prediction_timedelta=[6, 7])],
                       dim="prediction_timedelta")
    longer["prediction_timedelta"].attrs["units"] = "years"
    longer.to_netcdf(path)
    code, out, err = cli(["score", str(path), "--dataset", "embedded", "--name", "longer", "--run-id", "ext-longer",
                          "--results-dir", str(results), "--data-dir", str(data)], monkeypatch, capsys)
    assert code == 0 and "scored leads 1..5 (the dataset's out_len); 2 further lead(s) of the file were not scored" \
        in out.replace("\n", " "), err
    metrics = json.loads((results / "ext-longer" / "metrics.json").read_text())
    theirs = json.loads((results / "r0" / "metrics.json").read_text())["persistence"]
    assert metrics["test"]["rmse_latweighted"] == pytest.approx(theirs["rmse_latweighted"], rel=1e-6)
    assert metrics["external"]["leads_not_scored"] == 2


def test_a_recurrent_model_rolls_out_too(run, tmp_path):
    results, data = run
    from svqbench.score import evaluate_leads
    run_experiment(resolve(cli=dict(model="convlstm", epochs=1, batch_size=8, warmup_epochs=0, max_steps_per_epoch=2)),
                   results_dir=results, data_dir=data, run_id="rc")
    _, record = evaluate_leads("rc", 8, results_dir=results, data_dir=data)
    metrics = json.loads((results / "rc" / "metrics.json").read_text())["test"]
    assert [r["windows"] for r in record["leads"]] == [26] * 5 + [25, 24, 23]
    np.testing.assert_allclose([r["model_rmse"] for r in record["leads"][:5]], metrics["rmse_latweighted_by_lead"],
                               rtol=1e-6)
    assert all(np.isfinite(r["model_rmse"]) for r in record["leads"])


def test_svqbench_own_forecast_file_north_to_south_too_reproduces_the_runs_test_scores(run, tmp_path):
    results, data = run
    from svqbench.score import score_file
    path, _ = predict_run("r0", results_dir=results, data_dir=data, out=tmp_path / "own.nc")
    with xr.open_dataset(path) as f:
        f.isel(latitude=slice(None, None, -1)).to_netcdf(tmp_path / "flipped.nc")
    metrics = json.loads((results / "r0" / "metrics.json").read_text())["test"]
    for name, file in (("own", path), ("flipped", tmp_path / "flipped.nc")):
        _, scored = score_file(file, dataset="embedded", name=name, run_id=f"ext-{name}", beside="r0",
                               results_dir=results, data_dir=data)
        for key in ("mse_per_pixel", "rmse_latweighted", "acc_latweighted", "rmse_latweighted_tropics"):
            assert scored["test"][key] == pytest.approx(metrics[key], rel=1e-6), (name, key)


def test_timedelta_leads_are_read_in_steps_of_the_dataset(tmp_path):
    from svqbench.predict import parse_step
    from svqbench.score import _lead_steps
    xr.Dataset(coords={"prediction_timedelta": np.arange(1, 6) * np.timedelta64(6, "h")}).to_netcdf(tmp_path / "l.nc")
    for decode in (False, True):
        with xr.open_dataset(tmp_path / "l.nc", decode_timedelta=decode) as f:
            np.testing.assert_array_equal(_lead_steps(f, parse_step("6 hours"), tmp_path), [1, 2, 3, 4, 5])
            np.testing.assert_array_equal(_lead_steps(f, parse_step("1 hour"), tmp_path), [6, 12, 18, 24, 30])
            with pytest.raises(UserError, match="its leads are in seconds but the dataset's step is 1 month"):
                _lead_steps(f, parse_step("1 month"), tmp_path)
