"""A saved run, the one way: find its folder, read its config, open its dataset, load its model.

    run = open_run("my-run", results_dir="results", data_dir="data")
    ds = run.dataset()                   # the prepared data it was trained on (checked)
    model = run.model(ds, device="cpu")  # best.pt weights, eval mode

Every command that takes a run (`evaluate`, `analyze`, `compare --plots`, `run --resume`, `sweep`)
goes through here, so all of them honour `--data-dir` and refuse the same bad inputs the same way.
A run folder holds config.json (the record), log.csv, best.pt, checkpoint.pt and metrics.json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from svqbench.config import RunConfig
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
    """The RunConfig a run saved; keys this version does not know are an error, never ignored."""
    from svqbench.config import validate
    if not isinstance(values, dict):
        raise UserError(f"{where} holds no run config")
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where} has config key(s) this svqbench does not know: {', '.join(unknown)}; "
                        "use the svqbench version that wrote it")
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise UserError(f"{where} holds a malformed run config ({e})") from None
    validate(cfg)
    return cfg


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


def load_model(cfg: RunConfig, ds, checkpoint: Path, *, device: str = "cpu"):
    import torch

    from svqbench.checkpoint import read_weights
    from svqbench.models import build_model
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
