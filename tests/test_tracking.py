"""`--tracker tensorboard | mlflow | wandb`: what each real library recorded, read back with its own
reader (TensorBoard's EventAccumulator, MlflowClient on a file store, W&B's offline run file), only
rank 0 logging under torchrun, and the default run importing none of them."""
from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import needs
from scaling_data import FLAGS, cli_flags
from svqbench.cli import main
from svqbench.config import resolve
from svqbench.experiment import resume_experiment, run_experiment
from svqbench.tracking import TrackingReporter, result_values, with_tracker
from svqbench.train import Reporter

INTEGRATIONS = ("tensorboard", "mlflow", "wandb", "submitit")
STEPS_PER_EPOCH = 4  # 60 train windows in batches of 16
EPOCHS = FLAGS["epochs"]


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["svqbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def _train(tiny_root: Path, results: Path, tracker: str, run_id: str = "r", inner=None) -> dict:
    reporter = with_tracker(inner or Reporter(), tracker)
    return run_experiment(resolve(cli=FLAGS), results_dir=results, data_dir=tiny_root, run_id=run_id,
                          reporter=reporter)


def metrics_cfg(key: str):
    return getattr(resolve(cli=FLAGS), key)


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


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


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_missing_extra_is_one_line_and_exit_2_before_any_run_folder(tracker, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, tracker, None)  # what Python does for a module that cannot be imported
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


@needs("tensorboard")
def test_tensorboard_event_files_hold_steps_epochs_hparams_results_and_figure(tiny_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    metrics = _train(tiny_root, tmp_path / "results", "tensorboard")
    run_dir = Path(metrics["run_dir"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    steps = events.Scalars("train/loss")
    assert [e.step for e in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert len(events.Scalars("train/lr")) == len(steps) and all(e.value > 0 for e in events.Scalars("train/lr"))
    log = _log(run_dir)
    for key in ("train_loss", "val_loss", "aux_loss"):
        assert [e.step for e in events.Scalars(f"epoch/{key}")] == list(range(EPOCHS))
        assert [e.value for e in events.Scalars(f"epoch/{key}")] == pytest.approx([float(r[key]) for r in log],
                                                                                 rel=1e-6)
    for key, value in result_values(metrics).items():
        assert events.Scalars(key)[-1].value == pytest.approx(value, rel=1e-6), key
    assert "codebook/perplexity_theta2" in events.Tags()["scalars"]
    assert events.Scalars("test/mae_per_pixel")[-1].value == pytest.approx(metrics["test"]["mae_per_pixel"], rel=1e-6)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["quantizer"].string_value == "svq" and start.hparams["lr"].number_value == metrics_cfg("lr")
    assert start.hparams["runtime.precision"].string_value == "fp32"
    image = events.Images("forecast_sample")[0]
    assert image.width > 100 and image.height > 100
    assert (run_dir / "forecast_sample.png").stat().st_size > 0
    assert json.loads((run_dir / "tracking.json").read_text())["tracker"] == "tensorboard"


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "svq-tests")
    from mlflow import MlflowClient
    return MlflowClient(uri)


def _only_run(client):
    experiment = client.get_experiment_by_name("svq-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@needs("mlflow")
def test_mlflow_file_store_holds_params_metrics_and_the_figure(tiny_root, tmp_path, mlflow_store):
    metrics = _train(tiny_root, tmp_path / "results", "mlflow", run_id="m1")
    run = _only_run(mlflow_store)
    assert run.info.run_name == "m1" and run.info.status == "FINISHED"
    assert json.loads((Path(metrics["run_dir"]) / "tracking.json").read_text())["id"] == run.info.run_id
    params = run.data.params
    assert params["quantizer"] == "svq" and float(params["lr"]) == metrics_cfg("lr")
    assert params["hid_s"] == str(FLAGS["hid_s"]) and params["runtime.world_size"] == "1"
    history = mlflow_store.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    val = sorted(mlflow_store.get_metric_history(run.info.run_id, "epoch/val_loss"), key=lambda m: m.step)
    assert [m.value for m in val] == pytest.approx([float(r["val_loss"]) for r in _log(Path(metrics["run_dir"]))])
    assert run.data.metrics["test/mae_per_pixel"] == pytest.approx(metrics["test"]["mae_per_pixel"])
    assert run.data.metrics["persistence/mae_per_pixel"] == pytest.approx(metrics["persistence"]["mae_per_pixel"])
    assert run.data.metrics["codebook/perplexity_theta2"] == pytest.approx(
        metrics["codebook_usage"]["perplexity_theta2"])
    assert [a.path for a in mlflow_store.list_artifacts(run.info.run_id)] == ["forecast_sample.png"]


class StopAt(Reporter):
    """Ctrl-C after `n` steps (what the CLI turns SIGINT and SIGTERM into)."""

    def __init__(self, n: int):
        self.n = n

    def step(self, epoch, loss, lr):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


@needs("mlflow")
def test_mlflow_run_of_an_interrupted_run_is_failed_then_continued_by_resume(tiny_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: RESULTS/mlruns
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "svq-tests")
    results = tmp_path / "results"
    mlflow_store = MlflowClient((results / "mlruns").as_uri())
    reporter = with_tracker(StopAt(STEPS_PER_EPOCH + 2), "mlflow")  # mid epoch 1, after one checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_experiment(resolve(cli=FLAGS), results_dir=results, data_dir=tiny_root, run_id="cut", reporter=reporter)
    reporter.close()  # as the CLI does on any way out
    first = _only_run(mlflow_store)
    assert first.info.status == "FAILED"
    metrics = resume_experiment("cut", results_dir=results, data_dir=tiny_root,
                                reporter=with_tracker(Reporter(), "mlflow"))
    run = _only_run(mlflow_store)  # the same MLflow run, finished now
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    val = mlflow_store.get_metric_history(run.info.run_id, "epoch/val_loss")
    assert sorted({m.step for m in val}) == list(range(EPOCHS))
    assert run.data.metrics["test/mae_per_pixel"] == pytest.approx(metrics["test"]["mae_per_pixel"])


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


@needs("wandb")
def test_wandb_offline_run_holds_config_steps_epochs_summary_and_figure(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave this test process's stdout / stderr alone
    monkeypatch.setenv("WANDB_PROJECT", "svq-tests")
    metrics = _train(tiny_root, tmp_path / "results", "wandb", run_id="w1")
    run_dir = Path(metrics["run_dir"])
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    [log_file] = offline.glob("run-*.wandb")
    config, history, summary, exit_code = {}, [], {}, None
    for record in _wandb_records(log_file):
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
    assert [h["train/step"] for h in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    epochs = [h for h in history if "epoch/val_loss" in h]
    assert [h["epoch/val_loss"] for h in epochs] == pytest.approx([float(r["val_loss"]) for r in _log(run_dir)])
    assert summary["test/mae_per_pixel"] == pytest.approx(metrics["test"]["mae_per_pixel"])
    assert summary["codebook/perplexity_theta2"] == pytest.approx(metrics["codebook_usage"]["perplexity_theta2"])
    [image] = [h for h in history if "forecast_sample/path" in h or "forecast_sample" in h]
    path = image.get("forecast_sample/path") or image["forecast_sample"]["path"]
    assert (offline / "files" / path).stat().st_size > 0
    assert exit_code == 0


@needs("mlflow")
def test_only_rank_0_logs_under_torchrun(tiny_root, tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="svq-tests")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "svqbench", "run", *cli_flags(epochs=1), "--name", "ddp", "--quiet",
                           "--tracker", "mlflow", "--results-dir", str(tmp_path / "results"),
                           "--data-dir", str(tiny_root)], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient
    run = _only_run(MlflowClient(uri))
    assert run.info.run_name == "ddp" and run.data.params["runtime.world_size"] == "2"
    # every step once: rank 1 logged nothing
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "train/loss")) == STEPS_PER_EPOCH


def test_wrapper_forwards_every_hook_to_the_cli_reporter():
    seen = []

    class Inner:
        def start(self, total): seen.append(("start", total))
        def step(self, epoch, loss, lr, *more): seen.append(("step", epoch, loss, lr, *more))
        def epoch(self, row): seen.append(("epoch", row["epoch"]))
        def note(self, message): seen.append(("note", message))
        def stop(self): seen.append(("stop",))
        def custom(self): return "inner"

    r = TrackingReporter(Inner(), "mlflow")  # never begun: nothing is logged, nothing imported
    r.start(8)
    r.step(0, 1.0, 0.1)
    r.step(0, 0.5, 0.1, "extra")
    r.epoch({"epoch": 0, "train_loss": 1.0})
    r.note("hi")
    r.stop()
    r.close()
    assert seen == [("start", 8), ("step", 0, 1.0, 0.1), ("step", 0, 0.5, 0.1, "extra"), ("epoch", 0), ("note", "hi"),
                    ("stop",)]
    assert r.custom() == "inner"
