"""Run records on disk, the leaderboard CSV, and the comparison table.

results/<run-id>/config.json   resolved config
results/<run-id>/log.csv       one row per epoch
results/<run-id>/best.pt       best-by-validation checkpoint
results/<run-id>/metrics.json  test metrics of the model and of the reference forecasts
results/leaderboard.csv        one row per finished run (appended under a lock, atomically)
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from svqbench.atomic import CannotWrite, ensure_dir, write_frame
from svqbench.errors import UserError

LEADERBOARD = "leaderboard.csv"
REFERENCE_ROWS = ("persistence", "climatology", "input_mean")  # evaluate.REFERENCES
EXTERNAL_MODEL = "external"  # the `model` of a forecast file's row (svqbench.score)


def create_run_dir(results_dir: Path, run_id: str) -> Path:
    path = ensure_dir(results_dir) / run_id
    try:
        path.mkdir()
    except FileExistsError:
        raise UserError(f"run directory {path} already exists; pick another --name or remove it") from None
    except OSError as e:
        raise CannotWrite(path, e) from None
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held on `<path>.lock` (serialises concurrent writers)."""
    lock = path.with_name(path.name + ".lock")
    try:
        handle = open(lock, "a")
    except OSError as e:  # a read-only or missing results folder
        raise CannotWrite(lock, e) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Columns that are names, never numbers: a run called `007` or `NA` keeps its name exactly.
TEXT_COLUMNS = ("run_id", "dataset", "scale", "model", "backbone", "quantizer", "loss", "norm", "precision", "finished",
                "data_digest", "units")


def unit_label(units) -> str:
    """The one physical unit shown beside numbers and on axes: "" when unknown, mixed (a leaderboard
    cell holds "K,%" for several variables) or dimensionless ("1", as CF writes it)."""
    found = {part for u in units if isinstance(u, str) for part in u.split(",") if part}
    return found.pop() if len(found) == 1 and found != {"1"} else ""


def _read_cells(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV's header and its records as written: (line number in the file, cells); blank lines skipped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            records = [(reader.line_num, cells) for cells in reader if cells]
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable leaderboard CSV ({e})") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from None
    if len(set(header)) != len(header) or "" in header:
        raise UserError(f"{path} is not a readable leaderboard CSV (its header has empty or repeated column names)")
    return header, records


def _text_frame(path: Path, header: list[str], records: list[tuple[int, list[str]]]) -> pd.DataFrame:
    """Records as a frame of strings (short records padded with empty cells); a record with more cells
    than the header has no place in it and is refused."""
    long = [line for line, cells in records if len(cells) > len(header)]
    if long:
        raise UserError(f"{path}: line(s) {', '.join(map(str, long))} hold more cells than the header's "
                        f"{len(header)} columns; fix or remove them")
    return pd.DataFrame([cells + [""] * (len(header) - len(cells)) for _, cells in records], columns=header,
                        dtype=object)


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Text columns kept as written (pandas would read `007` as 7 and `NA` as missing), every other
    column numeric where all its cells are numbers, empty cells missing."""
    for column in table.columns:
        if column not in TEXT_COLUMNS:
            values = table[column].replace("", None)
            try:
                table[column] = pd.to_numeric(values)
            except (ValueError, TypeError):
                table[column] = values
    return table


def read_leaderboard(path: Path) -> pd.DataFrame:
    """Every row of a leaderboard CSV (see _typed for the column types)."""
    return _typed(_text_frame(path, *_read_cells(path)))


def in_leaderboard(results_dir: Path, run_id: str) -> bool:
    path = Path(results_dir) / LEADERBOARD
    if not path.exists():
        return False
    with locked(path):
        return run_id in set(read_leaderboard(path)["run_id"])


def append_row(results_dir: Path, row: dict[str, Any]) -> Path:
    """Add one run's row; a row with the same run id (a run whose folder was deleted by hand and whose
    name was used again) is replaced, never repeated. The other rows are kept exactly as written. The
    whole new file is written beside the old one and renamed over it, so a crash leaves either the old
    or the new leaderboard, never a half row."""
    path = Path(results_dir) / LEADERBOARD
    with locked(path):
        old = _text_frame(path, *_read_cells(path)) if path.exists() else pd.DataFrame()
        if "run_id" in old.columns:
            old = old[old["run_id"] != str(row["run_id"])]
        new = pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old) else pd.DataFrame([row])
        write_frame(path, new)
    return path


# What compare needs of every row; a row without it (hand-edited, half-written) is skipped.
REQUIRED_TEXT = ("run_id", "dataset", "scale", "backbone", "quantizer")
REQUIRED_NUMBERS = ("test_mse", "test_mae")


def _row_problem(row: dict[str, str], cells: int, columns: int) -> str | None:
    """Why a leaderboard record does not fit the schema, or None."""
    def number(text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    if cells != columns:
        return f"{cells} of {columns} cells"
    for column in REQUIRED_TEXT:
        if not row[column].strip():
            return f"no {column}"
    seed = number(row["seed"])
    if seed is None or not seed.is_integer():
        return f"seed {row['seed']!r} is not a whole number"
    optional = [f"{r}_{m}" for r in REFERENCE_ROWS for m in METRICS if f"{r}_{m}" in row]
    for column in REQUIRED_NUMBERS + tuple(optional):
        if (column in REQUIRED_NUMBERS or row[column] != "") and number(row[column]) is None:
            return f"{column} {row[column]!r} is not a number"
    return None


def _valid_rows(path: Path, warn: Callable[[str], None]) -> pd.DataFrame:
    """The rows of one leaderboard that fit the schema; one warning naming the lines of those that do
    not, and one for a run id recorded twice (only its last row counts: its folder holds that run)."""
    header, records = _read_cells(path)
    missing = [c for c in REQUIRED_TEXT + ("seed",) + REQUIRED_NUMBERS if c not in header]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; was it written by svqbench?")
    good, bad = [], []
    for line, cells in records:
        row = dict(zip(header, cells + [""] * (len(header) - len(cells))))
        problem = _row_problem(row, len(cells), len(header))
        (bad if problem else good).append((line, problem or row))
    if bad:
        shown = "; ".join(f"line {line}: {why}" for line, why in bad[:5]) + ("; ..." if len(bad) > 5 else "")
        warn(f"{path}: skipped line(s) {', '.join(str(line) for line, _ in bad)} that do not fit the leaderboard "
             f"schema ({shown})")
    last = {row["run_id"]: line for line, row in good}
    repeated = [(line, row["run_id"]) for line, row in good if last[row["run_id"]] != line]
    if repeated:
        warn(f"{path}: run id(s) recorded again further down, only the last row counts: "
             + ", ".join(f"{run_id} (line {line}, again on line {last[run_id]})" for line, run_id in repeated))
    rows = [row for line, row in good if last[row["run_id"]] == line]
    return _typed(pd.DataFrame(rows, columns=header, dtype=object))


def load_leaderboards(directory: Path, *, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every leaderboard under `directory` (or the one CSV it names), each run's config attached
    (attach_run_configs). Rows that do not fit the schema are skipped, each file's lines named in one
    `warn` call (default: warnings.warn)."""
    warn = warn or _warn
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"{directory} does not exist; run `svqbench run` first or pass the results folder")
    files = [directory] if directory.is_file() else sorted(directory.rglob(LEADERBOARD))
    if not files:
        raise UserError(f"no {LEADERBOARD} under {directory}; run `svqbench run` first")
    frames = [attach_run_configs(_valid_rows(f, warn), f.parent) for f in files]
    board = pd.concat(frames, ignore_index=True)
    if board.empty:
        raise UserError(f"no run to compare in {', '.join(map(str, files))} (a header and no valid row); "
                        f"run `svqbench run` first")
    return board


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


METRICS = ("mse", "mae")
GROUP = ["dataset", "scale", "backbone"]


def compare_table(board: pd.DataFrame, paper: pd.DataFrame | None = None, *, baseline: str | None = None
                  ) -> pd.DataFrame:
    """One row per (dataset, scale, backbone, method): mean and std over seeds of test MSE/MAE, and
    the improvement % over the `none` run of the same cell (positive = lower error), paired by seed;
    with `baseline` (a method as the table names it, e.g. "none" for SimVP or "convlstm none") every
    method of a group is compared with that method's runs instead, across models. A method is the
    quantizer plus the settings that vary inside the group (split_methods). With `paper`
    (load_paper), paper-scale rows get the matching published value and the gap to it.
    The persistence and climatology forecasts of the same test split appear as methods too.
    Quantizer figures (train aux loss, codebook usage) are averaged over seeds where recorded."""
    from svqbench.quantizers.analysis import LEADERBOARD_KEYS
    missing = [c for c in GROUP + ["quantizer", "seed", "test_mse", "test_mae"] if c not in board.columns]
    if missing:
        raise UserError(f"leaderboard lacks column(s) {', '.join(missing)}; was it written by svqbench?")
    from svqbench.stats import per_seed, seed_warning
    if baseline in REFERENCE_ROWS:
        raise UserError(f"--baseline {baseline} is a reference forecast, not a trained method (it has no seeds to "
                        f"pair with); the table already shows every method beside it")
    rows, warnings = [], []
    keys_of = list(GROUP)
    if "data_digest" in board.columns:  # runs on different prepared data are never compared
        board = board.assign(data_digest=board["data_digest"].fillna("").astype(str))
        keys_of.append("data_digest")
    found = False
    for keys, group in board.groupby(keys_of, sort=True):
        methods = split_methods(group)
        if baseline is not None and baseline not in methods:
            warnings.append(f"{'/'.join(map(str, keys))}: no method {baseline!r} to compare with (methods: "
                            f"{', '.join(m for m in methods)}); no gains for this group")
        found = found or (baseline in methods)
        for ref in REFERENCE_ROWS:
            if f"{ref}_mse" in group.columns:
                # every run of the group scored the same reference forecast on the same split: one row
                methods[ref] = pd.DataFrame({f"test_{m}": group[f"{ref}_{m}"].iloc[:1] for m in METRICS})
        for method, g in methods.items():
            reference = method in REFERENCE_ROWS
            if reference or method == baseline:
                base = None
            elif baseline is not None:
                base = methods.get(baseline)
            else:
                base = same_cell_baseline(g, methods)
            row = dict(zip(keys_of, keys), method=method, runs=len(g))
            if base is not None:
                row["baseline"] = baseline or ("none" if model_of(g).iloc[0] in ("simvp", EXTERNAL_MODEL)
                                               else f"{model_of(g).iloc[0]} none")
            if not reference:
                row["model"] = model_of(g).iloc[0]
            if "units" in group.columns and group["units"].notna().any():
                row["units"] = str(group["units"].dropna().iloc[0])
            if not reference:
                row["seeds"] = g["seed"].nunique()
                # a forecast file scored by `svqbench score` has no seeds to run more of
                note = None if row["model"] == EXTERNAL_MODEL else \
                    seed_warning(g, label=f"{'/'.join(map(str, keys))} {method}")
                if note:
                    warnings.append(note)
            for m in METRICS:
                # runs that share a seed (one process and torchrun) count as one seed
                col = g[f"test_{m}"].astype(float) if reference else per_seed(g, metric=f"test_{m}").values
                row[f"{m}_mean"] = col.mean()
                row[f"{m}_std"] = col.std(ddof=1) if len(col) > 1 else float("nan")
                if base is not None:
                    b = per_seed(base, metric=f"test_{m}").values.mean()
                    row[f"{m}_improvement_pct"] = 100.0 * (b - row[f"{m}_mean"]) / b
                    row.update(paired_statistics(g, base, m))
            for col in ("train_aux_loss",) + LEADERBOARD_KEYS:
                if col in g.columns:
                    row[col] = pd.to_numeric(g[col], errors="coerce").mean()
            if paper is not None and method not in REFERENCE_ROWS:
                row.update(published_values(g.iloc[0], paper))
            rows.append(row)
    if baseline is not None and not found:
        raise UserError(f"--baseline {baseline!r} is no method of any compared group; methods: "
                        f"{', '.join(sorted({r['method'] for r in rows}))}")
    table = add_gaps(pd.DataFrame(rows))
    if "seeds" in table.columns:  # a count (empty for the reference forecasts), never 3.0
        table["seeds"] = table["seeds"].astype("Int64")
    if "data_digest" in table.columns:
        table["data_digest"] = table["data_digest"].map(short_digest)
    table.attrs["warnings"] = warnings
    return table


COMPARE_USAGE = {"train_aux_loss": "aux loss", "perplexity": "perplexity", "perplexity_theta2": "perpl. θ=2",
                 "perplexity_theta3": "perpl. θ=3", "weight_kurtosis": "kurt. W", "codebook_kurtosis": "kurt. M",
                 "near_zero_fraction": "W≈0", "mse_paper": "paper MSE", "mse_gap_pct": "MSE gap %",
                 "mae_paper": "paper MAE", "mae_gap_pct": "MAE gap %", "paper": "published cell"}


def compare_sections(table: pd.DataFrame) -> list[dict[str, Any]]:
    """`svqbench compare`'s tables as text, one per dataset, scale, backbone (and data digest): `title`,
    `headers`, `rows` (lists of cell strings) and the `note` printed under it; the CLI only draws them."""
    out = []
    by = GROUP + (["data_digest"] if "data_digest" in table.columns else [])
    for keys, group in table.groupby(by, sort=True):
        usage = [c for c in COMPARE_USAGE if c in group.columns and group[c].notna().any()]
        unit = unit_label(group["units"]) if "units" in group.columns else ""
        mse_unit, mae_unit = (f" ({unit}²)", f" ({unit})") if unit else ("", "")
        paired = "mae_verdict" in group.columns and group["mae_verdict"].notna().any()
        how = sorted(set(group["ci_method"].dropna())) if "ci_method" in group.columns else []
        models = "model" in group.columns and group["model"].dropna().ne("simvp").any()  # recurrent rows present
        bases = sorted(set(group["baseline"].dropna())) if "baseline" in group.columns else []
        against = bases[0] if len(bases) == 1 else "own none" if bases else "none"  # several: each model its own
        headers = ["method", *(["model"] if models else []), "seeds", f"MSE{mse_unit}", f"MAE{mae_unit}",
                   *([f"MAE gain vs {against}{mae_unit} [95% CI]", "verdict"] if paired else []),
                   "MSE improv. %", "MAE improv. %", *(COMPARE_USAGE[c] for c in usage)]
        title = (f"{keys[0]}{' data ' + keys[3] if len(keys) > 3 and keys[3] else ''} ({keys[1]} scale), "
                 f"{'SimVP ' if models else ''}backbone {keys[2]} — test split, per-pixel, "
                 f"{'in ' + unit if unit else 'physical units'}, mean ± std over seeds")
        rows = []
        for _, r in group.iterrows():
            def fmt(m):
                s = f"{r[f'{m}_mean']:.4f}"
                return s + (f" ± {r[f'{m}_std']:.4f}" if r[f"{m}_std"] == r[f"{m}_std"] else "")

            def pct(m):
                v = r.get(f"{m}_improvement_pct")
                return "" if v is None or v != v else f"{v:+.1f}"

            def gain(m):  # none - method: positive reads "better", like the improvement %
                v, lo, hi = (r.get(f"{m}_{k}") for k in ("gain", "gain_ci_low", "gain_ci_high"))
                if v is None or v != v:
                    return ""
                return f"{v:+.4f}" + (f" [{lo:+.4f}, {hi:+.4f}]" if lo == lo else "")
            seeds = r.get("seeds")
            if r["method"] in REFERENCE_ROWS:  # one deterministic forecast: no seeds
                runs = ""
            else:
                runs = str(r["runs"]) if seeds is None or pd.isna(seeds) or int(seeds) == r["runs"] else \
                    f"{int(seeds)} ({r['runs']} runs)"
            verdict = r.get("mae_verdict")
            model = r.get("model") if models else None
            rows.append([r["method"], *([model if isinstance(model, str) else ""] if models else []), runs,
                         fmt("mse"), fmt("mae"),
                         *([gain("mae"), verdict if isinstance(verdict, str) else ""] if paired else []),
                         pct("mse"), pct("mae"),
                         *("" if r[c] != r[c] else r[c] if isinstance(r[c], str) else f"{r[c]:.4g}" for c in usage)])
        over = f"the `{bases[0]}` runs" if len(bases) == 1 else "each model's own `none` runs"
        note = (f"gain and improvement % over {over} of the same cell: positive = lower error (better)"
                + (f"; paired by seed: {'; '.join(how)}" if how else ""))
        out.append({"title": title, "headers": headers, "rows": rows, "note": note})
    return out


def paired_statistics(runs: pd.DataFrame, baseline: pd.DataFrame, metric: str) -> dict[str, Any]:
    """The gain of the method over the `none` baseline of the same cell, paired by seed: the baseline's
    test `metric` minus the method's (positive = lower error = better, the sign of the improvement %),
    with a 95% interval (t over seeds; one seed: bootstrap over test windows when both runs saved their
    per-window errors) and a verdict: better / worse / within noise."""
    from svqbench.stats import block_length, compare_runs
    windows = {}
    if runs["seed"].nunique() == 1 and "run_dir" in runs.columns and "run_dir" in baseline.columns:
        errors = [window_errors(Path(str(d)), metric) for d in (runs["run_dir"].iloc[0], baseline["run_dir"].iloc[0])]
        if all(e is not None for e in errors) and len(errors[0][0]) == len(errors[1][0]):
            windows = dict(method_windows=errors[0][0], baseline_windows=errors[1][0],
                           block=block_length(errors[0][1]))
    c = compare_runs(runs, baseline, metric=f"test_{metric}", **windows)
    # 0.0 - x: a gain of exactly zero prints +0.0000, never -0.0000
    return {f"{metric}_gain": 0.0 - c.mean_diff, f"{metric}_gain_ci_low": 0.0 - c.ci_high,
            f"{metric}_gain_ci_high": 0.0 - c.ci_low, f"{metric}_verdict": c.verdict, "ci_method": c.method}


def window_errors(run_dir: Path, metric: str) -> tuple[Any, int] | None:
    """A run's per-window test errors (window_errors_test.npz) and its window length, if saved."""
    import numpy as np
    path = run_dir / "window_errors_test.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as saved:
            values = saved[metric]
        meta = json.loads((run_dir / "config.json").read_text()).get("dataset_meta", {})
        length = int(meta.get("in_len", 0)) + int(meta.get("out_len", 0))
    except (OSError, ValueError, KeyError):
        return None
    return values, max(1, length)


# ------------------------------------------------------------------ methods, cells, published numbers

# settings that only mean something for a quantizer: ignored for `none` runs
QUANTIZER_SETTINGS = ("codebook_size", "svq_hidden", "codebook_init", "frozen_codebook", "svq_impl",
                      "svq_one_layer", "svq_post_relu", "svq_frozen_projection", "svq_hidden_cap", "svq_hid_relu")


def attach_run_configs(board: pd.DataFrame, directory: Path) -> pd.DataFrame:
    """Add each run's resolved config (results/<run>/config.json) as columns the leaderboard lacks,
    so runs can be told apart and matched on any setting (runs without a config.json keep NaN), and
    `run_dir`, the run's folder."""
    from svqbench.config import field_names
    if "run_id" not in board.columns:
        return board
    configs = []
    for run_id in board["run_id"].astype(str):
        try:
            configs.append(json.loads((Path(directory) / run_id / "config.json").read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError):
            configs.append({})
    extra = sorted({k for c in configs for k in c} & field_names() - set(board.columns))
    columns = pd.DataFrame([{k: c.get(k) for k in extra} for c in configs], index=board.index, dtype=object)
    columns["run_dir"] = [str(Path(directory) / run_id) for run_id in board["run_id"].astype(str)]
    return pd.concat([board, columns], axis=1)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if value != value else f"{value:g}"
    return "" if value is None else str(value)


def _settings(runs: pd.DataFrame, key: str) -> pd.Series:
    values = runs[key].map(_fmt)
    if key in QUANTIZER_SETTINGS:
        values = values.where(runs["quantizer"].astype(str) != "none", "")
    return values


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """Config keys besides dataset/scale/backbone/quantizer/seed whose values differ between runs."""
    import dataclasses

    from svqbench.config import RunConfig
    identity = set(GROUP) | {"model", "quantizer", "seed"}
    keys = [f.name for f in dataclasses.fields(RunConfig) if f.name not in identity and f.name in runs.columns]
    return [k for k in keys if _settings(runs, k).replace("", pd.NA).nunique() > 1]


def model_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's forecasting model; runs recorded before the model family (no `model`) are SimVP."""
    if "model" not in runs.columns:
        return pd.Series("simvp", index=runs.index)
    return runs["model"].map(lambda m: "simvp" if m is None or m != m or m == "" else str(m))


def split_methods(group: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Runs of one (dataset, scale, backbone) group by method: the model (named unless SimVP), the
    quantizer and every setting that varies among that model's runs (e.g. `svq noise=0.2`), so a
    sweep's cells are never averaged together."""
    models = model_of(group)
    if (models != "simvp").any():
        methods = {}
        for model in sorted(set(models), key=lambda m: (m != "simvp", m)):
            for label, runs in _split_one_model(group[models == model]).items():
                methods[label if model == "simvp" else f"{model} {label}"] = runs
        return methods
    return _split_one_model(group)


def _split_one_model(group: pd.DataFrame) -> dict[str, pd.DataFrame]:
    keys = varying_settings(group)
    parts = [group["quantizer"].astype(str)] + [
        (k + "=" + _settings(group, k)).where(_settings(group, k) != "", "") for k in keys]
    labels = pd.concat(parts, axis=1).apply(lambda r: " ".join(v for v in r if v), axis=1) if keys \
        else group["quantizer"].astype(str)
    order = sorted(set(labels), key=lambda m: (not m.startswith("none"), m))
    return {m: group[labels == m] for m in order}


def same_cell_baseline(runs: pd.DataFrame, methods: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The `none` runs whose settings (quantizer settings aside) equal those of `runs`."""
    if str(runs["quantizer"].iloc[0]) == "none":
        return None
    model = model_of(runs).iloc[0]
    external = model == EXTERNAL_MODEL  # a forecast file (`svqbench score`): no settings; SimVP's baseline
    model = "simvp" if external else model
    methods = {m: g for m, g in methods.items() if m in REFERENCE_ROWS or model_of(g).iloc[0] == model}
    if external:
        return next((g for g in methods.values() if "quantizer" in g.columns
                     and str(g["quantizer"].iloc[0]) == "none"), None)
    everything = pd.concat([g for m, g in methods.items() if m not in REFERENCE_ROWS])
    keys = [k for k in varying_settings(everything) if k not in QUANTIZER_SETTINGS]
    mine = {k: _fmt(runs[k].iloc[0]) for k in keys}
    for g in methods.values():
        if "quantizer" in g.columns and str(g["quantizer"].iloc[0]) == "none" and \
                all(_fmt(g[k].iloc[0]) == v for k, v in mine.items()):
            return g
    return None


def load_paper(directory: Path | None = None) -> pd.DataFrame:
    """The published numbers: every *.csv of `directory`, by default the tables that ship with
    svqbench (svqbench/resources/paper; long format: match columns, metric, value)."""
    from svqbench.resources import paper_dir
    directory = paper_dir() if directory is None else Path(directory)
    files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    if not files:
        raise UserError(f"no published tables (*.csv) in {directory}; pass --paper DIR with the published tables (CSV)")
    frames = []
    for f in files:
        try:
            frame = pd.read_csv(f, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{f} is not a readable CSV ({e})") from None
        missing = {"table", "model", "dataset", "quantizer", "metric", "value"} - set(frame.columns)
        if missing:
            raise UserError(f"{f} lacks column(s) {', '.join(sorted(missing))}")
        frames.append(frame)
    paper = pd.concat(frames, ignore_index=True).fillna("")
    paper["value"] = pd.to_numeric(paper["value"], errors="raise")
    return paper


def _same(published: str, ours: Any) -> bool:
    mine = _fmt(ours)
    try:
        return math.isclose(float(published), float(mine), rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return published.lower() == mine.lower()


# What a published row means by a setting it does not state: the paper's default model. Only
# codebook_init is truly unknown when unstated (Table 8 vs the reference t2m configs disagree).
PAPER_DEFAULTS = dict(noise="0", placement="before", svq_hidden="128", svq_one_layer="false",
                      svq_post_relu="false", svq_frozen_projection="false")


def published_values(run: pd.Series, paper: pd.DataFrame) -> dict[str, Any]:
    """For a paper-scale run, the published cell whose settings all equal the run's config: the
    row's stated settings, and PAPER_DEFAULTS for the ones it leaves blank (quantizer settings are
    ignored for `none`). When several match, the one stating the most non-default settings wins,
    then the lowest table number. Returns `paper` (where from) and `{m}_paper` for the compare
    metrics; rows without a quantizer (other architectures) or for one variable never match, and
    neither do runs of a model other than SimVP (the published cells with a quantizer are SimVP's)."""
    from svqbench.config import field_names
    model = run.get("model")
    if str(run.get("scale")) != "paper" or model not in (None, "", "simvp") and model == model:
        return {}
    # the tables' `model` column is the row's printed name, not the config's model field
    match_cols = [c for c in paper.columns if c in field_names() and c != "model"]
    candidates = paper[(paper["quantizer"] != "") & (paper.get("variable", "") == "")]
    best: dict[str, tuple] = {}
    for _, row in candidates.iterrows():
        wanted = {c: row[c] or PAPER_DEFAULTS.get(c, "") for c in match_cols}
        if row["quantizer"] == "none":
            wanted = {c: v for c, v in wanted.items() if c not in QUANTIZER_SETTINGS}
        wanted = {c: v for c, v in wanted.items() if v != ""}
        if not all(c in run.index and _same(v, run[c]) for c, v in wanted.items()):
            continue
        special = sum(1 for c, v in wanted.items() if c in PAPER_DEFAULTS and not _same(v, PAPER_DEFAULTS[c])
                      or c == "codebook_init")
        for m in METRICS:
            if row["metric"] == f"{m}_per_pixel":
                rank = (-special, int(row["table"]))
                if m not in best or rank < best[m][0]:
                    best[m] = (rank, row)
    out: dict[str, Any] = {}
    for m, (_, row) in best.items():
        out[f"{m}_paper"] = float(row["value"])
        out.setdefault("paper", f"Table {row['table']}: {row['model']}")
    return out


def add_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """`{m}_gap_pct`: our mean minus the published value, in % of the published value."""
    for m in METRICS:
        if f"{m}_paper" in table.columns:
            table[f"{m}_gap_pct"] = 100.0 * (table[f"{m}_mean"] - table[f"{m}_paper"]) / table[f"{m}_paper"]
    return table


# ------------------------------------------------------------------ per-lead-time scorecard

# each scorecard metric, by preference: the latitude-weighted score where the grid has latitudes
SCORECARD_METRICS = (("rmse_latweighted", "rmse_per_pixel"), ("acc_latweighted", "acc_unweighted"),
                     ("bias_latweighted", "bias_per_pixel"))


def scorecard(board: pd.DataFrame, metrics: tuple = SCORECARD_METRICS, *,
              warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Per-lead-time scorecards of the weather runs of a leaderboard, from each run's metrics.json
    (`<metric>_by_lead`; with several channels `<metric>_by_lead_by_channel`, one row per variable
    and lead). One card per prepared dataset (name and content digest) and metric: a DataFrame with
    one row per lead time (index `lead`, 1-based; `variable`, `lead` with several channels), one
    column per run (its run id) and one per reference forecast of the same test split (the first
    run's). Runs without metrics.json or of another kind are left out; a metrics.json that cannot be
    read gets one `warn` call naming it (default: warnings.warn) and is left out. Returns dicts
    with dataset, data_digest, metric, step (the data's time step, when recorded), units (of the
    metric, from the leaderboard; None for ACC or when unknown), references and table. After
    `metrics`, one RMSE and one ACC card per region the first run was scored on (metric
    `rmse_latweighted_<region>` etc., svqbench.regions)."""
    cards = []
    for (dataset, digest), runs in sorted(_weather_runs(board, warn, 'the scorecard').items()):
        first = runs[0][1]
        channels = (first["test"].get("metric_set") or {}).get("channels") or []
        regional = tuple(choice for r in scored_regions(first["test"]) for choice in (
            (f"rmse_latweighted_{r}", f"rmse_per_pixel_{r}"), (f"acc_latweighted_{r}", f"acc_unweighted_{r}")))
        for choices in tuple(metrics) + regional:
            metric = next((m for m in choices if f"{m}_by_lead" in first["test"]), None)
            if metric is None:
                continue
            columns = {run_id: saved["test"] for run_id, saved, *_ in runs}
            columns.update({ref: first[ref] for ref in REFERENCE_ROWS if isinstance(first.get(ref), dict)})
            by_channel = len(channels) > 1 and f"{metric}_by_lead_by_channel" in first["test"]
            table = pd.DataFrame({name: pd.Series(_by_lead(scores, metric, by_channel), dtype=float)
                                  for name, scores in columns.items()})
            leads = len(first["test"][f"{metric}_by_lead"])
            table = table.reindex(range(leads * (len(channels) if by_channel else 1)))
            if by_channel:
                table.index = pd.MultiIndex.from_product([channels, range(1, leads + 1)], names=["variable", "lead"])
            else:
                table.index = pd.RangeIndex(1, len(table) + 1, name="lead")
            cards.append({"dataset": dataset, "data_digest": digest, "metric": metric,
                          "step": next((r[2] for r in runs if r[2]), None),
                          "units": None if metric.startswith("acc") else next((r[3] for r in runs if r[3]), None),
                          "references": [
                              r for r in REFERENCE_ROWS if r in columns], "table": table})
    return cards


def scored_regions(test: dict) -> list[str]:
    """The regions a run's test metrics hold scores for (metric_set["regions"], svqbench.regions)."""
    regions = (test.get("metric_set") or {}).get("regions") or {}
    return [name for name, d in regions.items() if isinstance(d, dict) and d.get("scored")]


def region_table(board: pd.DataFrame, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """`compare`'s regional view of the weather runs: one table per prepared dataset, one row per run
    and per reference forecast (the first run's), columns the whole grid's and each region's test
    RMSE and ACC (metrics.json). Returns dicts with dataset, data_digest, units, climatology (which
    one ACC used) and table; datasets whose runs hold no regional scores are left out."""
    out = []
    for (dataset, digest), runs in sorted(_weather_runs(board, warn, 'the regional table').items()):
        first = runs[0][1]["test"]
        regions = scored_regions(first)
        if not regions:
            continue
        weighted = "rmse_latweighted" in first
        rmse, acc = ("rmse_latweighted", "acc_latweighted") if weighted else ("rmse_per_pixel", "acc_unweighted")
        columns = [(f"RMSE {r}", rmse if r == "global" else f"{rmse}_{r}") for r in ["global", *regions]]
        columns += [(f"ACC {r}", acc if r == "global" else f"{acc}_{r}") for r in ["global", *regions]]
        rows = {run_id: saved["test"] for run_id, saved, *_ in runs}
        rows.update({ref: runs[0][1][ref] for ref in REFERENCE_ROWS if isinstance(runs[0][1].get(ref), dict)})
        table = pd.DataFrame([{label: _number(scores.get(key)) for label, key in columns} for scores in rows.values()],
                             index=pd.Index(list(rows), name="run"))
        climatology = ((first.get("metric_set") or {}).get("climatology") or {}).get("kind", "static")
        out.append({"dataset": dataset, "data_digest": digest, "table": table, "climatology": climatology,
                    "units": next((r[3] for r in runs if r[3]), None),
                    "references": [r for r in REFERENCE_ROWS if r in rows]})
    return out


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _weather_runs(board: pd.DataFrame, warn: Callable[[str], None] | None, what: str) -> dict[tuple, list]:
    """The weather runs of a leaderboard with a readable metrics.json, grouped by prepared dataset
    (name, content digest): (run id, metrics.json, the data's step, units) in board order."""
    warn = warn or _warn
    if "run_id" not in board.columns or "run_dir" not in board.columns:
        return {}
    groups: dict[tuple, list] = {}
    for _, row in board.iterrows():
        path = Path(str(row["run_dir"])) / "metrics.json"
        run_dir = path.parent
        if not path.exists():
            continue
        try:
            saved = json.loads(path.read_text())
            test = saved["test"]
        except OSError as e:
            warn(f"{path} cannot be read ({e.strerror or e}); run {row['run_id']} is left out of {what}")
            continue
        except (ValueError, KeyError, TypeError) as e:
            why = "is not valid JSON" if isinstance(e, ValueError) else "holds no test metrics"
            warn(f"{path} {why}; run {row['run_id']} is left out of {what}")
            continue
        if not isinstance(test, dict) or (test.get("metric_set") or {}).get("kind", "weather") != "weather":
            continue
        try:
            step = (json.loads((run_dir / "config.json").read_text()).get("dataset_meta") or {}).get("step")
        except (OSError, ValueError, AttributeError):
            step = None
        digest = row.get("data_digest")
        key = (str(row.get("dataset")), "" if digest is None or digest != digest else str(digest))
        units = row.get("units")
        groups.setdefault(key, []).append((str(row["run_id"]), saved, step, units if isinstance(units, str) else None))
    return groups


def _by_lead(scores: dict, metric: str, by_channel: bool) -> list:
    """One run's values of `metric` per lead time (by_channel: per variable, then lead; None where
    the run lacks it or a value is undefined)."""
    if by_channel:
        rows = scores.get(f"{metric}_by_lead_by_channel")
        return [] if rows is None else [v for per_channel in zip(*rows) for v in per_channel]
    return list(scores.get(f"{metric}_by_lead") or [])



# ------------------------------------------------------------------ scorecards as WeatherBench 2 draws them

DIGEST_CHARS = 12


def short_digest(digest: Any) -> str:
    """A prepared dataset's content digest as shown to people: its first 12 hex characters."""
    text = "" if digest is None or digest != digest else str(digest)
    return text.split(":", 1)[-1][:DIGEST_CHARS]


def lead_axis(step: Any, leads: int) -> tuple[list[float], str]:
    """Lead times 1..leads in the data's unit from its step ("6 hours", "1 year"): (values, plural unit),
    e.g. ([6, 12], "hours"); a step that is not "<number> <unit>" (or none) gives ([1, 2, ...], "steps")."""
    import re
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]+?)s?\s*", str(step or ""))
    if not match:
        return [float(k) for k in range(1, leads + 1)], "steps"
    size, unit = float(match[1]), match[2].lower()
    return [size * k for k in range(1, leads + 1)], unit + "s"


def lead_label(value: float, unit: str) -> str:
    """One lead for a column header: `6 h`, `1 year`, `2 years`, `3 steps`."""
    short = {"seconds": "s", "minutes": "min", "hours": "h", "days": "d"}.get(unit)
    number = f"{value:g}"
    if short:
        return f"{number} {short}"
    return f"{number} {unit[:-1] if value == 1 else unit}"


# Better is lower for errors and |bias|, higher for ACC: every scorecard cell reads "positive = better".
def _oriented(metric: str, values: pd.Series | pd.DataFrame):
    """Scores turned into "lower is better": ACC negated, bias as |bias|, errors as they are."""
    if metric.startswith("acc"):
        return -values
    if metric.startswith("bias"):
        return values.abs()
    return values


def method_scorecards(board: pd.DataFrame, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The scorecards of `compare --scorecard`, drawn as WeatherBench 2 does: for each prepared dataset
    and metric of scorecard() (regions included), one row per method of each (scale, backbone) cell
    (split_methods; each reference forecast one row too) and one column per lead time (and variable),
    each cell the improvement over the `none` baseline of the same cell in % of the baseline
    (means over seeds; positive = better: lower RMSE and |bias|, higher ACC).
    A cell is `significant` when the paired 95% interval over seeds of the method's score minus the
    baseline's (stats.compare_runs) excludes zero; with one seed there is no per-lead interval and
    no cell is significant. Returns dicts with dataset, data_digest, metric, step, units, columns
    (lead and variable labels), rows (the methods, `<scale> <backbone> <method>` when a dataset holds
    several cells), baseline, relative (DataFrame of %), significant (DataFrame of bool), seeds."""
    from svqbench.stats import compare_runs
    out = []
    for card in scorecard(board, warn=warn):
        table, metric = card["table"], card["metric"]
        runs = board[board["run_id"].astype(str).isin(table.columns)]
        cells = list(runs.groupby(["scale", "backbone"], sort=True))
        relative, significant, seeds = {}, {}, {}
        for (scale, backbone), group in cells:
            methods = split_methods(group)
            prefix = f"{scale} {backbone} " if len(cells) > 1 else ""

            def per_seed_scores(g: pd.DataFrame) -> pd.DataFrame:  # rows: table cells; columns: seeds
                values = table[g["run_id"].astype(str)]
                values.columns = g["seed"].to_numpy()
                return _oriented(metric, values.T.groupby(level=0).mean().T)
            first_base = None
            for method, g in methods.items():
                base = same_cell_baseline(g, methods)
                if base is None:  # `none` itself, or no baseline of the same settings
                    continue
                theirs, mine = per_seed_scores(base), per_seed_scores(g)
                if first_base is None:
                    first_base = theirs
                    base_label = next(m for m, runs_of in methods.items() if runs_of is base)
                base_mean = theirs.mean(axis=1)
                relative[prefix + method] = 100.0 * (base_mean - mine.mean(axis=1)) / base_mean.abs()
                significant[prefix + method] = pd.Series(
                    [compare_runs(mine.loc[i].dropna(), theirs.loc[i].dropna()).verdict in ("better", "worse")
                     for i in table.index], index=table.index)
                seeds[prefix + method] = mine.shape[1]
            if first_base is None:
                continue
            base_mean = first_base.mean(axis=1)  # references against the cell's (first) `none`, named
            for ref in card["references"]:          # when it is not SimVP's
                row = prefix + ref + ("" if base_label == "none" else f" vs {base_label}")
                score = _oriented(metric, table[ref])
                relative[row] = 100.0 * (base_mean - score) / base_mean.abs()
                significant[row] = pd.Series(False, index=table.index)
                seeds[row] = 0
        if not relative:
            continue
        leads = table.index.get_level_values("lead")
        values, unit = lead_axis(card["step"], int(max(leads)))
        columns = [(f"{var} " if isinstance(key, tuple) else "") + lead_label(values[int(lead) - 1], unit)
                   for key, lead in zip(table.index, leads)
                   for var in ([key[0]] if isinstance(key, tuple) else [None])]
        rel = pd.DataFrame(relative).T
        rel.columns = columns
        rel = rel.dropna(how="all")  # e.g. the climatology's ACC: undefined, so not a row
        sig = pd.DataFrame(significant).T.astype(bool).loc[rel.index]
        sig.columns = columns
        out.append({**{k: card[k] for k in ("dataset", "data_digest", "metric", "step", "units")},
                    "baseline": "none", "rows": list(rel.index), "columns": columns,
                    "relative": rel, "significant": sig, "seeds": seeds, "lead_unit": unit})
    return out
