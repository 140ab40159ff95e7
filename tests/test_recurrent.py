"""The recurrent models' shared parts: the training objective against the reference's, and a
killed-and-resumed ConvLSTM run (teacher-forcing masks from the checkpointed generator) that ends
exactly as the uninterrupted one (CPU, deterministic mode)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import cli
from svqbench.checkpoint import CHECKPOINT, read_checkpoint, save_checkpoint
from svqbench.config import resolve
from svqbench.experiment import run_experiment
from svqbench.models import ForecastShape, build_model
from svqbench.models.recurrent import reshape_patch
from svqbench.train import TrainOptions


def test_loop_loss_is_proportional_to_the_references():
    """forecast MSE + aux = (T-1)/out_len x the reference's MSE over all T-1 next-frame predictions."""
    torch.manual_seed(0)
    shape = ForecastShape(in_len=4, out_len=3, channels=1, height=6, width=6)
    cfg = resolve(cli=dict(model="convlstm", dataset="embedded", rnn_hidden=4, rnn_layers=2,
                           sampling_changing_rate=0.0))  # teacher forcing throughout, as the reference at step 0
    model = build_model(cfg, shape)
    x, y = torch.randn(2, 4, 1, 6, 6), torch.randn(2, 3, 1, 6, 6)
    with torch.no_grad():
        pred, aux = model(x, target=y, step=0, generator=torch.Generator().manual_seed(0))
    frames = reshape_patch(torch.cat([x, y], 1), 2)
    mask = torch.ones(2, 2, *frames.shape[2:])
    with torch.no_grad():
        reference = F.mse_loss(model.rollout(frames, mask), frames[:, 1:])  # OpenSTL's loss
    assert float(F.mse_loss(pred, y) + aux) == pytest.approx(float(reference) * 6 / 3, rel=1e-5)


def test_unknown_model_is_one_line(monkeypatch, capsys):
    code, _, err = cli(["run", "--model", "lstm", "--print-config"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown model 'lstm'" in err and "simvp" in err and "convlstm" in err


def test_model_preset_layers_between_dataset_preset_and_cli():
    cfg = resolve(cli=dict(model="convlstm", dataset="kth", scale="paper", lr=1e-2))
    assert cfg.lr == 1e-2 and cfg.loss == "l2" and cfg.epochs == 100  # CLI > model preset > dataset preset
    assert resolve(cli=dict(dataset="kth", scale="paper")).loss == "l1"  # SimVP keeps the dataset preset


# ---------------------------------------------------------------- kill and resume

# tiny models on scaling_data's 8 x 8 waves (4 -> 2 frames) whose every training step draws from the
# loop's generator, so a resumed run must continue it: ConvLSTM's teacher-forcing probability falls
# 0.1 per step; PredRNN.V2's reverse schedule moves between steps 2 and 8 (input and future frames);
# PhyDNet flips one teacher-forcing coin per batch with a probability falling 0.1 per step.
RUN = dict(model="convlstm", rnn_hidden=4, rnn_layers=2, filter_size=3, patch_size=2, batch_size=16,
           epochs=3, patience=5, sampling_changing_rate=0.1, sampling_stop_iter=1000, noise=0.1)
RUNS = {
    "convlstm": RUN,
    "predrnnv2": dict(RUN, model="predrnnv2", r_sampling_step_1=2, r_sampling_step_2=8, r_exp_alpha=2.0),
    "phydnet": dict(RUN, model="phydnet", phydnet_latent=32, phydnet_lstm_hidden="8,32"),
}
KILL_AT_SAVE = 7  # 4 steps an epoch, a checkpoint after every step: dies saving epoch 1 step 3

KILLER = """
import os, signal, sys
import svqbench.train as train
real, calls = train.save_checkpoint, [0]

def save_then_die(payload, run_dir):
    calls[0] += 1
    if calls[0] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(payload, run_dir)

train.save_checkpoint = save_then_die
sys.argv = ["svqbench", "run", *sys.argv[1:]]
from svqbench.cli import main
main()
"""


def _flags(run: dict) -> list[str]:
    args = []
    for key, value in run.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv") as f:
        return [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "best")} for r in csv.DictReader(f)]


def _board_row(results: Path) -> dict:
    """The run's leaderboard row without what names or times it."""
    with open(results / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    return {k: v for k, v in rows[0].items() if k not in ("run_id", "train_seconds", "finished")}


@pytest.fixture(scope="module", params=sorted(RUNS))
def reference(request, tiny_root, tmp_path_factory) -> dict:
    run = RUNS[request.param]
    results = tmp_path_factory.mktemp(f"reference-{request.param}")
    metrics = run_experiment(resolve(cli=run), results_dir=results, data_dir=tiny_root, run_id="ref",
                             options=TrainOptions(checkpoint_every=1))
    return {"run": run, "metrics": metrics, "log": _log(results / "ref"), "board": _board_row(results)}


def test_killed_recurrent_run_resumes_exactly(reference, tiny_root, tmp_path, monkeypatch, capsys):
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([sys.executable, "-c", KILLER.replace("{kill_at}", str(KILL_AT_SAVE)),
                           *_flags(reference["run"]), "--checkpoint-every", "1", "--name", "run", "--quiet",
                           "--results-dir", str(tmp_path), "--data-dir", str(tiny_root)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = tmp_path / "run"
    ckpt = read_checkpoint(run_dir / CHECKPOINT)
    assert (ckpt["loop"]["epoch"], ckpt["loop"]["step"]) == (1, 2)
    assert "sample" in ckpt["rng"]["ranks"][0]  # the teacher-forcing generator is saved
    code, _, err = cli(["run", "--resume", str(run_dir), "--quiet", "--data-dir", str(tiny_root)], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ref = reference["metrics"]
    assert metrics["test"] == ref["test"]  # bit-identical
    assert (metrics["best_val_loss"], metrics["best_epoch"]) == (ref["best_val_loss"], ref["best_epoch"])
    assert _log(run_dir) == reference["log"]
    assert _board_row(tmp_path) == reference["board"]


def test_checkpoint_without_sampling_state_still_resumes(tiny_root, tmp_path):
    """The generator's state is restored from a checkpoint; one written before the recurrent models
    (no 'sample' state) still resumes, the generator starting from its seed."""
    from svqbench.data.prepared import open_prepared
    from svqbench.distributed import SINGLE
    from svqbench.train import Reporter, restore, save_resume_state, setup
    cfg = resolve(cli=RUN)
    ds = open_prepared("embedded", tiny_root)

    def training():
        return setup(cfg, ds, build_model(cfg, ds), tmp_path, device=torch.device("cpu"), options=TrainOptions(),
                     dist=SINGLE)
    t = training()
    fresh = t.sample_gen.get_state()
    torch.rand(5, generator=t.sample_gen)
    t.state.global_step = 3
    save_resume_state(t)
    advanced = t.sample_gen.get_state()

    t = training()
    restore(t, Reporter())
    assert torch.equal(t.sample_gen.get_state(), advanced) and t.state.global_step == 3

    payload = read_checkpoint(tmp_path / CHECKPOINT)
    for rank in payload["rng"]["ranks"]:
        del rank["sample"]
    save_checkpoint({k: v for k, v in payload.items() if k not in ("format", "digest")}, tmp_path)
    t = training()
    restore(t, Reporter())
    assert torch.equal(t.sample_gen.get_state(), fresh) and t.state.global_step == 3
