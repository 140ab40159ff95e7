"""`--tracker tensorboard | mlflow | wandb`: what each real library recorded, read back with its own
reader (TensorBoard's EventAccumulator, MlflowClient on the default SQLite store, W&B's offline run
file): every step's own loss and lr at its global step, also across a kill and resume; only rank 0
logging under torchrun; a folder the tracker cannot write costing one line; and the default run
importing none of them."""
from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import needs, without_read_override
from scaling_data import FLAGS, cli_flags
from svqbench.cli import main
from svqbench.config import resolve
from svqbench.experiment import resume_experiment, run_experiment
from svqbench.tracking import TrackingReporter, lead_curves, result_values, with_tracker
from svqbench.train import Reporter, TrainOptions, lr_lambda

INTEGRATIONS = ("tensorboard", "mlflow", "wandb", "submitit")
STEPS_PER_EPOCH = 4  # 60 train windows in batches of 16
EPOCHS = FLAGS["epochs"]
STEPS = list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))  # the trackers' x axis: optimiser steps done


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["svqbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def _train(tiny_root: Path, results: Path, tracker: str, run_id: str = "r", inner=None, **options) -> dict:
    reporter = with_tracker(inner or Reporter(), tracker)
    return run_experiment(resolve(cli=FLAGS), results_dir=results, data_dir=tiny_root, run_id=run_id,
                          reporter=reporter, options=TrainOptions(**options))


def metrics_cfg(key: str):
    return getattr(resolve(cli=FLAGS), key)


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


class Recorder(Reporter):
    """What the loop reports for every step."""

    def __init__(self):
        self.steps: list[tuple[int, float, float, int]] = []

    def step(self, epoch, loss, lr, global_step):
        self.steps.append((epoch, loss, lr, global_step))

    def note(self, message):
        pass


@pytest.fixture(scope="module")
def stepwise(tiny_root, tmp_path_factory) -> dict:
    """The per-step values of an untracked run that reads every step (`--log-every 1`): loss, and the
    lr of each step from the schedule itself (step k trains at lr x lr_lambda(k))."""
    recorder = Recorder()
    run_experiment(resolve(cli=FLAGS), results_dir=tmp_path_factory.mktemp("stepwise"), data_dir=tiny_root,
                   run_id="each", reporter=recorder, options=TrainOptions(log_every=1))
    cfg = resolve(cli=FLAGS)
    multiplier = lr_lambda(cfg, STEPS_PER_EPOCH)
    assert [s[3] for s in recorder.steps] == [s - 1 for s in STEPS]
    return {"loss": [s[1] for s in recorder.steps], "lr": [cfg.lr * multiplier(s - 1) for s in STEPS]}


def test_stepwise_reference_is_per_step(stepwise):
    assert len(set(stepwise["loss"])) == len(STEPS)  # the losses of one epoch are not one repeated value
    assert len(set(stepwise["lr"])) > EPOCHS  # the schedule moves within an epoch


def test_default_run_imports_no_tracking_or_cluster_library(tiny_root, tmp_path):
    code = ("import sys\nfrom svqbench.cli import main\nsys.argv = ['svqbench', 'run', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {INTEGRATIONS!r}"
            " or m.startswith('torch.utils.tensorboard')))")
    proc = subprocess.run([sys.executable, "-c", code, *cli_flags(), "--quiet", "--name", "plain",
                           "--results-dir", str(tmp_path / "results"), "--data-dir", str(tiny_root)],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "results" / "plain" / "metrics.json").exists()
    assert not (tmp_path / "results" / "plain" / "tracking.json").exists()


@pytest.mark.parametrize("tracker, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb"),
                                             ("mlflow", "sqlalchemy")])  # the default SQLite store's
def test_missing_extra_is_one_line_and_exit_2_before_any_run_folder(tracker, module, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a module that cannot be imported
    code, err = _cli(monkeypatch, capsys, "run", "--tracker", tracker, "--results-dir", str(tmp_path / "results"))
    assert code == 2
    assert err.strip() == f"error: --tracker {tracker} needs pip install 'svqbench[{tracker}]'"
    assert not (tmp_path / "results").exists()


def test_unknown_tracker_is_refused_by_run_and_sweep(monkeypatch, capsys, tmp_path):
    for command in (["run"], ["sweep", "table7"]):
        code, err = _cli(monkeypatch, capsys, *command, "--tracker", "comet", "--results-dir", str(tmp_path / "r"))
        assert code == 2
        assert err.strip() == "error: unknown tracker 'comet'; choose one of: none, tensorboard, mlflow, wandb"
    assert not (tmp_path / "r").exists()


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


@needs("tensorboard")
def test_tensorboard_event_files_hold_steps_epochs_hparams_results_and_figure(tiny_root, tmp_path, stepwise):
    from tensorboard.plugins.hparams import plugin_data_pb2
    metrics = _train(tiny_root, tmp_path / "results", "tensorboard")  # reads each epoch's 4 steps at once
    run_dir = Path(metrics["run_dir"])
    events = _events(run_dir / "tensorboard")
    loss, lr = events.Scalars("train/loss"), events.Scalars("train/lr")
    assert [e.step for e in loss] == [e.step for e in lr] == STEPS
    # each step's own loss and the lr it trained with (float32 in the event file)
    assert [e.value for e in loss] == pytest.approx(stepwise["loss"], rel=1e-6)
    assert [e.value for e in lr] == pytest.approx(stepwise["lr"], rel=1e-6)
    log = _log(run_dir)
    for key in ("train_loss", "val_loss", "aux_loss"):
        assert [e.step for e in events.Scalars(f"epoch/{key}")] == list(range(EPOCHS))
        assert [e.value for e in events.Scalars(f"epoch/{key}")] == pytest.approx([float(r[key]) for r in log],
                                                                                 rel=1e-6)
    for key, value in result_values(metrics).items():
        assert events.Scalars(key)[-1].value == pytest.approx(value, rel=1e-6), key
    assert "codebook/perplexity_theta2" in events.Tags()["scalars"]
    assert events.Scalars("test/mae_per_pixel")[-1].value == pytest.approx(metrics["test"]["mae_per_pixel"], rel=1e-6)
    by_lead = events.Scalars("test/rmse_per_pixel_by_lead")  # x = lead
    assert [e.step for e in by_lead] == [1, 2]
    assert [e.value for e in by_lead] == pytest.approx(metrics["test"]["rmse_per_pixel_by_lead"], rel=1e-6)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["quantizer"].string_value == "svq" and start.hparams["lr"].number_value == metrics_cfg("lr")
    assert start.hparams["runtime.precision"].string_value == "fp32"
    image = events.Images("forecast_sample")[0]
    assert image.width > 100 and image.height > 100
    assert (run_dir / "forecast_sample.png").stat().st_size > 0
    assert json.loads((run_dir / "tracking.json").read_text())["tracker"] == "tensorboard"


@pytest.fixture
def no_mlflow_env(monkeypatch):
    """MLflow as a user runs it first: no tracking URI, no file-store opt-in, the default experiment."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


def _store(results: Path):
    from mlflow import MlflowClient
    return MlflowClient(f"sqlite:///{results.resolve() / 'mlflow.db'}")


def _only_run(client, experiment: str = "svqbench"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def _history(client, run, key: str) -> list:
    return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)


@needs("mlflow")
def test_mlflow_sqlite_store_holds_params_tags_every_metric_and_the_run_files(tiny_root, tmp_path, stepwise,
                                                                              no_mlflow_env):
    results = tmp_path / "results"
    metrics = _train(tiny_root, results, "mlflow", run_id="m1")
    run_dir = Path(metrics["run_dir"])
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ and not (results / "mlruns").exists()
    client = _store(results)
    run = _only_run(client)
    assert run.info.run_name == "m1" and run.info.status == "FINISHED"
    assert json.loads((run_dir / "tracking.json").read_text())["id"] == run.info.run_id
    params = run.data.params
    assert params["quantizer"] == "svq" and float(params["lr"]) == metrics_cfg("lr")
    assert params["hid_s"] == str(FLAGS["hid_s"]) and params["runtime.world_size"] == "1"
    tags, config = run.data.tags, json.loads((run_dir / "config.json").read_text())
    assert (tags["dataset"], tags["model"], tags["quantizer"], tags["seed"]) == (
        "embedded", config["config"]["model"], "svq", str(config["config"]["seed"]))
    if config["git"]:  # None for an installed copy
        assert tags["mlflow.source.git.commit"] == config["git"]["commit"]
    loss, lr = _history(client, run, "train/loss"), _history(client, run, "train/lr")
    assert [m.step for m in loss] == [m.step for m in lr] == STEPS
    assert [m.value for m in loss] == pytest.approx(stepwise["loss"], rel=1e-6)
    assert [m.value for m in lr] == pytest.approx(stepwise["lr"], rel=1e-6)
    val = _history(client, run, "epoch/val_loss")
    assert [m.value for m in val] == pytest.approx([float(r["val_loss"]) for r in _log(run_dir)], rel=1e-9)
    values = result_values(metrics)
    assert {"test/mae_per_pixel", "persistence/mae_per_pixel", "climatology/rmse_per_pixel",
            "input_mean/mae_per_pixel", "codebook/perplexity_theta2"} <= set(values)
    for key, value in values.items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-9), key
    curves = lead_curves(metrics)
    assert {"test/rmse_per_pixel_by_lead", "persistence/acc_latweighted_by_lead"} <= set(curves)
    for key, curve in curves.items():
        assert [(m.step, m.value) for m in _history(client, run, key)] == [
            (lead, pytest.approx(v, rel=1e-9)) for lead, v in enumerate(curve, 1) if v is not None], key
    artifacts = client.list_artifacts(run.info.run_id)
    assert sorted(a.path for a in artifacts) == ["config.json", "forecast_sample.png", "log.csv", "metrics.json"]
    assert run.info.artifact_uri.startswith((results.resolve() / "mlartifacts").as_uri())
    for name in ("metrics.json", "log.csv"):
        copy = client.download_artifacts(run.info.run_id, name, str(tmp_path))
        assert Path(copy).read_bytes() == (run_dir / name).read_bytes()


class StopAt(Reporter):
    """Ctrl-C after `n` steps (what the CLI turns SIGINT and SIGTERM into)."""

    def __init__(self, n: int):
        self.n = n

    def step(self, epoch, loss, lr, global_step):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


@needs("mlflow")
def test_mlflow_run_of_an_interrupted_run_is_failed_then_continued_by_resume(tiny_root, tmp_path, no_mlflow_env):
    results = tmp_path / "results"
    reporter = with_tracker(StopAt(STEPS_PER_EPOCH + 2), "mlflow")  # mid epoch 1, after one checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_experiment(resolve(cli=FLAGS), results_dir=results, data_dir=tiny_root, run_id="cut", reporter=reporter)
    reporter.close()  # as the CLI does on any way out
    client = _store(results)
    first = _only_run(client)
    assert first.info.status == "FAILED"
    metrics = resume_experiment("cut", results_dir=results, data_dir=tiny_root,
                                reporter=with_tracker(Reporter(), "mlflow"))
    run = _only_run(client)  # the same MLflow run, finished now
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert [m.step for m in _history(client, run, "epoch/val_loss")] == list(range(EPOCHS))
    assert [m.step for m in _history(client, run, "train/loss")] == STEPS
    assert run.data.metrics["test/mae_per_pixel"] == pytest.approx(metrics["test"]["mae_per_pixel"], rel=1e-9)


# A run with a checkpoint after every step, SIGKILLed while writing its 7th (epoch 1 step 3, as in
# test_resume): it has logged step 7, its last good checkpoint holds 6 steps, so the resume trains
# step 7 again.
KILLER = """
import os, signal, sys
from pathlib import Path
import svqbench.train as train
real, calls = train.save_checkpoint, [0]

def save_then_die(payload, run_dir):
    calls[0] += 1
    if calls[0] == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(payload, run_dir)

train.save_checkpoint = save_then_die
sys.argv = ["svqbench", "run", *sys.argv[1:]]
from svqbench.cli import main
main()
"""


def _killed_then_resumed(tracker: str, tiny_root: Path, results: Path, monkeypatch, capsys) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    proc = subprocess.run([sys.executable, "-c", KILLER, *cli_flags(), "--checkpoint-every", "1", "--name", "run",
                           "--quiet", "--tracker", tracker, "--results-dir", str(results),
                           "--data-dir", str(tiny_root)],
                          env=dict(env, OMP_NUM_THREADS=str(torch.get_num_threads())), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    code, err = _cli(monkeypatch, capsys, "run", "--resume", str(results / "run"), "--quiet", "--tracker", tracker,
                     "--data-dir", str(tiny_root))
    assert code == 0, err
    assert "resuming run from checkpoint.pt: epoch 1 step 2" in err
    return results / "run"


@needs("tensorboard")
def test_tensorboard_logs_each_step_once_across_a_kill_and_resume(tiny_root, tmp_path, stepwise, monkeypatch,
                                                                  capsys):
    run_dir = _killed_then_resumed("tensorboard", tiny_root, tmp_path / "results", monkeypatch, capsys)
    events = _events(run_dir / "tensorboard")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 2  # one file per attempt
    loss, lr = events.Scalars("train/loss"), events.Scalars("train/lr")
    assert [e.step for e in loss] == [e.step for e in lr] == STEPS
    assert [e.value for e in loss] == pytest.approx(stepwise["loss"], rel=1e-6)
    assert [e.value for e in lr] == pytest.approx(stepwise["lr"], rel=1e-6)
    assert [e.step for e in events.Scalars("epoch/val_loss")] == list(range(EPOCHS))


@needs("mlflow")
def test_mlflow_logs_each_step_once_across_a_kill_and_resume(tiny_root, tmp_path, stepwise, monkeypatch, capsys,
                                                             no_mlflow_env):
    results = tmp_path / "results"
    run_dir = _killed_then_resumed("mlflow", tiny_root, results, monkeypatch, capsys)
    client = _store(results)
    run = _only_run(client)
    assert run.info.status == "FINISHED" and json.loads((run_dir / "tracking.json").read_text())["id"] == \
        run.info.run_id
    loss, lr = _history(client, run, "train/loss"), _history(client, run, "train/lr")
    assert [m.step for m in loss] == [m.step for m in lr] == STEPS
    assert [m.value for m in loss] == pytest.approx(stepwise["loss"], rel=1e-6)
    assert [m.value for m in lr] == pytest.approx(stepwise["lr"], rel=1e-9)
    assert [m.step for m in _history(client, run, "epoch/val_loss")] == list(range(EPOCHS))


@needs("tensorboard")
def test_unwritable_tensorboard_folder_on_resume_costs_one_line_and_no_traceback(tiny_root, tmp_path):
    results = tmp_path / "results"
    reporter = with_tracker(StopAt(STEPS_PER_EPOCH + 2), "tensorboard")  # after epoch 0's checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_experiment(resolve(cli=FLAGS), results_dir=results, data_dir=tiny_root, run_id="ro", reporter=reporter)
    reporter.close()
    folder = results / "ro" / "tensorboard"
    before = sorted(p.name for p in folder.iterdir())
    folder.chmod(0o555)  # root ignores this: the resume runs without the capability that lets it write
    try:
        proc = subprocess.run([*without_read_override(), sys.executable, "-m", "svqbench", "run", "--resume",
                               str(results / "ro"), "--quiet", "--tracker", "tensorboard",
                               "--data-dir", str(tiny_root)],
                              env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                              timeout=300)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("tracking:")]
    assert notes == [f"tracking: tensorboard failed (OSError: cannot write to {folder} (Permission denied)); "
                     "the run goes on without it"]
    assert json.loads((results / "ro" / "metrics.json").read_text())["status"] == "finished"
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written there


@needs("mlflow")
def test_a_tracker_that_fails_never_fails_the_run(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    metrics = _train(tiny_root, tmp_path / "results", "mlflow", run_id="lost")
    assert metrics["status"] == "finished"
    assert "lost" in (tmp_path / "results" / "leaderboard.csv").read_text()
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert len(notes) == 1 and "mlflow failed" in notes[0] and "the run goes on without it" in notes[0]


def _wandb_records(path: Path):
    """Records of a W&B offline run file: LevelDB-log framing (7-byte W&B header, 32 KiB blocks,
    7-byte chunk headers: crc, length, type 1 full / 2 first / 3 middle / 4 last) around
    wandb's own Record protobufs."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _finished_wandb_records(path: Path, timeout: float = 60.0) -> list:
    """The records once W&B's own service process has written the run's exit record (`run.finish()`
    can return before that process has written everything to the file)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


@needs("wandb")
def test_wandb_offline_run_holds_config_steps_epochs_summary_and_figure(tiny_root, tmp_path, monkeypatch, stepwise):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave this test process's stdout / stderr alone
    monkeypatch.setenv("WANDB_PROJECT", "svq-tests")
    metrics = _train(tiny_root, tmp_path / "results", "wandb", run_id="w1")
    run_dir = Path(metrics["run_dir"])
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    [log_file] = offline.glob("run-*.wandb")
    config, history, summary, exit_code = {}, [], {}, None
    for record in _finished_wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            assert record.run.display_name == "w1" and record.run.project == "svq-tests"
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert json.loads((run_dir / "tracking.json").read_text())["id"] == offline.name.rsplit("-", 1)[1]
    assert config["quantizer"] == "svq" and config["lr"] == metrics_cfg("lr") and config["runtime.precision"] == "fp32"
    steps = [h for h in history if "train/loss" in h]
    assert [h["train/step"] for h in steps] == STEPS
    assert [h["train/loss"] for h in steps] == pytest.approx(stepwise["loss"], rel=1e-6)
    assert [h["train/lr"] for h in steps] == pytest.approx(stepwise["lr"], rel=1e-9)
    epochs = [h for h in history if "epoch/val_loss" in h]
    assert [h["epoch/val_loss"] for h in epochs] == pytest.approx([float(r["val_loss"]) for r in _log(run_dir)])
    assert summary["test/mae_per_pixel"] == pytest.approx(metrics["test"]["mae_per_pixel"])
    assert summary["codebook/perplexity_theta2"] == pytest.approx(metrics["codebook_usage"]["perplexity_theta2"])
    assert summary["test/rmse_per_pixel_by_lead"] == pytest.approx(metrics["test"]["rmse_per_pixel_by_lead"])
    [image] = [h for h in history if "forecast_sample/path" in h or "forecast_sample" in h]
    path = image.get("forecast_sample/path") or image["forecast_sample"]["path"]
    assert (offline / "files" / path).stat().st_size > 0
    assert exit_code == 0


@needs("mlflow")
def test_only_rank_0_logs_under_torchrun(tiny_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the default store
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "svqbench", "run", *cli_flags(epochs=1), "--name", "ddp", "--quiet",
                           "--tracker", "mlflow", "--results-dir", str(results),
                           "--data-dir", str(tiny_root)], env=dict(env, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = _store(results)
    run = _only_run(client)
    assert run.info.run_name == "ddp" and run.data.params["runtime.world_size"] == "2"
    # every step once: rank 1 logged nothing
    assert [m.step for m in _history(client, run, "train/loss")] == list(range(1, STEPS_PER_EPOCH + 1))


def test_wrapper_forwards_every_hook_to_the_cli_reporter():
    seen = []

    class Inner:
        def start(self, total): seen.append(("start", total))
        def step(self, epoch, loss, lr, global_step, *more): seen.append(("step", epoch, loss, lr, global_step, *more))
        def flush(self): seen.append(("flush",))
        def epoch(self, row): seen.append(("epoch", row["epoch"]))
        def note(self, message): seen.append(("note", message))
        def stop(self): seen.append(("stop",))
        def custom(self): return "inner"

    r = TrackingReporter(Inner(), "mlflow")  # never begun: nothing is logged, nothing imported
    r.start(8)
    r.step(0, 1.0, 0.1, 0)
    r.step(0, 0.5, 0.1, 1, "extra")
    r.flush()
    r.epoch({"epoch": 0, "train_loss": 1.0})
    r.note("hi")
    r.stop()
    r.close()
    assert seen == [("start", 8), ("step", 0, 1.0, 0.1, 0), ("step", 0, 0.5, 0.1, 1, "extra"), ("flush",),
                    ("epoch", 0), ("note", "hi"), ("stop",)]
    assert r.custom() == "inner"


def test_lead_curves_name_every_per_lead_metric_and_channel():
    metrics = {"run_id": "x", "test": {"mae_per_pixel": 1.0, "mae_per_pixel_by_lead": [1.0, 2.0],
                                       "rmse_per_pixel_by_lead_by_channel": [[1.0, 2.0], [3.0, 4.0]],
                                       "metric_set": {"channels": ["u10", "v 10"]}},
               "climatology": {"acc_latweighted_by_lead": [None, None]}}
    assert lead_curves(metrics) == {"test/mae_per_pixel_by_lead": [1.0, 2.0],
                                    "test/rmse_per_pixel_by_lead_by_channel/u10": [1.0, 3.0],
                                    "test/rmse_per_pixel_by_lead_by_channel/v_10": [2.0, 4.0],
                                    "climatology/acc_latweighted_by_lead": [None, None]}
    assert result_values(metrics) == {"test/mae_per_pixel": 1.0}


def test_a_resumed_tensorboard_file_sorts_after_the_killed_attempts(tmp_path):
    """TensorBoard reads event files in name order (unix second first): a resumed writer opened in the
    same second as the killed attempt's file would be read before it, its purge first and the old steps
    after it. The resumed writer waits for the next second."""
    import time
    from svqbench.tracking import _after_existing_event_files
    stamp = int(time.time())
    (tmp_path / f"events.out.tfevents.{stamp}.host.99999.0").write_bytes(b"")
    _after_existing_event_files(tmp_path)
    assert int(time.time()) > stamp
