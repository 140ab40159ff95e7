"""Experiment tracking: `svqbench run --tracker none | tensorboard | mlflow | wandb`.

`TrackingReporter` wraps the CLI's progress reporter: every hook (start / step / epoch / note /
stop, and any other) is passed on unchanged, and the tracker logs
- the loss and learning rate of every reported training step (`train/loss`, `train/lr`),
- every epoch's log row (`epoch/train_loss`, `epoch/val_loss`, `epoch/aux_loss`, `epoch/lr`, ...),
- the resolved config and runtime options as params / hparams (`begin`, called by the experiment),
- at the end the test metrics, the persistence / climatology / input-mean references, codebook usage
  and the forecast-sample figure (`log_results`, called by the experiment after the leaderboard row).

Only rank 0 logs: the experiment opens the tracker on rank 0 alone. The libraries are optional
extras (`pip install 'svqbench[tensorboard]'`, `[mlflow]`, `[wandb]`), imported only when chosen.
A tracker that fails while the run goes on is reported once on stderr and dropped: the run itself,
its files and its leaderboard row never depend on it.

Where each one writes:
- tensorboard: RUN_DIR/tensorboard/ (`tensorboard --logdir results/` shows every run);
- mlflow: $MLFLOW_TRACKING_URI, else the file store `file:RESULTS_DIR/mlruns`; experiment
  $MLFLOW_EXPERIMENT_NAME, else "svqbench"; run name = the run id;
- wandb: project $WANDB_PROJECT, else "svqbench"; local files under RUN_DIR/wandb/;
  `WANDB_MODE=offline` logs without an account (`wandb sync` uploads later).
RUN_DIR/tracking.json records which tracker run belongs to the svqbench run, so that
`svqbench run --resume` continues the same MLflow / W&B run.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from svqbench.errors import UserError

TRACKERS = ("none", "tensorboard", "mlflow", "wandb")
TRACKING_FILE = "tracking.json"


def check_tracker(name: str) -> None:
    """A known tracker whose library is installed; checked before anything is created."""
    if name not in TRACKERS:
        raise UserError(f"unknown tracker {name!r}; choose one of: {', '.join(TRACKERS)}")
    if name != "none" and importlib.util.find_spec(name) is None:
        raise UserError(f"--tracker {name} needs pip install 'svqbench[{name}]'")


def with_tracker(reporter: Any, name: str) -> Any:
    """`reporter` itself for `none`, else a TrackingReporter around it."""
    check_tracker(name)
    return reporter if name == "none" else TrackingReporter(reporter, name)


def tracker_of(reporter: Any) -> "TrackingReporter | None":
    return reporter if isinstance(reporter, TrackingReporter) else None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def result_values(metrics: dict) -> dict[str, float]:
    """The numbers of metrics.json, flat: `test/mae_per_pixel`, `persistence/mae_per_pixel`,
    `codebook/perplexity`, `best_val_loss`, ... (per-lead curves and texts are left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "runtime":
            continue
        if _number(value):
            out[key] = float(value)
        elif isinstance(value, dict):
            prefix = "codebook" if key == "codebook_usage" else key
            out.update({f"{prefix}/{k}": float(v) for k, v in value.items() if _number(v)})
    return out


def _params(config: dict) -> dict[str, Any]:
    """Flat params: nested dicts as `runtime.precision`; values other than numbers/text as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _params(value).items()})
        else:
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class TrackingReporter:
    """The CLI's reporter plus a tracker (composition: train.py only sees a reporter)."""

    def __init__(self, inner: Any, name: str):
        self.inner, self.name = inner, name
        self.backend: Any = None
        self.total_steps = 0
        self.epochs = 1
        self._epoch, self._in_epoch = None, 0

    def __getattr__(self, attr: str) -> Any:  # hooks this class does not know go to the inner reporter
        return getattr(self.inner, attr)

    # ---- lifetime, called by svqbench.experiment on rank 0

    def begin(self, run_id: str, run_dir: Path, config: dict, *, resume: bool = False) -> None:
        run_dir = Path(run_dir)
        self.epochs = max(1, int(config.get("epochs") or 1))
        record = run_dir / TRACKING_FILE
        saved = None
        if resume and record.exists():  # continue the tracker run of the interrupted attempt
            try:
                found = json.loads(record.read_text())
                saved = found.get("id") if found.get("tracker") == self.name else None
            except (OSError, ValueError, AttributeError):
                saved = None
        backend = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}[self.name]
        self.backend = self._safe(backend, run_id, run_dir, _params(config), saved)
        if self.backend is not None:
            from svqbench.atomic import write_json
            write_json(record, {"tracker": self.name, "id": self.backend.id, "where": self.backend.where})

    def log_results(self, metrics: dict, figure: Path | None = None, *, data_dir: Path | None = None) -> None:
        """Final metrics, then the forecast-sample figure (drawn to `figure` from the run's best
        checkpoint, svqbench.plots.forecast_sample), then the tracker run is closed as finished."""
        if self.backend is None:
            return
        self._safe(self.backend.results, result_values(metrics))
        if figure is not None and self.backend is not None:
            from svqbench.plots import forecast_sample
            try:
                path = forecast_sample(Path(metrics["run_dir"]), Path(figure), data_dir=data_dir)
            except Exception as e:  # noqa: BLE001 - the metrics are logged; the figure is a bonus
                self.inner.note(f"tracking: no forecast-sample figure ({type(e).__name__}: {e})")
            else:
                self._safe(self.backend.image, "forecast_sample", Path(path))
        self.close(ok=True)

    def close(self, ok: bool = False) -> None:
        """End the tracker run (as failed unless `ok`); safe to call twice, and without `begin`."""
        backend, self.backend = self.backend, None
        if backend is not None:
            try:
                backend.close(ok)
            except Exception as e:  # noqa: BLE001 - tracking never fails the run
                self.inner.note(f"tracking: closing {self.name} failed ({type(e).__name__}: {e})")

    def _safe(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking never fails the run
            self.inner.note(f"tracking: {self.name} failed ({type(e).__name__}: {e}); the run goes on without it")
            backend, self.backend = self.backend, None
            if backend is not None:
                try:
                    backend.close(False)
                except Exception:  # noqa: BLE001
                    pass
            return None

    # ---- train.py's reporter hooks

    def start(self, total_steps: int, *args, **kwargs) -> None:
        self.total_steps = total_steps
        self.inner.start(total_steps, *args, **kwargs)

    def step(self, epoch: int, loss: float, lr: float, *args, **kwargs) -> None:
        self.inner.step(epoch, loss, lr, *args, **kwargs)
        if epoch != self._epoch:
            self._epoch, self._in_epoch = epoch, 0
        self._in_epoch += 1
        if self.backend is not None:  # x axis: optimiser steps since the start of the run
            step = epoch * (self.total_steps // self.epochs) + self._in_epoch
            self._safe(self.backend.scalars, {"train/loss": float(loss), "train/lr": float(lr)}, step, "train/step")

    def epoch(self, row: dict, *args, **kwargs) -> None:
        self.inner.epoch(row, *args, **kwargs)
        if self.backend is not None:
            values = {f"epoch/{k}": float(v) for k, v in row.items()  # `best` as 0 / 1
                      if k != "epoch" and (_number(v) or isinstance(v, bool))}
            self._safe(self.backend.scalars, values, int(row["epoch"]), "epoch")

    def note(self, message: str, *args, **kwargs) -> None:
        self.inner.note(message, *args, **kwargs)

    def stop(self, *args, **kwargs) -> None:
        self.inner.stop(*args, **kwargs)


# ---------------------------------------------------------------- one class per library
# Each has `id` (what a resumed run reopens, or None), `where`, scalars(values, step, axis),
# results(values), image(tag, path) and close(ok).

class _TensorBoard:
    def __init__(self, run_id: str, run_dir: Path, params: dict, saved: str | None):
        from torch.utils.tensorboard import SummaryWriter
        self.id, self.where, self.params = None, str(run_dir / "tensorboard"), params
        self.writer = SummaryWriter(self.where)
        self.writer.add_text("config", "    " + json.dumps(params, indent=1).replace("\n", "\n    "))

    def scalars(self, values: dict, step: int, axis: str) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def results(self, values: dict) -> None:
        # hparams: the config beside the final metrics (TensorBoard's HPARAMS tab); the metrics also
        # become scalars at step 0 in the same folder
        self.writer.add_hparams(self.params, {k: v for k, v in values.items() if math.isfinite(v)}, run_name=".")

    def image(self, tag: str, path: Path) -> None:
        from matplotlib.image import imread
        self.writer.add_image(tag, imread(path)[..., :3], dataformats="HWC")

    def close(self, ok: bool) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_id: str, run_dir: Path, params: dict, saved: str | None):
        from mlflow import MlflowClient
        from mlflow.entities import Param
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir.parent / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps its file store behind this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client, self.where, self.pending = MlflowClient(uri), uri, []
        if saved is not None:
            self.id = saved
            self.client.update_run(saved, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "svqbench"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=run_id, tags={"svqbench.run_dir": str(run_dir.resolve())})
        self.id = run.info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.id, params=items[i:i + 100])

    def scalars(self, values: dict, step: int, axis: str) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, step) for k, v in values.items()]
        if axis == "epoch" or len(self.pending) >= 500:  # batched: one request per epoch on a server
            self.flush()

    def flush(self) -> None:
        while self.pending:
            self.client.log_batch(self.id, metrics=self.pending[:1000])
            self.pending = self.pending[1000:]

    def results(self, values: dict) -> None:
        self.scalars(values, 0, "epoch")

    def image(self, tag: str, path: Path) -> None:
        self.client.log_artifact(self.id, str(path))

    def close(self, ok: bool) -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.id, "FINISHED" if ok else "FAILED")


class _WandB:
    def __init__(self, run_id: str, run_dir: Path, params: dict, saved: str | None):
        import wandb
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "svqbench", name=run_id, dir=str(run_dir),
                              config=params, id=saved, resume="allow" if saved else None)
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")
        self.id, self.where = self.run.id, str(run_dir / "wandb")

    def scalars(self, values: dict, step: int, axis: str) -> None:
        self.run.log({**values, axis: step})

    def results(self, values: dict) -> None:
        self.run.summary.update(values)

    def image(self, tag: str, path: Path) -> None:
        self.run.log({tag: self.wandb.Image(str(path))})

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)
