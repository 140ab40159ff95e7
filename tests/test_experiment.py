"""One run end to end under faults: nothing lost, nothing misreported, one line per failure.
(issue 12: leaderboard names, aux-loss resume, best.pt digest, non-finite metrics, file-system
errors, validation before anything is created, model-size bounds, recipes, the printed run folder)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import cli
from scaling_data import FLAGS, cli_flags, make_tiny_dataset
from svqbench import experiment
from svqbench.checkpoint import BEST, CHECKPOINT, save_best
from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.results import LEADERBOARD, compare_table, load_leaderboards, read_leaderboard
from svqbench.train import TrainOptions


def run(cfg_flags: dict, results: Path, tiny_root: Path, name: str, **options) -> dict:
    return experiment.run_experiment(resolve(cli={**FLAGS, **cfg_flags}), results_dir=results, data_dir=tiny_root,
                                     run_id=name, options=TrainOptions(**options))


# ---- 1. run names are text in the leaderboard

def test_run_names_that_look_like_numbers_or_missing_values_stay_exact(tiny_root, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    names = ["007", "NA", "null", "None", "1e3"]
    for name in names:
        run(dict(epochs=1), results, tiny_root, name)
    board = read_leaderboard(results / LEADERBOARD)
    assert list(board["run_id"]) == names and board["test_mae"].dtype.kind == "f"
    assert [line.split(",")[0] for line in (results / LEADERBOARD).read_text().splitlines()[1:]] == names
    code, _, err = cli(["run", "--resume", "007", "--results-dir", str(results), "--data-dir", str(tiny_root)],
                       monkeypatch, capsys)
    assert code == 2 and "already finished" in err  # found, so not run twice
    assert len(read_leaderboard(results / LEADERBOARD)) == len(names)
    table = compare_table(load_leaderboards(results))
    assert table.loc[table.method == "svq", "runs"].iloc[0] == len(names)


# ---- 2. the aux-loss average survives a resume

def test_resumed_vq_run_reports_the_same_aux_loss(tiny_root, tmp_path, monkeypatch):
    flags = dict(quantizer="vq", codebook_size=16, epochs=2)
    reference = run(flags, tmp_path / "ref", tiny_root, "ref", checkpoint_every=1)
    real, calls = experiment.train.__globals__["save_checkpoint"], [0]

    def interrupt_after_six(payload, run_dir):  # epoch 1, step 2: mid-epoch
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return real(payload, run_dir)
    monkeypatch.setitem(experiment.train.__globals__, "save_checkpoint", interrupt_after_six)
    with pytest.raises(KeyboardInterrupt):
        run(flags, tmp_path / "killed", tiny_root, "run", checkpoint_every=1)
    monkeypatch.setitem(experiment.train.__globals__, "save_checkpoint", real)
    resumed = experiment.resume_experiment(tmp_path / "killed" / "run", results_dir=tmp_path / "killed",
                                           data_dir=tiny_root)
    assert reference["train_aux_loss"] > 0
    assert resumed["train_aux_loss"] == reference["train_aux_loss"]
    log = pd.read_csv(tmp_path / "killed" / "run" / "log.csv")
    assert list(log["aux_loss"]) == list(pd.read_csv(tmp_path / "ref" / "ref" / "log.csv")["aux_loss"])


# ---- 3 and 4. best.pt has a digest; broken weights never make a finished run

def _finished_training_then_lost_the_end(results: Path, tiny_root: Path) -> Path:
    """A run whose training finished but whose test evaluation never happened (killed)."""
    run(dict(epochs=1), results, tiny_root, "r")
    run_dir = results / "r"
    (run_dir / "metrics.json").unlink()
    (results / LEADERBOARD).unlink()
    return run_dir


def test_truncated_best_checkpoint_is_one_line_naming_the_file(tiny_root, tmp_path, monkeypatch, capsys):
    run_dir = _finished_training_then_lost_the_end(tmp_path, tiny_root)
    best = run_dir / BEST
    best.write_bytes(best.read_bytes()[:-500])
    code, _, err = cli(["run", "--resume", str(run_dir), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    errors = [line for line in err.splitlines() if not line.startswith("resuming ")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ")
    assert f"{best} is not a readable checkpoint" in err and "Traceback" not in err
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    save_best(run_dir, model_state=state["model"], epoch=0, val_loss=1.0, config={})
    raw = bytearray(best.read_bytes())
    weights = max(state["model"].values(), key=lambda t: t.numel()).numpy().tobytes()
    at = raw.find(weights) + len(weights) // 2  # a flipped bit inside the weights: torch.load does not notice
    raw[at] ^= 0x01
    best.write_bytes(bytes(raw))
    code, _, err = cli(["run", "--resume", str(run_dir), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 2 and f"{best} is corrupt (content digest mismatch)" in err


def test_non_finite_test_metrics_fail_the_run_and_write_no_row(tiny_root, tmp_path, monkeypatch, capsys):
    run_dir = _finished_training_then_lost_the_end(tmp_path, tiny_root)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)["model"]
    broken = {k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()}
    save_best(run_dir, model_state=broken, epoch=0, val_loss=1.0, config={})  # a valid digest, NaN weights
    code, _, err = cli(["run", "--resume", str(run_dir), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    errors = [line for line in err.splitlines() if not line.startswith("resuming ")]
    assert code == 1 and "non-finite test metrics" in err and len(errors) == 1
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["failure"]["reason"] == "non-finite test metrics"
    assert not (tmp_path / LEADERBOARD).exists()
    code, _, err = cli(["evaluate", str(run_dir), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 1 and "non-finite test metrics" in err and not (run_dir / "metrics_test.json").exists()


# ---- 5 and 6. file-system errors

DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["svqbench", *sys.argv[2:]]
from svqbench.cli import main
main()
"""


def test_a_full_disk_during_a_run_is_one_line_and_leaves_no_temp_files(tiny_root, tmp_path):
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-c", DISK_FULL, "20000", "run", *cli_flags(epochs=1, warmup_epochs=0), "--quiet",
                          "--name", "full", "--results-dir", str(results), "--data-dir", str(tiny_root)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: cannot write ") and "File too large" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    left = [p.name for p in (results / "full").iterdir()]
    assert not [n for n in left if ".tmp" in n or n.endswith(".next")] and "config.json" in left
    assert not (results / LEADERBOARD).exists()


def test_prepare_that_runs_out_of_disk_after_the_frames_keeps_the_old_dataset(tmp_path):
    inject = """
import errno, sys
import numpy as np
import svqbench.data.prepared as prepared
def no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")
prepared.np.save = no_space
sys.argv = ["svqbench", "prepare", "embedded", "--data-dir", sys.argv[1]]
from svqbench.cli import main
main()
"""
    data = tmp_path / "data"
    make_tiny_dataset(data)
    before = (data / "embedded" / "meta.json").read_bytes()
    out = subprocess.run([sys.executable, "-c", inject, str(data)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "cannot write" in out.stderr and "No space left on device" in out.stderr
    assert "Traceback" not in out.stderr and (data / "embedded" / "meta.json").read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == ["embedded"]  # no temp folder left


def test_files_where_folders_are_expected(tiny_root, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, _, err = cli(["run", *cli_flags(epochs=1), "--results-dir", str(a_file), "--data-dir", str(tiny_root)],
                       monkeypatch, capsys)
    assert code == 2 and err.startswith(f"error: cannot write {a_file}") and a_file.read_text() == ""
    code, _, err = cli(["run", *cli_flags(epochs=1), "--results-dir", str(tmp_path / "r"), "--data-dir",
                        str(a_file)], monkeypatch, capsys)
    assert code == 2 and err.startswith(f"error: cannot write {a_file}") and not (tmp_path / "r").exists()
    results = tmp_path / "results"
    run(dict(epochs=1), results, tiny_root, "r0")
    code, _, err = cli(["compare", str(results), "--csv", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "it is a folder; give a file name" in err
    new = tmp_path / "new"  # the README's example with a folder that does not exist yet
    code, _, err = cli(["compare", str(results), "--csv", str(new / "table.csv"), "--plots", str(new),
                        "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 0, err
    assert (new / "table.csv").is_file() and any(new.glob("*.png"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_read_only_results_folder(tiny_root):
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp())
    try:
        make_tiny_dataset(base / "data")
        results = base / "results"
        results.mkdir()
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(results, 0o555)
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                              "svqbench", "run", *cli_flags(epochs=1), "--quiet", "--results-dir", str(results),
                              "--data-dir", str(base / "data")], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, HOME=str(base)))
        assert out.returncode == 2 and out.stderr.startswith("error: cannot write") and "Permission denied" in out.stderr
        assert os.listdir(results) == []
    finally:
        shutil.rmtree(base)


# ---- 7, 8, 9. everything is checked before anything is created

@pytest.mark.parametrize("flags, message", [
    (["--device", "foo"], "unknown device 'foo'"),
    (["--device", ""], "unknown device ''"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--codebook-init", "bogus"], "unknown codebook-init 'bogus'"),
    (["--hid-s", "100000000"], "hid-s 100000000 is beyond any sensible model"),
    (["--hid-t", "60000"], "billion parameters"),
    (["--n-s", "10"], "n-s 10 halves the 8 x 8 frame 5 times, below one cell; use an even n-s <= 6"),
    (["--n-s", "1"], "n-s 1 would build no encoder block; use n-s 2"),
    (["--n-s", "3"], "n-s 3 would build 2 blocks, the same model as n-s 2; use n-s 2 or 4"),
    (["--n-t", "100000"], "n-t 100000 translator blocks"),
    (["--lr", "1e39"], "lr 1e+39 is beyond float32's range"),
])
def test_bad_values_are_refused_before_the_run_folder_exists(flags, message, tiny_root, tmp_path, monkeypatch,
                                                             capsys):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    results = tmp_path / "results"
    code, _, err = cli(["run", *cli_flags(epochs=1), *flags, "--name", "x", "--results-dir", str(results),
                        "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not results.exists()


def test_the_n_s_hint_is_a_value_that_runs_and_a_too_small_grid_says_so():
    from svqbench.models import ForecastShape, check_model_size
    check_model_size(resolve(cli={**FLAGS, "n_s": 6}), ForecastShape(4, 2, 1, 8, 8))  # the hint above: accepted
    for h, w in ((1, 1), (1, 40)):  # the old hint said "use n-s <= 1", which then crashed
        with pytest.raises(UserError, match=f"a {h} x {w} grid is too small for any SimVP encoder") as info:
            check_model_size(resolve(cli=FLAGS), ForecastShape(4, 2, 1, h, w))
        assert "n-s <=" not in str(info.value)


def test_device_is_checked_before_a_dataset_is_prepared(tmp_path):
    with pytest.raises(UserError, match="unknown device"):
        experiment.run_experiment(resolve(cli={"dataset": "weatherbench-s-t2m"}), results_dir=tmp_path / "r",
                                  data_dir=tmp_path / "d", device="gpu0")
    assert not (tmp_path / "d").exists()


# ---- 10. malformed recipes

def test_malformed_recipes_are_one_line(tmp_path, monkeypatch, capsys):
    from svqbench.recipes import load_recipe
    from svqbench.resources import recipe_dir
    text = (recipe_dir() / "table7.toml").read_text()
    bad_label = tmp_path / "bad.toml"
    bad_label.write_text(text.replace("[grid]", "[[cells]]\nlabel = 5\n\n[grid]", 1))
    with pytest.raises(UserError, match="label 5 .* may only use letters"):
        load_recipe(bad_label)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(text.replace("Table 7", "Tabl\u00e9 7").encode("latin-1"))
    with pytest.raises(UserError, match="is not a UTF-8 text file"):
        load_recipe(latin)


# ---- 12, 13. what the user is told

def test_resume_by_path_prints_that_folder_and_early_stop_is_announced(tiny_root, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    code, out, err = cli(["run", *cli_flags(epochs=6, patience=1, lr=1e-2), "--name", "es", "--quiet",
                          "--results-dir", str(elsewhere), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((elsewhere / "es" / "metrics.json").read_text())
    if metrics["epochs_run"] < 6:
        assert "early stop after epoch" in err
    (elsewhere / "es" / "metrics.json").unlink()
    (elsewhere / LEADERBOARD).unlink()
    code, out, err = cli(["run", "--resume", str(elsewhere / "es"), "--quiet", "--data-dir", str(tiny_root)],
                         monkeypatch, capsys)
    assert code == 0, err
    assert f"-> {elsewhere / 'es'}" in " ".join(out.split())


# ---- issue 19 item 9: every command that takes --device checks it as `run` does

def test_evaluate_and_analyze_check_the_device_first(tiny_root, tmp_path, monkeypatch, capsys):
    from svqbench.models import ForecastShape
    from svqbench.runs import load_model, open_run
    results = tmp_path / "results"
    run(dict(epochs=1), results, tiny_root, "r")
    devices = [("foo", "unknown device 'foo'; use cpu, cuda or cuda:N")]
    if not torch.cuda.is_available():
        devices.append(("cuda", "--device cuda: CUDA is not available on this machine; use --device cpu"))
    for command in ("evaluate", "analyze"):
        for device, message in devices:
            code, _, err = cli([command, "r", "--device", device, "--results-dir", str(results),
                                "--data-dir", str(tiny_root)], monkeypatch, capsys)
            assert code == 2 and err.strip() == f"error: {message}", (command, device, err)
    assert sorted(p.name for p in (results / "r").iterdir() if p.name.startswith(("metrics_", "analysis"))) == []
    saved = open_run("r", results_dir=results)
    with pytest.raises(UserError, match="unknown device 'foo'"):
        load_model(saved.config, ForecastShape(4, 2, 1, 8, 8), results / "r" / BEST, device="foo")


def test_runs_and_export_check_the_device_without_importing_the_experiment():
    code = ("import sys, svqbench.runs, svqbench.export; "
            "assert 'svqbench.experiment' not in sys.modules, 'import cycle'; "
            "from svqbench.device import check_device; from svqbench import experiment; "
            "assert experiment.check_device is check_device")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# ---- issue 19 item 10: a folder where a checkpoint file belongs

def test_a_folder_named_like_a_checkpoint_is_refused_before_training(tiny_root, tmp_path, monkeypatch, capsys):
    from svqbench.checkpoint import PREVIOUS_CHECKPOINT
    results = tmp_path / "results"
    run(dict(epochs=2), results, tiny_root, "r")  # leaves checkpoint.pt (epoch 2) and checkpoint.prev.pt (epoch 1)
    run_dir = results / "r"
    (run_dir / "metrics.json").unlink()  # as if killed before the test evaluation
    (results / LEADERBOARD).unlink()
    (run_dir / CHECKPOINT).unlink()
    (run_dir / CHECKPOINT).mkdir()
    (run_dir / CHECKPOINT / "notes.txt").write_text("the user's")
    previous = (run_dir / PREVIOUS_CHECKPOINT).read_bytes()
    code, _, err = cli(["run", "--resume", str(run_dir), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {run_dir / CHECKPOINT} is a folder, not a checkpoint file; svqbench writes its checkpoints there: "
        f"move it out of the run folder, then resume"]
    assert (run_dir / CHECKPOINT / "notes.txt").read_text() == "the user's"  # nothing of the user's is moved
    assert (run_dir / PREVIOUS_CHECKPOINT).read_bytes() == previous
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".next") or ".tmp" in p.name]
    assert not (run_dir / "metrics.json").exists() and not (results / LEADERBOARD).exists()
    shutil.move(run_dir / CHECKPOINT, tmp_path / "moved")  # what the message says: then the resume works
    code, _, err = cli(["run", "--resume", str(run_dir), "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 0, err
    assert "resuming r from checkpoint.prev.pt: epoch 1 step 0" in err
