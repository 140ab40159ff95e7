"""A saved run, the one way: find its folder, read its config, open its dataset, load its model.

    run = open_run("my-run", results_dir="results", data_dir="data")
    ds = run.dataset()                   # the prepared data it was trained on (checked)
    model = run.model(ds, device="cpu")  # best.pt weights, eval mode

Every command that takes a run (`evaluate`, `analyze`, `compare --plots`, `run --resume`, `sweep`)
goes through here, so all of them honour `--data-dir` and refuse the same bad inputs the same way.
A run folder holds config.json (the record), log.csv, best.pt, checkpoint.pt and metrics.json.

    run = load_run("my-run", device="cpu")   # the Python API (`from svqbench import load_run`): a LoadedRun
    pred = run.forecast(x)                   # physical units in and out, the run's train statistics

A folder written by `svqbench export` is read here too (`load_exported`, the format's file names):
svqbench/export.py writes it through this module, so reading never needs the writer.

`environment_record` is what config.json records about the process (command line, git commit,
versions, threads, device, host); `recorded_config` reads it back for `svqbench run --config`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from svqbench.config import RunConfig
from svqbench.data.prepared import PreparedDataset
from svqbench.device import check_device
from svqbench.errors import UserError

RECORD = "config.json"


def find_run(run: str | Path, results_dir: str | Path | None) -> Path:
    """A run folder given as a path or as a run id under `results_dir`."""
    candidates = [Path(run)] + ([Path(results_dir) / str(run)] if results_dir is not None else [])
    for candidate in candidates:
        if (candidate / RECORD).is_file():
            return candidate
    under = f" nor {str(candidates[-1])!r}" if len(candidates) > 1 else ""
    raise UserError(f"no run {str(run)!r}: neither {str(Path(run))!r}{under} holds a {RECORD}; "
                    f"pass a run folder or a run id under --results-dir")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except PermissionError:
        raise UserError(f"{path} cannot be read: permission denied") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable svqbench file ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a readable svqbench file (not a JSON object)")
    return value


def config_from_dict(values: Any, where: str) -> RunConfig:
    """The RunConfig a run saved (config.json, a checkpoint, an export); keys this version does not know
    and values of the wrong type are one-line errors naming `where` and the field, never ignored."""
    from svqbench.config import _coerce, validate
    if not isinstance(values, dict):
        raise UserError(f"{where} holds no run config")
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where} has config key(s) this svqbench does not know: {', '.join(unknown)}; "
                        "use the svqbench version that wrote it")
    # the same types `run --config` and recipes accept (config._coerce): a hand-edited "eight" is one line
    cfg = RunConfig(**{k: _coerce(k, v, where) for k, v in values.items()})
    validate(cfg)
    return cfg


def recorded_config(path: str | Path) -> tuple[dict, dict]:
    """(config values, runtime options) recorded in a run's config.json (or its folder), or in a JSON
    file of config fields such as `svqbench run --print-config` prints; `svqbench run --config`."""
    from svqbench.config import _coerce, field_names
    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    if not path.is_file():
        raise UserError(f"--config {path}: no such file; pass a run's config.json or its folder")
    record = read_json(path)
    values = record["config"] if isinstance(record.get("config"), dict) else record
    if values is record:
        values = {k: v for k, v in record.items() if k != "runtime"}
    unknown = sorted(set(values) - field_names())
    if unknown:
        raise UserError(f"{path} has config key(s) this svqbench does not know: {', '.join(unknown)}")
    runtime = record.get("runtime") if isinstance(record.get("runtime"), dict) else {}
    return {k: _coerce(k, v, str(path)) for k, v in values.items()}, runtime


@dataclass
class SavedRun:
    dir: Path
    record: dict                 # config.json
    config: RunConfig
    data_dir: Path | None = None

    @property
    def run_id(self) -> str:
        return self.record.get("run_id", self.dir.name)

    def metrics(self) -> dict | None:
        path = self.dir / "metrics.json"
        return read_json(path) if path.is_file() else None

    def dataset(self, *, auto_prepare: bool = False):
        """The prepared dataset under the run's data dir, refused when it is not the data it trained on."""
        from svqbench.data.prepared import open_prepared
        ds = open_prepared(self.config.dataset, self.data_dir, auto_prepare=auto_prepare)
        trained = (self.record.get("dataset_meta") or {}).get("stats")
        if trained is not None and trained != ds.meta["stats"]:
            raise UserError(f"dataset {self.config.dataset} at {ds.path} is not the one run {self.dir.name} was "
                            f"trained on (its train statistics differ); pass the --data-dir the run used")
        return ds

    def model(self, ds, *, checkpoint: str | Path = "best.pt", device: str = "cpu"):
        """The model its config describes, with the weights of `checkpoint` (in the run folder, or a
        path), in eval mode on `device`."""
        return load_model(self.config, ds, self.dir / checkpoint, device=device)

    def load(self, *, device: str = "cpu", checkpoint: str = "best.pt") -> "LoadedRun":
        """This run as a LoadedRun. The forecast shape and train statistics come from config.json (so the
        dataset need not be prepared here); records without them open the dataset."""
        from svqbench.models import ForecastShape
        check_device(device)
        meta = self.record.get("dataset_meta") or {}
        if meta.get("shape") and meta.get("stats") and meta.get("in_len") and meta.get("out_len"):
            _, c, h, w = meta["shape"]
            shape = ForecastShape(int(meta["in_len"]), int(meta["out_len"]), int(c), int(h), int(w))
            stats = TrainStats(mean=meta["stats"]["mean"], std=meta["stats"]["std"])
        else:
            ds = self.dataset()
            shape, stats = ForecastShape.of(ds), TrainStats(mean=ds.mean, std=ds.std)
        checkpoint_path = self.dir / checkpoint
        if not checkpoint_path.is_file():
            raise UserError(f"run {self.run_id} has no {checkpoint} in {self.dir}; it has not finished a validated "
                            f"epoch")
        model = load_model(self.config, shape, checkpoint_path, device=device)
        return LoadedRun(self.config, model, shape, stats, self.metrics(), self.run_id, device, self)


def load_model(cfg: RunConfig, ds, checkpoint: Path, *, device: str = "cpu"):
    import torch

    from svqbench.checkpoint import read_weights
    from svqbench.models import build_model
    check_device(device)
    state = read_weights(checkpoint)
    model = build_model(cfg, ds)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{checkpoint} does not fit the model its config describes ({str(e).splitlines()[0]})") from None
    return model.to(torch.device(device)).eval()


def open_run(run: str | Path, *, results_dir: str | Path | None = None, data_dir: str | Path | None = None) -> SavedRun:
    run_dir = find_run(run, results_dir)
    record = read_json(run_dir / RECORD)
    cfg = config_from_dict(record.get("config"), str(run_dir / RECORD))
    return SavedRun(run_dir, record, cfg, None if data_dir is None else Path(data_dir))


def locate_checkpoint(target: str | Path, results_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(run folder, checkpoint) for a run folder (its best.pt), a run id under `results_dir`, or a
    checkpoint file inside a run folder."""
    target = Path(target)
    if not target.exists() and results_dir is not None and (Path(results_dir) / target).exists():
        target = Path(results_dir) / target
    if target.is_dir():
        checkpoint = target / "best.pt"
        if not checkpoint.is_file():
            raise UserError(f"run folder {target} has no best.pt; pass a checkpoint file or a finished run")
        return target, checkpoint
    if target.is_file():
        return target.parent, target
    raise UserError(f"{target} does not exist; pass a run folder (results/<run-id>), a run id under "
                    "--results-dir, or a checkpoint file")


# ---- a run ready to forecast from Python (`from svqbench import load_run`) ----------------------

class TrainStats:
    """A run's train statistics (mean and std per channel), normalising exactly as its prepared
    dataset does: `normalise` / `denormalise` are PreparedDataset's own functions, so a forecast
    from here equals the one `evaluate` scored. Lets a run forecast without its dataset."""
    normalise = PreparedDataset.normalise
    denormalise = PreparedDataset.denormalise

    def __init__(self, *, mean, std):
        import numpy as np
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise UserError(f"train statistics need one mean and one std per channel, got {self.mean.shape} "
                            f"and {self.std.shape}")


@dataclass
class LoadedRun:
    """A trained model with what it needs to forecast in physical units.

        run = load_run("my-run")                 # or load_exported("export/")
        pred = run.forecast(x)                   # x (B, in_len, C, H, W), physical units -> (B, out_len, C, H, W)

    `config` RunConfig, `model` (eval mode, on `device`), `shape` ForecastShape, `stats` TrainStats,
    `metrics` (metrics.json, or None), `dataset` (the prepared data it trained on, opened on first
    use; a run folder only), `saved` the SavedRun (None for an export)."""
    config: RunConfig
    model: Any
    shape: Any
    stats: TrainStats
    metrics: dict | None
    run_id: str
    device: str = "cpu"
    saved: SavedRun | None = None

    @functools.cached_property
    def dataset(self):
        if self.saved is None:
            raise UserError(f"run {self.run_id} was loaded from an export, which carries no dataset; load the run "
                            f"folder (load_run) to read its data")
        return self.saved.dataset()

    def forecast(self, x, *, batch_size: int | None = None):
        """(B, out_len, C, H, W) float32 numpy forecasts in physical units of `x`, (B, in_len, C, H, W)
        in physical units (numpy or tensor), normalised with the run's train statistics."""
        import numpy as np
        import torch

        from svqbench.data.prepared import Batch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        s = self.shape
        want = (s.in_len, s.channels, s.height, s.width)
        if x.ndim != 5 or x.shape[1:] != want:
            raise UserError(f"x has shape {tuple(x.shape)}; run {self.run_id} takes (B, {', '.join(map(str, want))}): "
                            f"B windows of {s.in_len} frames, {s.channels} channel(s), a {s.height} x {s.width} grid")
        if not np.isfinite(x).all():
            raise UserError("x holds NaN or infinite values; fill them before forecasting")
        size = batch_size or self.config.batch_size
        out = [np.zeros((0, s.out_len, *want[1:]), dtype=np.float32)]
        self.model.eval()
        for i in range(0, len(x), size):
            part = x[i: i + size]
            xn, _, offset = self.stats.normalise(Batch(part, part[:, :0], np.arange(len(part))), self.config.norm)
            with torch.no_grad():
                pred, _ = self.model(torch.from_numpy(np.ascontiguousarray(xn)).to(self.device))
            out.append(self.stats.denormalise(pred.float().cpu().numpy(), offset))
        return np.concatenate(out)


# ---- a folder written by `svqbench export` (svqbench/export.py writes it; read here, so that load_run
# takes either kind of folder without importing the writer) -----------------------------------------

FORMAT = "svqbench-export-1"
WEIGHTS, CONFIG, NORMALISATION, METRICS = "model.safetensors", "config.json", "normalisation.json", "metrics.json"


def is_export(path: Path) -> bool:
    """Is `path` a folder written by `svqbench export`?"""
    return (Path(path) / WEIGHTS).is_file() and (Path(path) / CONFIG).is_file()


def check_statistics(norm: dict, channels: int, where: str, *, fix: str = "export the run again") -> None:
    """One finite mean and one finite std > 0 per channel, or a one-line UserError naming `where`: a
    std of 0 would turn every forecast into NaN without a word."""
    for key in ("mean", "std"):
        values = norm.get(key)
        if not isinstance(values, list) or len(values) != channels:
            got = f"{len(values)} values" if isinstance(values, list) else repr(values)
            raise UserError(f"{where}: {key} needs one number per channel ({channels}), got {got}; {fix}")
        for c, v in enumerate(values):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
                (key == "mean" or v > 0)
            if not ok:
                rule = "a finite number" if key == "mean" else "a finite number > 0"
                raise UserError(f"{where}: {key} of channel {c} is {v!r}, must be {rule}; {fix}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_exported(path: str | Path, *, device: str = "cpu") -> LoadedRun:
    """The LoadedRun of an export folder: the model rebuilt from config.json, weights from safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from svqbench.device import check_device
    from svqbench.models import ForecastShape, build_model
    path = Path(path)
    if not is_export(path):
        raise UserError(f"{path} is not an svqbench export: it needs {WEIGHTS} and {CONFIG} "
                        f"(write one with `svqbench export RUN {path}`)")
    check_device(device)
    record = read_json(path / CONFIG)
    if record.get("format") != FORMAT:
        raise UserError(f"{path / CONFIG} has format {record.get('format')!r}, expected {FORMAT!r}")
    cfg = config_from_dict(record.get("config"), str(path / CONFIG))
    try:
        shape = ForecastShape(**record["shape"])
        norm = read_json(path / NORMALISATION)
    except (KeyError, TypeError) as e:
        raise UserError(f"{path} is an incomplete export (missing {e}); export the run again") from None
    digest = record.get("weights_sha256")
    if not isinstance(digest, str):
        raise UserError(f"{path / CONFIG} records no sha256 of {WEIGHTS} (exported before svqbench recorded one), "
                        f"so the weights cannot be checked; export the run again")
    if norm.get("norm") != cfg.norm:
        raise UserError(f"{path / NORMALISATION} does not match {path / CONFIG} (norm {norm.get('norm')!r} vs "
                        f"{cfg.norm!r})")
    check_statistics(norm, shape.channels, str(path / NORMALISATION))
    stats = TrainStats(mean=norm["mean"], std=norm["std"])
    try:
        found = _sha256(path / WEIGHTS)
    except OSError as e:
        raise UserError(f"{path / WEIGHTS} cannot be read ({e.strerror}); export the run again") from None
    if found != digest:
        raise UserError(f"{path / WEIGHTS} has sha256 {found[:12]}..., not the {str(digest)[:12]}... that "
                        f"{CONFIG} records: the file changed since export (a bad copy?); export the run again")
    try:
        state = load_file(path / WEIGHTS)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path / WEIGHTS} cannot be read ({e}); export the run again") from None
    model = build_model(cfg, shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path / WEIGHTS} does not fit the model config.json describes "
                        f"({str(e).splitlines()[0]})") from None
    import torch
    model = model.to(torch.device(device)).eval()
    metrics = read_json(path / METRICS) if (path / METRICS).is_file() else None
    return LoadedRun(cfg, model, shape, stats, metrics, str(record.get("run_id", path.name)), device, None)


def load_run(run: str | Path, *, results_dir: str | Path | None = "results", data_dir: str | Path | None = None,
             device: str = "cpu", checkpoint: str = "best.pt") -> LoadedRun:
    """A run folder (or run id under `results_dir`), or a folder written by `svqbench export`, ready to
    forecast on `device`. The model is built from the saved config with the `checkpoint` weights."""
    if is_export(Path(run)):
        return load_exported(run, device=device)
    return open_run(run, results_dir=results_dir, data_dir=data_dir).load(device=device, checkpoint=checkpoint)




# ---- the record of where and how a run ran (config.json) ----------------------------------------

def environment_record(device: str) -> dict:
    """The command line, git state, library versions, threads, device and host of this process."""
    import importlib.metadata
    import socket
    import sys

    import torch

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"command": list(sys.argv), "git": git_state(),
            "versions": {**{p: version(p) for p in ("numpy", "vector-quantize-pytorch", "xarray")},
                         "torch": torch.__version__},  # with its build tag (+cpu, +cu130)
            "torch_threads": torch.get_num_threads(), "device_name": device_name(device), "host": socket.gethostname()}


def git_state() -> dict | None:
    """{"commit", "dirty"} of the git checkout svqbench runs from (dirty: the package or its pins differ
    from the commit); None for an installed copy or without git."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                                 text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", "svqbench", "pyproject.toml", "constraints.txt")
    if commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def device_name(device: str) -> str:
    """The GPU's name, or the CPU model."""
    import platform

    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
