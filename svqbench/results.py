"""Run records on disk, the leaderboard CSV, and the comparison table.

results/<run-id>/config.json   resolved config
results/<run-id>/log.csv       one row per epoch
results/<run-id>/best.pt       best-by-validation checkpoint
results/<run-id>/metrics.json  test metrics of the model and of the reference forecasts
results/leaderboard.csv        one row per finished run (appended under a lock, atomically)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from svqbench.errors import UserError

LEADERBOARD = "leaderboard.csv"
REFERENCE_ROWS = ("persistence", "climatology")


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def create_run_dir(results_dir: Path, run_id: str) -> Path:
    path = Path(results_dir) / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise UserError(f"run directory {path} already exists; pick another --name or remove it") from None
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held on `<path>.lock` (serialises concurrent writers)."""
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_row(results_dir: Path, row: dict[str, Any]) -> Path:
    """Append one row: the whole new file is written beside the old one and renamed over it, so a
    crash leaves either the old or the new leaderboard, never a half row."""
    path = Path(results_dir) / LEADERBOARD
    with locked(path):
        old = pd.read_csv(path) if path.exists() else pd.DataFrame()
        new = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        new.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return path


def load_leaderboards(directory: Path) -> pd.DataFrame:
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"{directory} does not exist; run `svqbench run` first or pass the results folder")
    files = [directory] if directory.is_file() else sorted(directory.rglob(LEADERBOARD))
    frames = []
    for f in files:
        try:
            frames.append(pd.read_csv(f))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{f} is not a readable leaderboard CSV ({e})") from None
    if not frames:
        raise UserError(f"no {LEADERBOARD} under {directory}; run `svqbench run` first")
    return pd.concat(frames, ignore_index=True)


METRICS = ("mse", "mae")
GROUP = ["dataset", "scale", "backbone"]


def compare_table(board: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, scale, backbone, method): mean and std over seeds of test MSE/MAE, and
    the improvement % of each quantizer over `none` in the same group (positive = lower error).
    The persistence and climatology forecasts of the same test split appear as methods too."""
    missing = [c for c in GROUP + ["quantizer", "seed", "test_mse", "test_mae"] if c not in board.columns]
    if missing:
        raise UserError(f"leaderboard lacks column(s) {', '.join(missing)}; was it written by svqbench?")
    rows = []
    for keys, group in board.groupby(GROUP, sort=True):
        methods = {q: g for q, g in group.groupby("quantizer")}
        for ref in REFERENCE_ROWS:
            if f"{ref}_mse" in group.columns:
                # every run of the group scored the same reference forecast on the same split: one row
                methods[ref] = pd.DataFrame({f"test_{m}": group[f"{ref}_{m}"].iloc[:1] for m in METRICS})
        base = methods.get("none")
        for method, g in methods.items():
            row = dict(zip(GROUP, keys), method=method, runs=len(g))
            for m in METRICS:
                col = g[f"test_{m}"].astype(float)
                row[f"{m}_mean"] = col.mean()
                row[f"{m}_std"] = col.std(ddof=1) if len(col) > 1 else float("nan")
                if base is not None and method not in ("none",) + REFERENCE_ROWS:
                    b = base[f"test_{m}"].astype(float).mean()
                    row[f"{m}_improvement_pct"] = 100.0 * (b - row[f"{m}_mean"]) / b
            rows.append(row)
    return pd.DataFrame(rows)
