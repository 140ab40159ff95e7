"""Figures (PNG, matplotlib Agg): forecast samples, learning curves, error vs lead time, noise curves.

Every function takes what is on disk (run folders, a leaderboard) and writes one PNG atomically;
matplotlib is imported inside the functions so `svqbench --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from svqbench.atomic import save_figure, write_frame
from svqbench.errors import UserError
from svqbench.results import short_digest, unit_label
from svqbench.runs import read_json


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    return save_figure(path, fig, dpi=110, bbox_inches="tight")


Runs = dict[str, list[Path]]  # method label -> its run folders, one per seed


def _runs(runs: "Runs | dict[str, Path]") -> Runs:
    return {k: (v if isinstance(v, list) else [v]) for k, v in runs.items()}


def _unit(run_dir: Path) -> str:
    """The physical unit of a run's data ("" when unknown or mixed)."""
    try:
        units = read_json(Path(run_dir) / "config.json").get("dataset_meta", {}).get("units") or []
    except UserError:
        return ""
    return unit_label(units)


def learning_curves(runs: "Runs | dict[str, Path]", path: Path) -> Path:
    """Train and validation loss per epoch (each run's log.csv): every seed drawn, one colour per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    for (label, dirs), color in zip(_runs(runs).items(), _colors(len(runs))):
        for k, run_dir in enumerate(dirs):
            log = pd.read_csv(Path(run_dir) / "log.csv")
            for ax, column in zip(axes, ("train_loss", "val_loss")):
                ax.plot(log["epoch"], log[column], color=color, alpha=0.8 if len(dirs) == 1 else 0.55, lw=1.2,
                        marker="o" if len(log) <= 12 else None, ms=3,
                        label=f"{label} ({len(dirs)} seed{'s' if len(dirs) > 1 else ''})" if k == 0 else None)
    epochs = sorted({int(e) for line in axes[0].get_lines() for e in line.get_xdata()})
    for ax, title in zip(axes, ("train loss", "validation loss")):
        ax.set(title=title, xlabel="epoch", yscale="log")
        if epochs and epochs[-1] - epochs[0] <= 15:  # every epoch a tick (one epoch too: never `-0.045`)
            ax.set_xticks(range(epochs[0], epochs[-1] + 1))
        else:
            _integer_ticks(ax.xaxis)
        readable_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("loss (normalised space, one line per seed)")
    axes[1].legend(fontsize=7)
    return _save(fig, path)


def _integer_ticks(axis) -> None:
    """Whole-number ticks (epochs, steps): never `0.5`."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def readable_log_ticks(axis) -> None:
    """A log axis (call it after drawing) labelled in plain numbers (`0.06`, `0.1`, `0.2`; `1e-05` far
    from 1), never `6 × 10⁻²`: ticks at 1, 2 and 5 per decade when the data span under two decades,
    so that a narrow range still gets several labels, and at each power of ten when they span more."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    low, high = sorted(axis.get_view_interval())
    decades = np.log10(high / low) if low > 0 else np.inf
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


# how each reference forecast is drawn on the lead-time plot (metrics.json keys, evaluate.REFERENCES)
REFERENCE_STYLES = {"persistence": ("persistence", "k", "--"), "climatology": ("climatology", "0.45", ":"),
                    "input_mean": ("input mean", "0.3", "-.")}


def _step(run_dir: Path) -> Any:
    """The data's time step as recorded with the run ("6 hours", "1 year"), or None."""
    try:
        return (read_json(Path(run_dir) / "config.json").get("dataset_meta") or {}).get("step")
    except UserError:
        return None


def lead_time_errors(runs: "Runs | dict[str, Path]", path: Path, metric: str = "mae_per_pixel") -> Path:
    """Test error per lead time (metrics.json `<metric>_by_lead`) on an axis in the data's time unit:
    the mean over seeds with every seed as a point, and every reference forecast the runs recorded
    (persistence, climatology, input mean)."""
    from svqbench.results import lead_axis
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    references: dict[str, list] = {}
    unit, step = "", None
    for (label, dirs), color in zip(_runs(runs).items(), _colors(len(runs))):
        curves = []
        for run_dir in dirs:
            metrics = read_json(Path(run_dir) / "metrics.json")
            curve = metrics.get("test", {}).get(f"{metric}_by_lead")
            if curve is None:
                raise UserError(f"{run_dir}/metrics.json has no test {metric}_by_lead")
            curves.append(curve)
            for ref in REFERENCE_STYLES:
                values = (metrics.get(ref) or {}).get(f"{metric}_by_lead")
                if values is not None and ref not in references:
                    references[ref] = values
            unit = unit or _unit(run_dir)
            step = step or _step(run_dir)
        curves = np.asarray(curves, dtype=float)
        lead, lead_unit = lead_axis(step, curves.shape[1])
        ax.plot(lead, curves.mean(0), marker="o", color=color,
                label=f"{label} (mean of {len(dirs)} seed{'s' if len(dirs) > 1 else ''})")
        if len(dirs) > 1:
            for curve in curves:
                ax.scatter(lead, curve, s=8, color=color, alpha=0.5)
    for ref, values in references.items():
        name, color, style = REFERENCE_STYLES[ref]
        values = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        if np.isfinite(values).any():
            ax.plot(lead_axis(step, len(values))[0], values, color=color, ls=style, label=f"{name} (reference)")
    what = metric.replace("_per_pixel", "").upper()
    ax.set(xlabel=f"lead time ({lead_unit})",
           ylabel=f"test {what} per pixel" + (f" ({unit}{'²' if what == 'MSE' else ''})" if unit else ""),
           title=f"test {what} vs lead time" + (" (points: seeds)" if any(len(d) > 1 for d in _runs(runs).values())
                                                else ""))
    if len(lead) <= 12:  # a tick at every lead: 6, 12, 18 hours, not 6, 8, 10
        ax.set_xticks(lead, [f"{v:g}" for v in lead])
    elif all(float(v).is_integer() for v in lead):
        _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a curve
    return _save(fig, path)


def noise_table(board: pd.DataFrame) -> pd.DataFrame:
    """Table 5 layout from leaderboard rows: per method and eta, mean/std of test MSE and MAE over
    seeds (runs sharing a seed count once) and the increase (%) over the same method at eta = 0,
    paired by seed, with its spread over seeds (`*_increase_pct_std`)."""
    if "noise" not in board.columns:
        raise UserError("the leaderboard has no `noise` column; noise curves need runs with --noise")
    from svqbench.results import split_methods
    from svqbench.stats import per_seed
    rows = []
    # methods as compare names them, noise aside: e.g. `none`, `svq`, `none loss=l2`
    for method, runs in split_methods(board.drop(columns=["noise"])).items():
        by_eta = {float(eta): g for eta, g in board.loc[runs.index].groupby("noise", sort=True)}
        for eta, g in by_eta.items():
            row: dict[str, Any] = dict(method=method, noise=eta, runs=len(g), seeds=g["seed"].nunique())
            for m in ("mse", "mae"):
                col = per_seed(g, metric=f"test_{m}").values
                row[f"{m}_mean"], row[f"{m}_std"] = col.mean(), (col.std(ddof=1) if len(col) > 1 else float("nan"))
                if 0.0 in by_eta:  # the increase of each seed over the same seed at eta = 0
                    clean = per_seed(by_eta[0.0], metric=f"test_{m}").values
                    inc = (100.0 * (col / clean - 1)).dropna()
                    row[f"{m}_increase_pct"] = inc.mean() if len(inc) else float("nan")
                    row[f"{m}_increase_pct_std"] = inc.std(ddof=1) if len(inc) > 1 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def noise_curves(board: pd.DataFrame, path: Path, title: str = "noise injection (Table 5)") -> Path:
    """Test MSE/MAE vs the injected-noise fraction eta, one line per quantizer (mean +- std over
    seeds, every seed a point), and the increase over eta = 0 below (mean +- std of the per-seed
    increases): the SVQ and no-SVQ curves side by side."""
    table = noise_table(board)
    unit = unit_label(board["units"]) if "units" in board.columns else ""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, layout="constrained")
    methods = list(dict.fromkeys(table["method"]))
    from svqbench.results import split_methods
    groups = split_methods(board.drop(columns=["noise"]))
    for method, color in zip(methods, _colors(len(methods))):
        g = table[table["method"] == method]
        label = method.replace("none", "no quantizer", 1) if method.startswith("none") else method
        runs = board.loc[groups[method].index] if method in groups else None
        for j, m in enumerate(("mse", "mae")):
            axes[0, j].errorbar(100 * g["noise"], g[f"{m}_mean"], yerr=g[f"{m}_std"].fillna(0.0), marker="o",
                                capsize=3, color=color, label=label)
            if runs is not None and runs["seed"].nunique() > 1:
                axes[0, j].scatter(100 * runs["noise"].astype(float), runs[f"test_{m}"].astype(float), s=10,
                                   color=color, alpha=0.45)
            if f"{m}_increase_pct" in g.columns:
                axes[1, j].errorbar(100 * g["noise"], g[f"{m}_increase_pct"],
                                    yerr=g[f"{m}_increase_pct_std"].fillna(0.0), marker="o", capsize=3,
                                    color=color, label=label)
    for j, m in enumerate(("MSE", "MAE")):
        suffix = f" ({unit}{'²' if m == 'MSE' else ''})" if unit else " (physical units)"
        axes[0, j].set(ylabel=f"test {m}{suffix}", title=f"test {m}: mean ± std over seeds, points = seeds")
        axes[1, j].set(ylabel=f"{m} increase over eta = 0 (%, ± std over seeds)",
                       xlabel="injected noise eta (% of input elements)")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(title)
    return _save(fig, path)


def forecast_sample(run_dir: Path, path: Path, *, data_dir: Path | None = None, index: int = 0,
                    split: str = "test", anomalies: bool = False) -> Path:
    """Truth, prediction and error of one window of `split`, per variable (rows) and lead time
    (columns), in physical units, from the run's best checkpoint. `anomalies`: truth and prediction
    minus the window's input mean, where full fields hide the signal (weather)."""
    import torch

    from svqbench.data.batches import read_batch, to_tensors
    from svqbench.runs import open_run
    saved = open_run(run_dir, data_dir=data_dir)
    run_dir, cfg = saved.dir, saved.config
    ds = saved.dataset()
    n = len(ds.splits[split])
    if not 0 <= index < n:
        raise UserError(f"sample index {index} is outside the {split} split (0..{n - 1})")
    model = saved.model(ds)
    batch = read_batch(ds, split, np.array([index]))
    x, _, offset = to_tensors(ds, batch, cfg.norm, torch.device("cpu"))
    with torch.no_grad():
        pred, _ = model(x)
    pred = ds.denormalise(pred.float().numpy(), offset.numpy())[0]  # (T, C, H, W)
    true = np.asarray(batch.y[0], dtype=np.float64)
    if anomalies:
        base = np.asarray(batch.x[0], dtype=np.float64).mean(axis=0)  # (C, H, W)
        true, pred = true - base, pred - base
    steps = list(range(pred.shape[0]))[:6]  # at most 6 lead times keep the figure readable
    units = ds.meta.get("units") or [""] * len(ds.channels)
    from svqbench.results import lead_axis, lead_label
    leads, lead_unit = lead_axis(ds.meta.get("step"), pred.shape[0])
    lat, lon = ds.lat, (ds.meta.get("grid") or {}).get("lon")
    geographic = lat is not None and lon is not None and len(lon) == true.shape[-1]
    if geographic and lat[0] > lat[-1]:  # north-to-south rows: drawn south at the bottom
        true, pred, lat = true[..., ::-1, :], pred[..., ::-1, :], lat[::-1]
    extent = _edges(np.asarray(lon, dtype=float)) + _edges(lat) if geographic else None
    plt = _pyplot()
    n_rows = 3 * len(ds.channels)
    # rows as tall as the map's aspect needs (degrees drawn 1:1), so maps do not float in white space
    height = 2.2 * (extent[3] - extent[2]) / (extent[1] - extent[0]) + 0.35 if geographic else 1.9
    fig, axes = plt.subplots(n_rows, len(steps), figsize=(2.2 * len(steps) + 1.5, height * n_rows), squeeze=False,
                             layout="constrained", sharex=True, sharey=True)
    for c, name in enumerate(ds.channels):
        lo, hi = float(true[:, c].min()), float(true[:, c].max())
        if anomalies:  # centred on zero
            lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
        err = pred[:, c] - true[:, c]
        bound = float(np.abs(err[steps]).max()) or 1.0
        unit = unit_label([units[c]]) if c < len(units) else ""
        images = {}
        for j, t in enumerate(steps):
            cmap = "RdBu_r" if anomalies else "viridis"
            rows = ((true[t, c], "truth", cmap, lo, hi), (pred[t, c], "prediction", cmap, lo, hi),
                    (err[t], "error", "RdBu_r", -bound, bound))
            for r, (img, what, cmap, vmin, vmax) in enumerate(rows):
                ax = axes[3 * c + r, j]
                images[r] = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
                                      origin="lower" if geographic or ds.lat is not None else "upper")
                if geographic:
                    _degree_ticks(ax)
                else:
                    ax.set_xticks([])
                    ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"lead {lead_label(leads[t], lead_unit)}", fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"{name}\n{what}", fontsize=8)
        # truth and prediction share one colour scale (values beyond it drawn at its ends: `extend`); the
        # error has its own, centred on zero
        fig.colorbar(images[0], ax=axes[3 * c: 3 * c + 2, :].ravel().tolist(), fraction=0.02, extend="both",
                     label=f"{'anomaly vs input mean, ' if anomalies else ''}{unit}".strip(", "))
        fig.colorbar(images[2], ax=axes[3 * c + 2, :].ravel().tolist(), fraction=0.02, label=f"error {unit}".strip())
    fig.suptitle(f"{run_dir.name}: {split} window {index}{' (anomalies: minus the input mean)' if anomalies else ''}",
                 fontsize=9)
    return _save(fig, path)


def _edges(centres: np.ndarray) -> list[float]:
    """The outer edges of evenly spaced cell centres (imshow's extent)."""
    half = (centres[-1] - centres[0]) / (2 * max(len(centres) - 1, 1))
    return [float(centres[0] - half), float(centres[-1] + half)]


def _degree_ticks(ax) -> None:
    """Latitude/longitude ticks as 30°N / 120°W (longitudes past 180 read as west)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    def lon(v, _):
        v = (v + 180.0) % 360.0 - 180.0
        return f"{abs(v):g}°{'E' if v > 0 else 'W' if v < 0 and v != -180 else ''}"

    def lat(v, _):
        return f"{abs(v):g}°{'N' if v > 0 else 'S' if v < 0 else ''}"
    ax.xaxis.set_major_locator(MaxNLocator(3, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(3, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lon))
    ax.yaxis.set_major_formatter(FuncFormatter(lat))
    ax.tick_params(labelsize=7)


def scorecard_figure(cards: list[dict], path: Path) -> Path:
    """A WeatherBench 2 style scorecard of one prepared dataset (results.method_scorecards): one heat
    map per metric (regions included), rows methods, columns lead times (and variables), each cell
    the improvement over `none` in % (positive = better), green better and red worse. Each panel has
    its own colour scale, symmetric about 0 and set by its methods' cells (the reference forecasts
    can be hundreds of % off and would wash everything else out; their cells beyond it are drawn at
    its ends); the cells whose paired interval over seeds excludes zero are bold with a `*`."""
    from matplotlib.colors import TwoSlopeNorm
    plt = _pyplot()
    width = max(len(c["columns"]) for c in cards)
    heights = [len(c["rows"]) + 0.9 for c in cards]
    fig, axes = plt.subplots(len(cards), 1, figsize=(3.2 + 0.85 * width, 0.34 * sum(heights) + 1.0), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    for ax, card in zip(axes[:, 0], cards):
        values = card["relative"].to_numpy(dtype=float)
        marked = card["significant"].to_numpy(dtype=bool)
        methods = [bool(card["seeds"][m]) for m in card["rows"]]
        scale = np.abs(values[methods] if any(methods) else values)
        bound = float(np.nanmax(scale)) if np.isfinite(scale).any() else 1.0
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-(bound or 1.0), vmax=bound or 1.0)
        image = ax.imshow(values, cmap="RdYlGn", norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = abs(norm(v) - 0.5) > 0.35  # white text on the deep ends of the colour map
                ax.text(j, i, f"{v:+.1f}{'*' if marked[i, j] else ''}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black", fontweight="bold" if marked[i, j] else "normal")
        ax.set_xticks(range(len(card["columns"])), card["columns"], fontsize=7)
        ax.set_yticks(range(len(card["rows"])), [m if card["seeds"][m] else f"{m} (reference)"
                                                 for m in card["rows"]], fontsize=7)
        ax.set_title(card["metric"], fontsize=8, loc="left")
        ax.tick_params(length=0)
        fig.colorbar(image, ax=ax, extend="both", fraction=0.04, pad=0.01).ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel(f"lead time ({cards[0].get('lead_unit', 'steps')})", fontsize=8)
    short = short_digest(cards[0]["data_digest"])
    digest = f" (data {short})" if short else ""
    fig.suptitle(f"{cards[0]['dataset']}{digest}: improvement over `none` in % (positive = better), test split, "
                 f"mean over seeds\nbold * = paired 95% interval over seeds excludes 0", fontsize=9)
    return _save(fig, path)


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    return write_frame(path, table, float_format="%.6g")


def _colors(n: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(max(n, 1))]


def comparison_figures(board: pd.DataFrame, out_dir: Path, *, data_dir: Path | None = None) -> list[Path]:
    """The figures `svqbench compare --plots DIR` writes, per (dataset, scale, backbone) group:
    learning curves and error vs lead time (every seed), noise curves and their table (CSV, Table 5
    layout) when eta varies, and one forecast sample per method (its lowest seed; weather data also
    as anomalies). Runs whose folder is missing are left out of the run-based figures."""
    import re

    from svqbench.results import GROUP, split_methods
    out_dir = Path(out_dir)
    written: list[Path] = []
    for keys, group in board.groupby(GROUP, sort=True):
        stem = "-".join(str(k) for k in keys)
        runs: Runs = {}
        for method, g in split_methods(group).items():
            if "run_dir" not in g.columns:
                continue
            dirs = [Path(d) for d in g.sort_values("seed")["run_dir"].dropna()]
            dirs = [d for d in dirs if (d / "metrics.json").is_file() and (d / "log.csv").is_file()]
            if dirs:
                runs[method] = dirs
        if runs:
            written.append(learning_curves(runs, out_dir / f"{stem}-learning-curves.png"))
            written.append(lead_time_errors(runs, out_dir / f"{stem}-lead-time.png"))
        if "noise" in group.columns and group["noise"].nunique() > 1:
            written.append(noise_curves(group, out_dir / f"{stem}-noise.png", title=f"noise injection: {stem}"))
            written.append(_write_csv(noise_table(group), out_dir / f"{stem}-noise.csv"))
        for method, dirs in runs.items():
            run_dir = dirs[0]  # the lowest seed
            if (run_dir / "best.pt").is_file():
                slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", method)
                written.append(forecast_sample(run_dir, out_dir / f"{stem}-sample-{slug}.png", data_dir=data_dir))
                if (read_json(run_dir / "config.json").get("dataset_meta") or {}).get("kind") == "weather":
                    written.append(forecast_sample(run_dir, out_dir / f"{stem}-sample-{slug}-anomalies.png",
                                                   data_dir=data_dir, anomalies=True))
    from svqbench.results import method_scorecards
    by_data: dict[tuple, list] = {}
    for card in method_scorecards(board, warn=lambda _: None):  # compare warns about unreadable files once
        by_data.setdefault((card["dataset"], short_digest(card["data_digest"])), []).append(card)
    for (dataset, digest), cards in sorted(by_data.items()):
        written.append(scorecard_figure(cards, out_dir / f"{'-'.join(filter(None, (dataset, digest)))}-scorecard.png"))
    return written
