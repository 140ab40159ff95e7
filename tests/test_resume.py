"""A run killed with SIGKILL mid-epoch and resumed ends with exactly the metrics of an uninterrupted
run (CPU, deterministic mode), also when its newest checkpoint is corrupt."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from scaling_data import FLAGS, cli_flags
from svqbench.config import resolve
from svqbench.experiment import run_experiment
from svqbench.results import LEADERBOARD
from svqbench.checkpoint import CHECKPOINT, PREVIOUS_CHECKPOINT, read_checkpoint, save_checkpoint
from svqbench.train import TrainOptions

# 60 train windows, batch 16: 4 steps per epoch, 3 epochs. With a checkpoint after every step the
# 7th save is epoch 1 step 3: the process dies there, half-way through writing it, after training
# past the last complete checkpoint (epoch 1 step 2; the one before it is epoch 1 step 1).
KILL_AT_SAVE = 7
# noise injection and drop path make the result depend on the noise generator and torch's RNG
RUN = dict(FLAGS, noise=0.1, drop_path=0.2)

KILLER = """
import os, signal, sys
from pathlib import Path
import svqbench.train as train
real, calls = train.save_checkpoint, [0]

def save_then_die(payload, run_dir):
    calls[0] += 1
    if calls[0] == {kill_at}:
        (Path(run_dir) / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(payload, run_dir)

train.save_checkpoint = save_then_die
sys.argv = ["svqbench", "run", *sys.argv[1:]]
from svqbench.cli import main
main()
"""


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory) -> dict:
    """The uninterrupted run."""
    results = tmp_path_factory.mktemp("reference")
    metrics = run_experiment(resolve(cli=RUN), results_dir=results, data_dir=tiny_root, run_id="ref",
                             options=TrainOptions(checkpoint_every=1))
    return {"metrics": metrics, "log": _log(results / "ref")}


@pytest.fixture(scope="module")
def killed_run(tiny_root, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("killed")
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([sys.executable, "-c", KILLER.replace("{kill_at}", str(KILL_AT_SAVE)),
                           *cli_flags(**RUN), "--checkpoint-every", "1", "--name", "run", "--quiet",
                           "--results-dir", str(results), "--data-dir", str(tiny_root)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return results / "run"


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv") as f:
        return [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "best")} for r in csv.DictReader(f)]


def _resume(run_dir: Path, tiny_root: Path, monkeypatch, capsys) -> tuple[int, str]:
    from svqbench import cli
    monkeypatch.setattr(sys, "argv", ["svqbench", "run", "--resume", str(run_dir), "--quiet",
                                      "--data-dir", str(tiny_root)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr().err


def _same_as_reference(run_dir: Path, reference: dict) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ref = reference["metrics"]
    assert metrics["status"] == "finished"
    assert metrics["test"] == ref["test"]  # exactly equal, every figure and lead time
    for key in ("best_epoch", "best_val_loss", "epochs_run", "persistence"):
        assert metrics[key] == ref[key], key
    assert _log(run_dir) == reference["log"]
    board = pd.read_csv(run_dir.parent / LEADERBOARD)
    assert list(board["run_id"]) == ["run"]  # the row is written once, at the end
    assert board["test_mae"].iloc[0] == ref["test"]["mae_per_pixel"]


def test_killed_run_left_last_good_checkpoints(killed_run):
    newest, previous = read_checkpoint(killed_run / CHECKPOINT), read_checkpoint(killed_run / PREVIOUS_CHECKPOINT)
    assert (newest["loop"]["epoch"], newest["loop"]["step"]) == (1, 2)
    assert (previous["loop"]["epoch"], previous["loop"]["step"]) == (1, 1)
    assert not (killed_run / "metrics.json").exists()
    assert not (killed_run.parent / LEADERBOARD).exists()


def test_sigkill_mid_epoch_then_resume_is_exact(killed_run, reference, tiny_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    code, err = _resume(run_dir, tiny_root, monkeypatch, capsys)
    assert code == 0, err
    assert "resuming run from checkpoint.pt: epoch 1 step 2" in err
    assert "process(es)" not in err  # same world size: nothing to warn about
    _same_as_reference(run_dir, reference)

    code, err = _resume(run_dir, tiny_root, monkeypatch, capsys)  # a finished run is not run twice
    assert code == 2 and "already finished" in err and len(err.strip().splitlines()) == 1


def test_corrupt_newest_checkpoint_falls_back_and_is_exact(killed_run, reference, tiny_root, tmp_path,
                                                           monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    newest = run_dir / CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:-1000])  # truncated
    code, err = _resume(run_dir, tiny_root, monkeypatch, capsys)
    assert code == 0, err
    assert f"checkpoint {newest} is unreadable" in err and "falling back to the previous one" in err
    assert "resuming run from checkpoint.prev.pt: epoch 1 step 1" in err
    _same_as_reference(run_dir, reference)


def test_resuming_on_another_number_of_processes_says_so(killed_run, tiny_root, tmp_path, monkeypatch, capsys):
    """issue 19 item 21: a checkpoint written by a 2-rank torchrun launch, resumed by one process."""
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    payload = read_checkpoint(run_dir / CHECKPOINT)
    assert payload["world_size"] == 1  # the checkpoint records the world size that wrote it
    scratch = tmp_path / "scratch"
    save_checkpoint({**payload, "world_size": 2}, scratch)  # sealed anew, as a 2-rank launch writes it
    shutil.copyfile(scratch / CHECKPOINT, run_dir / CHECKPOINT)
    code, err = _resume(run_dir, tiny_root, monkeypatch, capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "process(es)" in line] == [
        "warning: checkpoint.pt was written by 2 process(es), this resume runs on 1: the run goes on with the same "
        "global batch, but its results will not be bit-identical to an uninterrupted run; resume with "
        "`torchrun --nproc_per_node 2 -m svqbench run --resume ...` for that"]
    assert json.loads((run_dir / "metrics.json").read_text())["runtime"]["world_size"] == 1
