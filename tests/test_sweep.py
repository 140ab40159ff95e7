"""`svqbench sweep`: every cell x seed once, finished cells skipped, crashed cells resumed or
restarted, stale claims taken over, live ones respected, two sweeps at once never run a cell twice."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from svqbench.errors import UserError
from svqbench.recipes import load_recipe
from svqbench.results import append_row, compare_table, load_leaderboards
from svqbench.sweep import _owner, plan, run_sweep, sweep_dir, try_claim

TWO_BY_TWO = """
title = "tiny"
[grid]
quantizer = ["none", "svq"]
noise = [0.0, 0.3]
[scales.paper.config]
dataset = "embedded"
[scales.quick]
seeds = 1
[scales.quick.config]
dataset = "embedded"
hid_s = 8
hid_t = 16
n_t = 2
mlp_ratio = 2.0
epochs = 1
batch_size = 32
codebook_size = 64
warmup_epochs = 0
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TWO_BY_TWO)
    return load_recipe(path)


class FakeRunner:
    """Stands in for run_experiment: makes the run folder, appends the leaderboard row."""

    def __init__(self, fail: set[str] = frozenset(), sleep: float = 0.0):
        self.calls: list[tuple[str, bool]] = []
        self.fail, self.sleep = fail, sleep

    def __call__(self, cfg, *, results_dir, data_dir, run_id, device, reporter, options):
        self.calls.append((run_id, options.resume))
        run_dir = Path(results_dir) / run_id
        run_dir.mkdir(exist_ok=options.resume)
        (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
        time.sleep(self.sleep)
        if run_id in self.fail:
            raise RuntimeError("boom")
        append_row(results_dir, {"run_id": run_id, "dataset": cfg.dataset, "scale": cfg.scale,
                                 "backbone": cfg.backbone, "quantizer": cfg.quantizer, "seed": cfg.seed,
                                 "noise": cfg.noise, "test_mse": 1.0 + cfg.noise, "test_mae": 0.5})
        return {"test": {"mse_per_pixel": 1.0, "mae_per_pixel": 0.5}}


def test_plan_names_every_cell_and_seed(recipe):
    jobs = plan(recipe, "quick", seeds=2)
    assert [j.run_id for j in jobs] == [f"tiny-quick-{q}-noise{e}-s{s}" for q in ("none", "svq")
                                        for e in ("0.0", "0.3") for s in (42, 43)]
    assert {(j.config.quantizer, j.config.noise, j.config.seed) for j in jobs} == \
        {(q, e, s) for q in ("none", "svq") for e in (0.0, 0.3) for s in (42, 43)}
    assert [j.run_id for j in plan(recipe, "quick", cells="svq-*")] == ["tiny-quick-svq-noise0.0-s42",
                                                                        "tiny-quick-svq-noise0.3-s42"]
    with pytest.raises(UserError, match=r"--cells 'vq\*' matches no cell of tiny \(quick\); cells: none-noise0.0"):
        plan(recipe, "quick", cells="vq*")
    with pytest.raises(UserError, match=r"--seeds must be >= 1, got 0"):
        plan(recipe, "quick", seeds=0)


def test_second_sweep_skips_finished_cells_and_reruns_failed_ones(recipe, tmp_path):
    runner = FakeRunner(fail={"tiny-quick-svq-noise0.0-s42"})
    first = run_sweep(recipe, "quick", results_dir=tmp_path / "r", runner=runner)
    assert len(first.ran) == 3 and list(first.failed) == ["tiny-quick-svq-noise0.0-s42"]
    assert "RuntimeError: boom" in (first.directory / "tiny-quick-svq-noise0.0-s42.error.txt").read_text()
    runner = FakeRunner()
    second = run_sweep(recipe, "quick", results_dir=tmp_path / "r", runner=runner)
    assert len(second.done_before) == 3 and second.ran == ["tiny-quick-svq-noise0.0-s42"]
    # the failed attempt left a folder without a checkpoint: cleared, started fresh, error file gone
    assert runner.calls == [("tiny-quick-svq-noise0.0-s42", False)]
    assert not (second.directory / "tiny-quick-svq-noise0.0-s42.error.txt").exists()
    board = pd.read_csv(second.directory / "leaderboard.csv")
    assert sorted(board["run_id"]) == sorted(j.run_id for j in plan(recipe, "quick"))
    assert not list((second.directory / ".claims").glob("*.claim"))  # every claim released


def test_crashed_cell_resumes_from_its_checkpoint_when_the_config_is_unchanged(recipe, tmp_path):
    job = plan(recipe, "quick")[0]
    directory = sweep_dir(tmp_path / "r", recipe, "quick")
    run_dir = directory / job.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": job.config.to_dict()}))
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    runner = FakeRunner()
    run_sweep(recipe, "quick", results_dir=tmp_path / "r", runner=runner, cells=job.cell.label)
    assert runner.calls == [(job.run_id, True)]
    # same folder, but the recipe changed since the crash: start again
    other = plan(recipe, "quick")[1]
    stale = directory / other.run_id
    stale.mkdir()
    (stale / "config.json").write_text(json.dumps({"config": {**other.config.to_dict(), "epochs": 99}}))
    (stale / "checkpoint.pt").write_bytes(b"x")
    runner = FakeRunner()
    run_sweep(recipe, "quick", results_dir=tmp_path / "r", runner=runner, cells=other.cell.label)
    assert runner.calls == [(other.run_id, False)] and not (stale / "checkpoint.pt").exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_claims_are_taken_over_and_live_ones_respected(recipe, tmp_path):
    directory = sweep_dir(tmp_path / "r", recipe, "quick")
    claims = directory / ".claims"
    claims.mkdir(parents=True)
    jobs = plan(recipe, "quick")
    (claims / f"{jobs[0].run_id}.claim").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    (claims / f"{jobs[1].run_id}.claim").write_text("")  # torn claim: its writer died mid-write
    (claims / f"{jobs[2].run_id}.claim").write_text(json.dumps(_owner()))  # this live process
    (claims / f"{jobs[3].run_id}.claim").write_text(json.dumps({**_owner(), "host": "elsewhere"}))
    report = run_sweep(recipe, "quick", results_dir=tmp_path / "r", runner=FakeRunner())
    assert report.ran == [jobs[0].run_id, jobs[1].run_id]
    assert report.busy == [jobs[2].run_id, jobs[3].run_id]
    assert (claims / f"{jobs[2].run_id}.claim").exists()  # someone else's claim is left alone
    # a reused PID (same pid, later start time) is not the original claimant
    reused = {**_owner(), "start_ticks": _owner()["start_ticks"] - 1}
    (claims / f"{jobs[2].run_id}.claim").write_text(json.dumps(reused))
    assert try_claim(directory, jobs[2].run_id) == "claimed"
    assert try_claim(directory, jobs[2].run_id) == "busy"
    assert try_claim(directory, jobs[0].run_id) == "done"


def _sweep_in_child(recipe_path: str, results: str, queue) -> None:
    recipe = load_recipe(recipe_path)
    report = run_sweep(recipe, "quick", results_dir=Path(results), seeds=3, runner=FakeRunner(sleep=0.2))
    queue.put(report.ran)


def test_two_sweeps_at_once_share_the_cells(recipe, tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_sweep_in_child, args=(str(recipe.path), str(tmp_path / "r"), queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    ran = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    expected = sorted(j.run_id for j in plan(recipe, "quick", seeds=3))
    assert sorted(ran[0] + ran[1]) == expected  # each of the 12 runs exactly once, between the two
    assert ran[0] and ran[1]
    board = pd.read_csv(sweep_dir(tmp_path / "r", recipe, "quick") / "leaderboard.csv")
    assert sorted(board["run_id"]) == expected


def test_real_sweep_records_the_config_and_draws_the_figures(recipe, data_root, tmp_path):
    """One real tiny run through the sweep: its row carries the cell's settings (config.json is
    attached), and compare's figures come out as PNG files."""
    report = run_sweep(recipe, "quick", results_dir=tmp_path / "r", data_dir=data_root, cells="svq-noise0.3")
    assert report.ran == ["tiny-quick-svq-noise0.3-s42"] and not report.failed
    board = load_leaderboards(tmp_path / "r")
    row = board.iloc[0]
    assert (row["noise"], row["codebook_size"], row["hid_t"]) == (0.3, 64, 16)
    assert row["run_dir"] == str(report.directory / "tiny-quick-svq-noise0.3-s42")
    assert set(compare_table(board)["method"]) == {"svq", "persistence", "climatology", "input_mean"}
    from svqbench.plots import comparison_figures
    written = comparison_figures(board, tmp_path / "figs", data_dir=data_root)
    stem = "embedded-quick-gsta"
    assert sorted(p.name for p in written) == sorted([f"{stem}-learning-curves.png", f"{stem}-lead-time.png",
                                                      f"{stem}-sample-svq.png", f"{stem}-sample-svq-anomalies.png"])
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_sweep_cli_dry_run_lists_cells(recipe, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "svqbench", "sweep", str(recipe.path), "--dry-run", "--seeds", "2",
                          "--results-dir", str(tmp_path / "r")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("to run") == 8 and "8 runs, 0 done" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "svqbench", "sweep", str(recipe.path), "--scale", "huge"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown scale 'huge'" in bad.stderr and "Traceback" not in bad.stderr
