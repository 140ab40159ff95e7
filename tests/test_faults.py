"""Faults: corrupt checkpoints, non-finite loss/gradient, concurrent leaderboard writers."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from svqbench import experiment
from svqbench.errors import RunFailed
from svqbench.results import LEADERBOARD
from scaling_data import FLAGS, cli_flags
from svqbench.config import resolve
from svqbench.checkpoint import (CHECKPOINT, PREVIOUS_CHECKPOINT, load_latest_checkpoint, read_checkpoint,
                                 save_checkpoint)
from svqbench.train import NonFiniteError, TrainOptions


def _payload(step: int) -> dict:
    return {"model": {"w": torch.arange(64, dtype=torch.float32) * step, "b": torch.ones(3, dtype=torch.bfloat16)},
            "loop": {"epoch": 0, "step": step, "best": math.inf, "order": torch.arange(5)},
            "rng": {"numpy": {"state": {"state": 2 ** 100 + step}}}}


def test_checkpoint_keeps_previous_and_detects_corruption(tmp_path):
    save_checkpoint(_payload(1), tmp_path)
    save_checkpoint(_payload(2), tmp_path)
    assert read_checkpoint(tmp_path / CHECKPOINT)["loop"]["step"] == 2
    assert read_checkpoint(tmp_path / PREVIOUS_CHECKPOINT)["loop"]["step"] == 1
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()

    newest = tmp_path / CHECKPOINT
    data = bytearray(newest.read_bytes())
    # flip one byte inside the tensor data: torch.load alone would read this without complaint
    pos = data.index((torch.arange(64, dtype=torch.float32) * 2).numpy().tobytes()[40:48])
    data[pos] ^= 0xFF
    newest.write_bytes(bytes(data))
    notes: list[str] = []
    payload, name = load_latest_checkpoint(tmp_path, notes.append)
    assert (name, payload["loop"]["step"]) == (PREVIOUS_CHECKPOINT, 1)
    assert len(notes) == 1 and "digest mismatch" in notes[0] and str(newest) in notes[0]

    newest.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    notes.clear()
    payload, name = load_latest_checkpoint(tmp_path, notes.append)
    assert name == PREVIOUS_CHECKPOINT and "unreadable" in notes[0]

    (tmp_path / PREVIOUS_CHECKPOINT).write_bytes(b"")
    notes.clear()
    assert load_latest_checkpoint(tmp_path, notes.append) is None
    assert len(notes) == 2


def test_no_checkpoint_is_none(tmp_path):
    assert load_latest_checkpoint(tmp_path, lambda m: pytest.fail(m)) is None


class FailAt(torch.nn.Module):
    """Wraps a model; at the n-th training forward makes the loss (or only the gradient) NaN."""

    def __init__(self, inner, at_call: int, kind: str):
        super().__init__()
        self.inner, self.at_call, self.kind, self.calls = inner, at_call, kind, 0

    def __getattr__(self, name):  # everything else (quantizer, regularizer, ...) is the wrapped model's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, x, **model_inputs):  # target, step, generator: the forecasting-model interface
        pred, aux = self.inner(x, **model_inputs)
        if self.training:
            self.calls += 1
            if self.calls == self.at_call:
                if self.kind == "loss":
                    pred = pred * float("nan")
                else:
                    pred.register_hook(lambda g: g * float("nan"))
        return pred, aux


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_non_finite_stops_run_keeps_checkpoint_and_records(kind, tiny_root, tmp_path, monkeypatch):
    cfg = resolve(cli=FLAGS)  # 60 train windows, batch 16: 4 steps per epoch
    real_build = experiment.build_model
    monkeypatch.setattr(experiment, "build_model", lambda c, ds: FailAt(real_build(c, ds), 4 + 2, kind))
    results = tmp_path / "results"
    with pytest.raises(NonFiniteError) as info:
        experiment.run_experiment(cfg, results_dir=results, data_dir=tiny_root, run_id="nan",
                                  options=TrainOptions(checkpoint_every=0))
    message = str(info.value)
    assert f"non-finite {kind} at epoch 1 step 1" in message and "\n" not in message
    assert isinstance(info.value, RunFailed)
    run = results / "nan"
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "failed"
    assert (record["failure"]["epoch"], record["failure"]["step"]) == (1, 1)
    assert record["failure"]["reason"] == f"non-finite {kind}"
    kept = read_checkpoint(run / CHECKPOINT)  # the end of epoch 0: the last good state
    assert (kept["loop"]["epoch"], kept["loop"]["step"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in kept["model"].values())
    assert not (results / LEADERBOARD).exists()


def test_cli_non_finite_is_one_line_exit_1(tiny_root, tmp_path, monkeypatch, capsys):
    from svqbench import cli
    real_build = experiment.build_model
    monkeypatch.setattr(experiment, "build_model", lambda c, ds: FailAt(real_build(c, ds), 2, "loss"))
    monkeypatch.setattr(sys, "argv", ["svqbench", "run", *cli_flags(epochs=1, warmup_epochs=0), "--quiet",
                                      "--results-dir", str(tmp_path / "r"), "--data-dir", str(tiny_root)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run failed: non-finite loss at epoch 0 step 1")


WRITER = """
import sys, time
from pathlib import Path
from svqbench.results import append_row
results, who, rows = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not (results / "go").exists():
    time.sleep(0.01)
for i in range(rows):
    append_row(results, {"run_id": f"{who}-{i}", "writer": who, "i": i, "test_mse": i * 0.5})
"""


def test_concurrent_writers_lose_no_leaderboard_row(tmp_path):
    writers, rows = 4, 12
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{k}", str(rows)])
             for k in range(writers)]
    time.sleep(1.0)  # let every writer import pandas and wait at the start line
    (tmp_path / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * writers
    board = pd.read_csv(tmp_path / LEADERBOARD)
    assert len(board) == writers * rows
    assert set(board["run_id"]) == {f"w{k}-{i}" for k in range(writers) for i in range(rows)}
    assert not list(tmp_path.glob(f"{LEADERBOARD}.tmp*"))


# ---- issue 19 item 10: a checkpoint save that cannot replace its files

@pytest.mark.parametrize("name", [CHECKPOINT, PREVIOUS_CHECKPOINT])
def test_a_folder_in_the_way_of_a_checkpoint_save_is_one_line_and_leaves_no_temp_file(name, tmp_path):
    from svqbench.atomic import CannotWrite
    save_checkpoint(_payload(1), tmp_path)
    save_checkpoint(_payload(2), tmp_path)
    (tmp_path / name).unlink()
    (tmp_path / name).mkdir()
    with pytest.raises(CannotWrite, match=f"cannot write {tmp_path / name}: a folder is in the way"):
        save_checkpoint(_payload(3), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS_CHECKPOINT])
    assert (tmp_path / name).is_dir()  # the user's folder stays where it is


def test_a_failed_checkpoint_rename_keeps_the_last_good_one_and_removes_the_new_file(tmp_path, monkeypatch):
    import errno
    import os

    from svqbench.atomic import CannotWrite
    save_checkpoint(_payload(1), tmp_path)
    real = os.replace

    def no_rename_onto_the_checkpoint(src, dst):  # e.g. EIO from a failing network file system
        if os.fspath(dst).endswith(os.sep + CHECKPOINT):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", no_rename_onto_the_checkpoint)
    with pytest.raises(CannotWrite, match="Input/output error"):
        save_checkpoint(_payload(2), tmp_path)
    monkeypatch.setattr(os, "replace", real)
    assert [p.name for p in tmp_path.iterdir()] == [PREVIOUS_CHECKPOINT]  # no checkpoint.pt.next left
    assert load_latest_checkpoint(tmp_path, pytest.fail)[0]["loop"]["step"] == 1


# ---- issue 19 item 21: `prepare` on a full disk

PREPARE_WITH_FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["svqbench", "prepare", "embedded", "--data-dir", sys.argv[2]]
from svqbench.cli import main
main()
"""


def test_prepare_past_a_file_size_limit_names_the_dataset_and_the_free_space(tmp_path):
    data = tmp_path / "data"
    out = subprocess.run([sys.executable, "-c", PREPARE_WITH_FILE_SIZE_LIMIT, "1000000", str(data)],
                         capture_output=True, text=True, timeout=300)  # frames.npy of the embedded data: 1.7 MB
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: cannot write {data / 'embedded'}: File too large (a file-size limit")
    assert f"free now in {data}; free disk space or prepare under another --data-dir" in lines[0]
    assert list(data.iterdir()) == []  # no temp folder, no half dataset


TMPFS_PREPARE = """
set -e
mount -t tmpfs -o size=2m tmpfs "$1"
head -c 360000 /dev/zero > "$1/fill"        # about 1.7 MB left: the embedded frames do not fit
set +e
"$2" -m svqbench prepare embedded --data-dir "$1/data"
echo "exit=$?"
ls -A "$1/data"
"""


def test_prepare_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """A real full file system: a 2 MB tmpfs, mounted in a private mount namespace (needs root and
    unshare; the mount disappears with the process)."""
    import shutil
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a small tmpfs")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs",
                            str(tmp_path)], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", TMPFS_PREPARE, "sh",
                          str(disk), sys.executable], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, COLUMNS="400"))
    assert "exit=2" in out.stdout.splitlines(), (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: cannot write {disk / 'data' / 'embedded'}: No space left on device; ")
    assert " MB free now in " in lines[0] and lines[0].endswith("free disk space or prepare under another --data-dir")
    assert out.stdout.splitlines()[-1] == "exit=2"  # `ls -A` of the data folder printed nothing: no temp, no half dataset
