"""End to end: `svqbench run` on the embedded dataset with a tiny model, results and bad input."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from svqbench.errors import UserError
from svqbench.experiment import run_experiment
from svqbench.results import compare_table, load_leaderboards

TINY_FLAGS = ["--hid-s", "8", "--hid-t", "16", "--n-t", "2", "--epochs", "2", "--batch-size", "32",
              "--codebook-size", "64", "--quiet"]


def cli(*args: str, data_root: Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, SVQBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "svqbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_run_writes_a_complete_record(tiny_config, data_root, tmp_path):
    cfg = tiny_config(quantizer="svq")
    metrics = run_experiment(cfg, results_dir=tmp_path / "results", data_dir=data_root, run_id="a")
    run_dir = tmp_path / "results" / "a"
    assert {"config.json", "metrics.json", "log.csv", "best.pt"} <= {p.name for p in run_dir.iterdir()}
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["test"]["mse_per_pixel"] == metrics["test"]["mse_per_pixel"]
    test = saved["test"]
    assert math.isclose(test["rmse_per_pixel"], math.sqrt(test["mse_per_pixel"]))
    assert len(test["mae_per_pixel_by_lead"]) == 5 and "rmse_latweighted" in test
    # the reference forecasts are scored on the same split
    assert saved["persistence"]["mae_per_pixel"] > 0 and saved["climatology"]["mae_per_pixel"] > 0
    log = pd.read_csv(run_dir / "log.csv")
    assert list(log["epoch"]) == [0, 1] and log["val_loss"].notna().all()
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    assert len(board) == 1 and board.loc[0, "run_id"] == "a" and board.loc[0, "quantizer"] == "svq"
    assert json.loads((run_dir / "config.json").read_text())["config"]["codebook_size"] == 64


def test_runs_are_deterministic_on_cpu(tiny_config, data_root, tmp_path):
    cfg = tiny_config(quantizer="svq", epochs=1)
    a = run_experiment(cfg, results_dir=tmp_path / "r", data_dir=data_root, run_id="a")
    b = run_experiment(cfg, results_dir=tmp_path / "r", data_dir=data_root, run_id="b")
    assert a["test"]["mse_per_pixel"] == b["test"]["mse_per_pixel"]
    assert a["best_val_loss"] == b["best_val_loss"]


def test_existing_run_directory_is_never_overwritten(tiny_config, data_root, tmp_path):
    cfg = tiny_config(quantizer="none", epochs=1)
    run_experiment(cfg, results_dir=tmp_path / "r", data_dir=data_root, run_id="same")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r" / "same").iterdir()}
    with pytest.raises(UserError, match="already exists"):
        run_experiment(cfg, results_dir=tmp_path / "r", data_dir=data_root, run_id="same")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r" / "same").iterdir()} == before
    assert len(pd.read_csv(tmp_path / "r" / "leaderboard.csv")) == 1


def test_interrupted_run_leaves_the_leaderboard_intact(tiny_config, data_root, tmp_path):
    from svqbench.train import Reporter
    results = tmp_path / "r"
    run_experiment(tiny_config(quantizer="none", epochs=1), results_dir=results, data_dir=data_root, run_id="ok")
    board_before = (results / "leaderboard.csv").read_bytes()

    class CtrlC(Reporter):
        def epoch(self, row):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny_config(quantizer="svq"), results_dir=results, data_dir=data_root, run_id="killed",
                       reporter=CtrlC())
    assert (results / "leaderboard.csv").read_bytes() == board_before
    assert (results / "killed" / "best.pt").exists() and (results / "killed" / "log.csv").exists()
    assert not (results / "killed" / "metrics.json").exists()


def test_ctrl_c_on_the_cli_exits_130_and_keeps_the_leaderboard(data_root, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "leaderboard.csv").write_text("run_id,dataset\nold,embedded\n")
    env = dict(os.environ, SVQBENCH_DATA=str(data_root), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "svqbench", "run", *TINY_FLAGS, "--epochs", "500",
                             "--name", "r1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (results / "r1" / "log.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert (results / "leaderboard.csv").read_text() == "run_id,dataset\nold,embedded\n"


@pytest.mark.parametrize("flag, value, expected", [
    ("--quantizer", "bogus", "unknown quantizer 'bogus'; choose one of:"),
    ("--backbone", "bogus", "unknown backbone 'bogus'; choose one of:"),
    ("--dataset", "bogus", "unknown dataset 'bogus'; choose one of:"),
    ("--loss", "l3", "unknown loss 'l3'; choose one of: l1, l2"),
])
def test_unknown_names_list_the_valid_choices(flag, value, expected, data_root, tmp_path):
    res = cli("run", flag, value, data_root=data_root, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists()


def test_corrupt_prepared_dataset_says_how_to_prepare(data_root, tmp_path):
    frames = data_root / "embedded" / "frames.npy"
    frames.write_bytes(frames.read_bytes()[: 5000])
    res = cli("run", *TINY_FLAGS, data_root=data_root, cwd=tmp_path)
    assert res.returncode == 2
    assert "corrupt" in res.stderr and "svqbench prepare embedded" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_missing_meta_says_how_to_prepare(data_root, tmp_path):
    (data_root / "embedded" / "meta.json").unlink()
    res = cli("run", *TINY_FLAGS, data_root=data_root, cwd=tmp_path)
    assert res.returncode == 2 and "missing meta.json" in res.stderr and "svqbench prepare embedded" in res.stderr


def test_compare_shows_improvement_over_none_and_reference_rows(tiny_config, data_root, tmp_path):
    results = tmp_path / "r"
    for q, seed in (("none", 1), ("none", 2), ("svq", 1)):
        run_experiment(tiny_config(quantizer=q, seed=seed, epochs=1), results_dir=results, data_dir=data_root,
                       run_id=f"{q}{seed}")
    table = compare_table(load_leaderboards(results))
    assert set(table["method"]) == {"none", "svq", "persistence", "climatology", "input_mean"}
    none = table[table.method == "none"].iloc[0]
    svq = table[table.method == "svq"].iloc[0]
    assert none["runs"] == 2 and none["mse_std"] >= 0
    assert math.isclose(svq["mae_improvement_pct"], 100 * (none["mae_mean"] - svq["mae_mean"]) / none["mae_mean"])
    res = cli("compare", str(results), "--csv", str(tmp_path / "t.csv"), data_root=data_root, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "persistence" in res.stdout and "climatology" in res.stdout and "input_mean" in res.stdout
    assert len(pd.read_csv(tmp_path / "t.csv")) == 5


def test_compare_without_results_is_a_clear_error(data_root, tmp_path):
    res = cli("compare", str(tmp_path / "nothing"), data_root=data_root, cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr
