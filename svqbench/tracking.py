"""Experiment tracking: `svqbench run --tracker none | tensorboard | mlflow | wandb`.

`TrackingReporter` wraps the CLI's progress reporter: every hook (start / step / flush / epoch / note /
stop, and any other) is passed on unchanged, and the tracker logs
- every training step's own loss and the learning rate that step used (`train/loss`, `train/lr`),
  at x = the optimiser steps done in the run after it (1, 2, ...: the global step a checkpoint
  restores, so a resumed run goes on at the right step),
- every epoch's log row (`epoch/train_loss`, `epoch/val_loss`, `epoch/aux_loss`, `epoch/lr`, ...),
- the resolved config and runtime options as params / hparams (`begin`, called by the experiment),
- at the end every number of metrics.json: the test metrics, the persistence / climatology /
  input-mean references and codebook usage as values, the per-lead curves (`*_by_lead`) at x = lead
  1, 2, ...; the forecast-sample figure; with MLflow also config.json, metrics.json and log.csv as
  artifacts (`log_results`, called by the experiment after the leaderboard row).

Only rank 0 logs: the experiment opens the tracker on rank 0 alone. The libraries are optional
extras (`pip install 'svqbench[tensorboard]'`, `[mlflow]`, `[wandb]`), imported only when chosen.
A tracker that fails while the run goes on is reported once on stderr and dropped: the run itself,
its files and its leaderboard row never depend on it.

Where each one writes:
- tensorboard: RUN_DIR/tensorboard/ (`tensorboard --logdir results/` shows every run);
- mlflow: $MLFLOW_TRACKING_URI, else the SQLite store `sqlite:///RESULTS_DIR/mlflow.db` with the
  artifacts in RESULTS_DIR/mlartifacts/ (MLflow 3's recommended local backend; its file store needs
  an opt-in); experiment $MLFLOW_EXPERIMENT_NAME, else "svqbench"; run name = the run id;
- wandb: project $WANDB_PROJECT, else "svqbench"; local files under RUN_DIR/wandb/;
  `WANDB_MODE=offline` logs without an account (`wandb sync` uploads later).
RUN_DIR/tracking.json records which tracker run belongs to the svqbench run, so that
`svqbench run --resume` continues the same MLflow / W&B run.

A run killed and resumed logs every step once: the loop reads the steps (`flush`) before each
checkpoint and the tracker makes them durable then, so the store holds every step up to the
checkpoint a resume starts from. What the killed attempt logged after that checkpoint is replaced in
TensorBoard (the resumed writer starts with a purge at its first step, which TensorBoard honours) and
kept in MLflow, whose histories are append-only (the resumed run logs only the steps after the last
one stored; on a deterministic CPU run the values are the same).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from svqbench.errors import UserError

TRACKERS = ("none", "tensorboard", "mlflow", "wandb")
TRACKING_FILE = "tracking.json"
MLFLOW_DB = "mlflow.db"             # the default MLflow store, beside the run folders
MLFLOW_ARTIFACTS = "mlartifacts"    # its artifacts (MLflow's own name for a local artifact root)
RUN_FILES = ("config.json", "metrics.json", "log.csv")  # a run's record, logged as MLflow artifacts


def check_tracker(name: str) -> None:
    """A known tracker whose library is installed; checked before anything is created."""
    if name not in TRACKERS:
        raise UserError(f"unknown tracker {name!r}; choose one of: {', '.join(TRACKERS)}")
    needed = [] if name == "none" else [name]
    if name == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
        needed += ["sqlalchemy", "alembic"]  # what MLflow's default SQLite store needs beyond mlflow-skinny
    if any(importlib.util.find_spec(module) is None for module in needed):
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
    """The single numbers of metrics.json, flat: `test/mae_per_pixel`, `persistence/mae_per_pixel`,
    `codebook/perplexity`, `best_val_loss`, ... (per-lead curves: `lead_curves`; texts left out)."""
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


def lead_curves(metrics: dict) -> dict[str, list[float | None]]:
    """The per-lead curves of metrics.json: `test/rmse_per_pixel_by_lead`, `persistence/...`, and one
    curve per channel of each `*_by_lead_by_channel` (`.../<channel>`); item i is lead i + 1, None
    where a metric is undefined (a climatology's ACC)."""
    channels = ((metrics.get("test") or {}).get("metric_set") or {}).get("channels") or []
    out: dict[str, list[float | None]] = {}
    for section, values in metrics.items():
        if not isinstance(values, dict):
            continue
        for key, curve in values.items():
            if not isinstance(curve, list) or not curve:
                continue
            if key.endswith("_by_lead"):
                out[f"{section}/{key}"] = curve
            elif key.endswith("_by_lead_by_channel") and isinstance(curve[0], list):
                for c in range(len(curve[0])):
                    name = re.sub(r"[^\w.-]", "_", str(channels[c])) if c < len(channels) else str(c)
                    out[f"{section}/{key}/{name}"] = [row[c] for row in curve]
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


def _tags(config: dict, run_dir: Path) -> dict[str, str]:
    """What a run is, to search and group by: dataset, model, quantizer, seed, and the git commit of
    the svqbench that ran it (from the run's config.json; `git_dirty` when it had local changes)."""
    tags = {k: str(config[k]) for k in ("dataset", "model", "backbone", "quantizer", "seed") if k in config}
    try:
        git = json.loads((run_dir / "config.json").read_text()).get("git") or {}
    except (OSError, ValueError, AttributeError):
        git = {}
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = str(git["commit"])  # the tag MLflow's UI shows as the commit
        tags["git_dirty"] = str(bool(git.get("dirty"))).lower()
    return tags


class TrackingReporter:
    """The CLI's reporter plus a tracker (composition: train.py only sees a reporter)."""

    def __init__(self, inner: Any, name: str):
        self.inner, self.name = inner, name
        self.backend: Any = None

    def __getattr__(self, attr: str) -> Any:  # hooks this class does not know go to the inner reporter
        return getattr(self.inner, attr)

    # ---- lifetime, called by svqbench.experiment on rank 0

    def begin(self, run_id: str, run_dir: Path, config: dict, *, resume: bool = False) -> None:
        run_dir = Path(run_dir)
        record = run_dir / TRACKING_FILE
        saved = None
        if resume and record.exists():  # continue the tracker run of the interrupted attempt
            try:
                found = json.loads(record.read_text())
                saved = found.get("id") if found.get("tracker") == self.name else None
            except (OSError, ValueError, AttributeError):
                saved = None
        backend = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}[self.name]
        self.backend = self._safe(backend, run_id, run_dir, _params(config), _tags(config, run_dir), saved,
                                  resume=resume)
        if self.backend is not None:
            from svqbench.atomic import write_json
            write_json(record, {"tracker": self.name, "id": self.backend.id, "where": self.backend.where})

    def log_results(self, metrics: dict, figure: Path | None = None) -> None:
        """Final metrics and per-lead curves, then `figure` (a PNG the caller drew: the experiment draws
        the forecast sample, so tracking never imports plotting) and the run's files, then the tracker
        run is closed as finished."""
        if self.backend is None:
            return
        self._safe(self.backend.results, result_values(metrics), lead_curves(metrics))
        if figure is not None and self.backend is not None:
            self._safe(self.backend.image, "forecast_sample", Path(figure))
        if self.backend is not None:
            run_dir = Path(metrics["run_dir"])
            self._safe(self.backend.files, [run_dir / n for n in RUN_FILES if (run_dir / n).is_file()])
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
        self.inner.start(total_steps, *args, **kwargs)

    def step(self, epoch: int, loss: float, lr: float, global_step: int, *args, **kwargs) -> None:
        self.inner.step(epoch, loss, lr, global_step, *args, **kwargs)
        if self.backend is not None:  # x axis: optimiser steps done in the run, this one included
            self._safe(self.backend.scalars, {"train/loss": float(loss), "train/lr": float(lr)}, global_step + 1,
                       "train/step")

    def flush(self, *args, **kwargs) -> None:
        """The loop has read its steps and may write a checkpoint next: make the logged steps durable,
        so that a resume from that checkpoint finds every step up to it in the tracker."""
        self.inner.flush(*args, **kwargs)
        if self.backend is not None:
            self._safe(self.backend.flush)

    def epoch(self, row: dict, *args, **kwargs) -> None:
        self.inner.epoch(row, *args, **kwargs)
        if self.backend is not None:
            values = {f"epoch/{k}": float(v) for k, v in row.items()  # `best` as 0 / 1
                      if k != "epoch" and (_number(v) or isinstance(v, bool))}
            self._safe(self.backend.scalars, values, int(row["epoch"]), "epoch")
            if self.backend is not None:  # the end-of-epoch checkpoint follows
                self._safe(self.backend.flush)

    def note(self, message: str, *args, **kwargs) -> None:
        self.inner.note(message, *args, **kwargs)

    def stop(self, *args, **kwargs) -> None:
        self.inner.stop(*args, **kwargs)


def _check_writable(folder: Path) -> None:
    """Fail here, in the caller's thread, where `folder` cannot take a file: TensorBoard's writer
    opens its file in a thread of its own, which prints a traceback when it cannot."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(f"cannot write to {folder} ({e.strerror or e})") from None


# ---------------------------------------------------------------- one class per library
# Each has `id` (what a resumed run reopens, or None), `where`, scalars(values, step, axis),
# flush(), results(values, curves), image(tag, path), files(paths) and close(ok).

def _after_existing_event_files(folder: Path) -> None:
    """TensorBoard reads a run's event files in name order, `events.out.tfevents.<unix second>.<host>.<pid>`:
    a resumed writer's file must sort after the killed attempt's (else its purge comes first and the
    old steps after it), which holds once the clock has passed the newest file's second (at most 1 s)."""
    stamps = [int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*")
              if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
    if stamps:
        time.sleep(max(0.0, max(stamps) + 1 - time.time()))


class _TensorBoard:
    def __init__(self, run_id: str, run_dir: Path, params: dict, tags: dict, saved: str | None, *,
                 resume: bool = False):
        self.id, self.where, self.params = None, str(run_dir / "tensorboard"), params
        _check_writable(Path(self.where))
        # a resumed run opens its writer at its first step, purging what the killed attempt logged
        # from that step on (TensorBoard hides events at or after a session restart's step)
        self.writer = None if resume else self._open(None)

    def _open(self, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter
        if purge_step is not None:
            _after_existing_event_files(Path(self.where))
        writer = SummaryWriter(self.where, purge_step=purge_step)
        if purge_step is None:
            writer.add_text("config", "    " + json.dumps(self.params, indent=1).replace("\n", "\n    "))
        return writer

    def _writer(self, step: int | None = None):
        if self.writer is None:
            self.writer = self._open(step)
        return self.writer

    def scalars(self, values: dict, step: int, axis: str) -> None:
        writer = self._writer(step if axis == "train/step" else None)
        for key, value in values.items():
            writer.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def results(self, values: dict, curves: dict) -> None:
        writer = self._writer()
        # hparams: the config beside the final metrics (TensorBoard's HPARAMS tab); the metrics also
        # become scalars at step 0 in the same folder
        writer.add_hparams(self.params, {k: v for k, v in values.items() if math.isfinite(v)}, run_name=".")
        for key, curve in curves.items():
            for lead, value in enumerate(curve, 1):
                if value is not None:
                    writer.add_scalar(key, value, lead)

    def image(self, tag: str, path: Path) -> None:
        from matplotlib.image import imread
        self._writer().add_image(tag, imread(path)[..., :3], dataformats="HWC")

    def files(self, paths: list[Path]) -> None:
        pass  # the run folder beside the event files has them

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close()


class _MLflow:
    def __init__(self, run_id: str, run_dir: Path, params: dict, tags: dict, saved: str | None, *,
                 resume: bool = False):
        from mlflow import MlflowClient
        from mlflow.entities import Param
        results = run_dir.parent.resolve()
        given = os.environ.get("MLFLOW_TRACKING_URI")
        uri = given or f"sqlite:///{results / MLFLOW_DB}"
        self.client, self.where, self.pending = MlflowClient(uri), uri, []
        self.stored: dict[str, int | None] | None = None  # on resume: the last step stored per metric
        if saved is not None:
            self.id, self.stored = saved, {}
            self.client.update_run(saved, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "svqbench"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # artifacts beside the default store; a given store keeps its own artifact root
            experiment_id = self.client.create_experiment(
                name, artifact_location=None if given else (results / MLFLOW_ARTIFACTS).as_uri())
        run = self.client.create_run(experiment_id, run_name=run_id,
                                     tags={**tags, "svqbench.run_dir": str(run_dir.resolve())})
        self.id = run.info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.id, params=items[i:i + 100])

    def _new(self, key: str, step: int) -> bool:
        """Not stored yet: on resume, the store may hold steps the killed attempt logged after its last
        checkpoint (MLflow histories are append-only: they are kept, not logged twice)."""
        if self.stored is None:
            return True
        if key not in self.stored:
            self.stored[key] = max((m.step for m in self.client.get_metric_history(self.id, key)), default=None)
        last = self.stored[key]
        return last is None or step > last

    def scalars(self, values: dict, step: int, axis: str) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, step) for k, v in values.items() if self._new(k, step)]
        if len(self.pending) >= 1000:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            self.client.log_batch(self.id, metrics=self.pending[:1000])  # MLflow's limit per call
            self.pending = self.pending[1000:]

    def results(self, values: dict, curves: dict) -> None:
        self.scalars(values, 0, "results")
        for key, curve in curves.items():
            for lead, value in enumerate(curve, 1):
                if value is not None:
                    self.scalars({key: float(value)}, lead, "lead")
        self.flush()

    def image(self, tag: str, path: Path) -> None:
        self.client.log_artifact(self.id, str(path))

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.id, str(path))

    def close(self, ok: bool) -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.id, "FINISHED" if ok else "FAILED")


class _WandB:
    def __init__(self, run_id: str, run_dir: Path, params: dict, tags: dict, saved: str | None, *,
                 resume: bool = False):
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

    def flush(self) -> None:
        pass  # run.log hands each row to W&B's own service process at once

    def results(self, values: dict, curves: dict) -> None:
        self.run.summary.update({**values, **curves})

    def image(self, tag: str, path: Path) -> None:
        self.run.log({tag: self.wandb.Image(str(path))})

    def files(self, paths: list[Path]) -> None:
        pass  # the run folder beside the W&B files has them

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)
