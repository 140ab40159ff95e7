"""Scoring forecasts against a prepared dataset's truth: a run rolled out past its horizon
(`svqbench evaluate RUN --lead N`) and a forecast file written by any tool (`svqbench score`).

Lead evaluation: every window of the split is rolled out autoregressively (predict.rollout) to N
steps; lead k is scored on the windows whose truth frame (last input frame + k) still lies in the
split, so later leads have fewer windows (each lead says how many). Per lead: the model's RMSE
(latitude-weighted where the grid has latitudes) and ACC, the same for persistence (the last input
frame) and the climatology forecast (the run's climatology at the target frame), and the RMSE skill
score 1 - RMSE_model / RMSE_reference against both. Written to RUN/metrics_leads_<split>.json and
RUN/skill_by_lead_<split>.png.

Forecast files (`score`): the WeatherBench 2 layout `predict` writes (dims `time` = initialisation
= the last input frame, `prediction_timedelta`, optional `member`, optional `level`, `latitude`,
`longitude`; variables named and in the units `predict` writes them), with a forecast for every
window of the test split and at least the leads 1..out_len of the dataset. It is scored with the
same accumulators as a run (evaluate.make_scorer: the same metrics, climatology and regions), its
references are the dataset's, and it becomes a run folder (metrics.json, window_errors_test.npz,
config.json) with a leaderboard row (model `external`), so `compare` and the scorecard show it.
An ensemble (`member`) is scored deterministically by its ensemble mean (as WeatherBench 2 does)
and probabilistically by CRPS and the spread/skill ratio (svqbench.ensemble).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import torch

from svqbench.errors import UserError

from svqbench.results import EXTERNAL_MODEL  # the leaderboard's `model` of a scored forecast file


# ---- a run rolled out past its training horizon --------------------------------------------------

def lead_windows(ds, split: str, lead_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(window starts of the split, (N, lead_steps) bool: whether lead k's truth lies in the split).
    The split's last frame is the last target frame of its last window."""
    starts = np.asarray(ds.splits[split], dtype=np.int64)
    end = int(starts.max()) + ds.in_len + ds.out_len - 1
    target = starts[:, None] + ds.in_len - 1 + np.arange(1, lead_steps + 1)
    return starts, target <= end


def physical_frames(ds, index: np.ndarray) -> np.ndarray:
    """The prepared dataset's (target) frames at `index`, physical units."""
    return ds._physical(np.take(ds._mapped, np.asarray(index, dtype=np.int64), axis=0))


def _lead_accumulator(ds):
    from svqbench.metrics import ErrorAccumulator
    return ErrorAccumulator(1, ds.lat, lat2d=ds.lat2d, mask=ds.mask, climatology=ds.climatology)


def evaluate_leads(run: str | Path, lead_steps: int, *, split: str = "test", device: str = "cpu",
                   results_dir: str | Path | None = "results", data_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Skill per lead of a run rolled out to `lead_steps` (see the module doc); returns (json path, record)."""
    from svqbench.atomic import write_json
    from svqbench.evaluate import EVAL_SPLITS, climatology_for, dataset_kind
    from svqbench.predict import rollout
    from svqbench.results import unit_label
    from svqbench.runs import load_run

    if lead_steps < 1:
        raise UserError(f"--lead must be >= 1, got {lead_steps}")
    if split not in EVAL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(EVAL_SPLITS)}")
    loaded = load_run(run, results_dir=results_dir, data_dir=data_dir, device=device)
    if loaded.saved is None:
        raise UserError(f"{run} is an export; evaluate --lead needs the run folder (its dataset holds the truth)")
    ds, cfg = loaded.dataset, loaded.config
    if dataset_kind(ds) != "weather":
        raise UserError(f"evaluate --lead scores weather runs against persistence and climatology; run "
                        f"{loaded.run_id} is a {dataset_kind(ds)} run")
    clim = climatology_for(ds, cfg.climatology)
    starts, valid = lead_windows(ds, split, lead_steps)
    accs = {name: [_lead_accumulator(ds) for _ in range(lead_steps)]
            for name in ("model", "persistence", "climatology")}
    static = torch.from_numpy(ds.climatology)[None, None]
    for a in range(0, len(starts), cfg.batch_size):
        positions = np.arange(a, min(a + cfg.batch_size, len(starts)))
        batch = ds.gather(split, positions)
        x = np.asarray(batch.x)
        keep = valid[positions].any(axis=0)  # leads some window of this batch has a truth for
        pred = rollout(lambda v: loaded.forecast(v, batch_size=len(v)), x, int(np.flatnonzero(keep).max()) + 1,
                       mask=ds.mask)
        for k in np.flatnonzero(keep):
            rows = valid[positions, k]
            frames = (starts[positions][rows] + ds.in_len + k)[:, None]  # (B, 1): the frame lead k+1 is valid at
            truth = torch.from_numpy(physical_frames(ds, frames))
            seasonal = None if clim.kind == "static" else torch.from_numpy(clim.at_frames(frames))
            accs["model"][k].update(torch.from_numpy(np.ascontiguousarray(pred[rows, k: k + 1])), truth, seasonal)
            accs["persistence"][k].update(torch.from_numpy(x[rows, -1:]), truth, seasonal)
            climate = static.expand_as(truth) if seasonal is None else seasonal
            accs["climatology"][k].update(climate, truth, seasonal)
    has_lat = ds.lat is not None or ds.lat2d is not None
    rmse_key = "rmse_latweighted" if has_lat else "rmse_per_pixel"
    acc_key = "acc_latweighted" if has_lat else "acc_unweighted"
    leads = []
    for k in range(lead_steps):
        row = {"lead": k + 1, "windows": int(valid[:, k].sum())}
        if row["windows"]:
            for name, per_lead in accs.items():
                scores = per_lead[k].result()
                row[f"{name}_rmse"] = scores[rmse_key]
                row[f"{name}_acc"] = scores.get(acc_key)
            for ref in ("persistence", "climatology"):
                row[f"skill_vs_{ref}"] = 1.0 - row["model_rmse"] / row[f"{ref}_rmse"] if row[f"{ref}_rmse"] else None
        leads.append(row)
    record = {"run_id": loaded.run_id, "split": split, "lead_steps": lead_steps, "out_len": ds.out_len,
              "step": ds.meta.get("step"), "units": unit_label(ds.meta.get("units") or []), "rmse": rmse_key,
              "acc": acc_key, "climatology": clim.describe(),
              "method": (f"leads past {ds.out_len} are autoregressive (the model's forecasts fed back as input); "
                         f"lead k is scored on the windows whose truth lies in the {split} split; skill = 1 - RMSE / "
                         f"RMSE of the reference"),
              "evaluated": dt.datetime.now().isoformat(timespec="seconds"), "leads": leads}
    path = write_json(loaded.saved.dir / f"metrics_leads_{split}.json", record)
    record["figure"] = str(plot_skill_by_lead(record, loaded.saved.dir / f"skill_by_lead_{split}.png"))
    return path, record


def plot_skill_by_lead(record: dict, path: Path) -> Path:
    """Two panels: RMSE of model and references per lead; skill against persistence and climatology."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from svqbench.atomic import save_figure
    rows = [r for r in record["leads"] if r["windows"]]
    lead = [r["lead"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("model", "o-"), ("persistence", "s--"), ("climatology", "^:")):
        left.plot(lead, [r[f"{name}_rmse"] for r in rows], style, label=name, markersize=3)
    for ref, style in (("persistence", "s-"), ("climatology", "^-")):
        right.plot(lead, [np.nan if r[f"skill_vs_{ref}"] is None else r[f"skill_vs_{ref}"] for r in rows], style,
                   label=f"vs {ref}", markersize=3)
    right.axhline(0.0, color="grey", linewidth=0.8)
    for ax in (left, right):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.axvline(record["out_len"] + 0.5, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel(f"lead (steps of {record.get('step') or '1 step'})")
        ax.legend(fontsize=8)
    left.set_ylabel(f"{record['rmse']}" + (f" ({record['units']})" if record.get("units") else ""))
    right.set_ylabel("RMSE skill score (1 - model / reference)")
    left.set_title("RMSE by lead (dotted: training horizon)", fontsize=9)
    right.set_title("skill by lead (> 0: better than the reference)", fontsize=9)
    fig.suptitle(f"{record['run_id']}: {record['split']} split, {rows[0]['windows']} windows at lead 1, "
                 f"{rows[-1]['windows']} at lead {rows[-1]['lead']}", fontsize=9)
    fig.tight_layout()
    return save_figure(path, fig, dpi=100)


# ---- a forecast file written by any tool ---------------------------------------------------------

_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {"month": 1, "year": 12}
_GREGORIAN = {"standard", "gregorian", "proleptic_gregorian"}


def _lead_steps(f, step, path: Path) -> np.ndarray:
    """The file's leads in steps of the dataset (floats; whole numbers where they fit the step)."""
    if "prediction_timedelta" not in f.coords:
        raise UserError(f"{path}: no prediction_timedelta coordinate (the lead); write the WeatherBench 2 layout")
    lead = f["prediction_timedelta"]
    values = lead.values
    if np.issubdtype(values.dtype, np.timedelta64):
        seconds, months = values / np.timedelta64(1, "s"), None
    else:
        unit = str(lead.attrs.get("units", "1")).strip().lower().rstrip("s")
        if unit in _SECONDS:
            seconds, months = values.astype(np.float64) * _SECONDS[unit], None
        elif unit in _MONTHS:
            seconds, months = None, values.astype(np.float64) * _MONTHS[unit]
        elif unit == "1" and step is None:
            return values.astype(np.float64)
        else:
            raise UserError(f"{path}: prediction_timedelta has units {lead.attrs.get('units')!r}; give leads as "
                            f"timedeltas or in seconds/hours/days (months/years for monthly or yearly data)")
    if step is None:
        raise UserError(f"{path}: its leads are times, but the dataset has no time step (its leads are steps, "
                        f"units '1')")
    if (seconds is None) != (step.seconds is None):
        raise UserError(f"{path}: its leads are in {'months' if seconds is None else 'seconds'} but the dataset's "
                        f"step is {step}")
    return seconds / step.seconds if seconds is not None else months / step.months


def _init_frames(f, ds, path: Path) -> np.ndarray:
    """The dataset frame index of every initialisation time of the file (-1 where it is not a frame)."""
    from svqbench.data import cf
    from svqbench.predict import frame_times
    times = frame_times(ds)
    values = f["time"].values
    if times is None:  # data without calendar times: `time` holds frame indices, as predict writes
        if np.issubdtype(values.dtype, np.number) and np.all(values == np.round(values)):
            index = values.astype(np.int64)
            return np.where((index >= 0) & (index < len(ds.frames)), index, -1)
        raise UserError(f"{path}: the dataset has no calendar times, so `time` must hold frame indices (as predict "
                        f"writes them)")
    calendar = str(f["time"].encoding.get("calendar", "standard")).lower()
    if calendar != times.calendar and not {calendar, times.calendar} <= _GREGORIAN:
        raise UserError(f"{path}: its times are in the {calendar} calendar, the dataset's in the {times.calendar} "
                        f"calendar")
    if values.dtype.kind == "M":  # datetime64: Python datetimes have the fields cf.keys reads
        values = values.astype("datetime64[s]").astype(object)
    if values.dtype != object:
        raise UserError(f"{path}: `time` is not a CF time coordinate (units 'hours since ...' and a calendar)")
    lookup = {int(k): i for i, k in enumerate(cf.keys(times.dates()))}
    return np.asarray([lookup.get(int(k), -1) for k in cf.keys(values)], dtype=np.int64)


def _grid_selection(f, ds, path: Path) -> tuple[tuple[str, str], bool]:
    """((y dim, x dim), whether latitude runs the other way than the dataset's); another grid is refused."""
    from svqbench.predict import _grid_coords
    (ydim, xdim), coords = _grid_coords(ds)
    for dim, n in zip((ydim, xdim), ds.grid):
        if dim not in f.dims:
            raise UserError(f"{path}: no {dim} dimension; the dataset's grid is {ds.grid[0]} x {ds.grid[1]} "
                            f"({ydim}, {xdim})")
        if f.sizes[dim] != n:
            raise UserError(f"{path}: {dim} has {f.sizes[dim]} points, the dataset's grid {n}: another grid; "
                            f"regrid the forecast to the dataset's grid first")
    flipped = False
    for dim in (ydim, xdim):
        if dim not in coords or coords[dim][0] != dim or dim not in f.coords:
            continue
        want, have = np.asarray(coords[dim][1], np.float64), np.asarray(f[dim].values, np.float64)
        if dim == "latitude" and np.allclose(have[::-1], want, atol=1e-6, rtol=0) and \
                not np.allclose(have, want, atol=1e-6, rtol=0):
            flipped = True
        elif not np.allclose(have, want, atol=1e-6, rtol=0):
            raise UserError(f"{path}: its {dim} ({have.min():g}..{have.max():g}) differs from the dataset's "
                            f"({want.min():g}..{want.max():g}) by up to {np.abs(have - want).max():.3g} degrees: "
                            f"another grid; regrid the forecast to the dataset's grid first")
    return (ydim, xdim), flipped


@dataclasses.dataclass
class ForecastFile:
    """An opened forecast file, checked against a dataset: read(rows) gives (B, [M,] T, C, H, W)."""
    path: Path
    handle: object
    arrays: list            # one DataArray per channel: (time, [member,] prediction_timedelta, y, x)
    rows: np.ndarray        # the file's time index of every window of the split, in split order
    leads: np.ndarray       # the file's lead index of leads 1..out_len
    members: int | None
    flipped: bool
    unscored_leads: int     # leads of the file past out_len (or between steps): not scored

    def read(self, windows: np.ndarray) -> np.ndarray:
        rows = self.rows[windows]
        parts = [np.asarray(da.isel(time=rows, prediction_timedelta=self.leads).values, dtype=np.float32)
                 for da in self.arrays]
        out = np.stack(parts, axis=-3)  # (B, [M,] T, C, H, W)
        return np.ascontiguousarray(out[..., ::-1, :]) if self.flipped else out

    def close(self) -> None:
        self.handle.close()


def open_forecast(path: str | Path, ds, dataset: str, split: str = "test") -> ForecastFile:
    """Open a WeatherBench 2 layout file and check it against the dataset (one-line errors)."""
    import xarray as xr

    from svqbench.predict import parse_step, variables
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    try:
        f = (xr.open_zarr(path, decode_times=coder, decode_timedelta=False) if path.is_dir()
             else xr.open_dataset(path, decode_times=coder, decode_timedelta=False))
    except Exception as e:  # backends raise many types for foreign files
        raise UserError(f"{path} cannot be read as a forecast ({type(e).__name__}: {e})") from None
    try:
        if "time" not in f.dims:
            raise UserError(f"{path}: no `time` dimension (the initialisation time); write the WeatherBench 2 layout")
        (ydim, xdim), flipped = _grid_selection(f, ds, path)
        steps = _lead_steps(f, parse_step(ds.meta.get("step")), path)
        wanted = np.arange(1, ds.out_len + 1)
        missing = [int(k) for k in wanted if not np.any(np.isclose(steps, k, rtol=0, atol=1e-9))]
        if missing:
            raise UserError(f"{path}: missing lead(s) {', '.join(map(str, missing))} (in steps of "
                            f"{ds.meta.get('step') or '1 step'}); the dataset is scored on leads 1..{ds.out_len}")
        leads = np.asarray([int(np.flatnonzero(np.isclose(steps, k, rtol=0, atol=1e-9))[0]) for k in wanted])
        frames = _init_frames(f, ds, path)
        starts = np.asarray(ds.splits[split], dtype=np.int64)
        start_of = {int(s): i for i, s in enumerate(starts)}
        outside = [i for i, fr in enumerate(frames) if fr < 0 or int(fr) - ds.in_len + 1 not in start_of]
        if outside:
            shown = ", ".join(str(f["time"].values[i]) for i in outside[:3]) + (" ..." if len(outside) > 3 else "")
            raise UserError(f"{path}: {len(outside)} initialisation time(s) are not the last input frame of a "
                            f"{split} window of dataset {ds.path.name} ({shown}); cut them out")
        rows = np.full(len(starts), -1, dtype=np.int64)
        rows[[start_of[int(fr) - ds.in_len + 1] for fr in frames]] = np.arange(len(frames))
        if (rows < 0).any():
            raise UserError(f"{path}: forecasts {int((rows >= 0).sum())} of the {len(starts)} {split} windows; score "
                            f"needs every one (first missing initialisation: window starting at frame "
                            f"{int(starts[np.argmax(rows < 0)])})")
        arrays, members = [], None
        for v in variables(ds, dataset):
            if v.name not in f.data_vars:
                raise UserError(f"{path}: no variable {v.name!r}; the dataset's variables are "
                                f"{', '.join(x.name for x in variables(ds, dataset))}")
            da = f[v.name]
            units = da.attrs.get("units")
            if units is None or str(units).strip() != str(v.units).strip():
                raise UserError(f"{path}: {v.name} has units {units!r}; the dataset's are {v.units!r} (convert it)")
            dims = {"time", "prediction_timedelta", ydim, xdim} | ({"level"} if v.levels else set())
            extra = set(da.dims) - dims - {"member"}
            if extra or not dims <= set(da.dims):
                raise UserError(f"{path}: {v.name} has dims {da.dims}; expected time, [member,] prediction_timedelta, "
                                f"{'level, ' if v.levels else ''}{ydim}, {xdim}")
            if "member" in da.dims:
                if members is not None and members != da.sizes["member"]:
                    raise UserError(f"{path}: variables hold different numbers of members")
                members = da.sizes["member"]
            order = ("time", *(("member",) if "member" in da.dims else ()), "prediction_timedelta", ydim, xdim)
            for level in (v.levels or [None]):
                part = da
                if level is not None:
                    if "level" not in f.coords or level not in set(f["level"].values.tolist()):
                        raise UserError(f"{path}: {v.name} lacks level {level}")
                    part = da.sel(level=level)
                arrays.append(part.transpose(*order))
        if members is not None and any("member" not in a.dims for a in arrays):
            raise UserError(f"{path}: some variables have a member dimension and some do not")
    except BaseException:
        f.close()
        raise
    return ForecastFile(path, f, arrays, rows, leads, members, flipped, len(steps) - len(leads))


def score_file(path: str | Path, *, dataset: str, name: str, run_id: str | None = None, seed: int | None = None,
               beside: str | None = None, climatology: str | None = None, regions: str | None = None,
               results_dir: str | Path = "results", data_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Score a forecast file of the test split (see the module doc) and record it as an external run;
    returns (run folder, metrics). `beside`: a run whose leaderboard cell (scale, backbone, seed) and
    climatology/regions the row takes, so `compare` pairs it with that cell's baseline."""
    from svqbench.atomic import write_json
    from svqbench.config import RunConfig
    from svqbench.data.prepared import open_prepared
    from svqbench.ensemble import EnsembleAccumulator
    from svqbench.evaluate import (climatology_for, dataset_kind, evaluate_references, make_scorer, metric_set,
                                   regions_for, target_climatology)
    from svqbench.experiment import check_run_id, write_window_errors
    from svqbench.metrics import cell_weights
    from svqbench.results import append_row, create_run_dir

    results_dir = Path(results_dir)
    run_id = run_id or f"{EXTERNAL_MODEL}-{name}"
    check_run_id(run_id)
    if not name.strip() or name == "none":
        raise UserError(f"bad --name {name!r}: name the forecast's method (e.g. the model that made it)")
    cell = {"scale": EXTERNAL_MODEL, "backbone": EXTERNAL_MODEL, "seed": 0}
    cfg = RunConfig()
    if beside is not None:
        from svqbench.runs import open_run
        other = open_run(beside, results_dir=results_dir, data_dir=data_dir)
        if other.config.dataset != dataset:
            raise UserError(f"--beside {beside} is a run on {other.config.dataset}, not {dataset}")
        cfg = other.config
        cell = {"scale": cfg.scale, "backbone": cfg.backbone, "seed": cfg.seed}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("climatology", climatology), ("regions", regions)) if v})
    if seed is not None:
        cell["seed"] = seed
    if (results_dir / run_id).exists():
        raise UserError(f"run directory {results_dir / run_id} already exists; pick another --run-id or remove it")
    ds = open_prepared(dataset, data_dir)
    if dataset_kind(ds) != "weather":
        raise UserError(f"score reads WeatherBench 2 layout files of weather datasets; {dataset} is "
                        f"{dataset_kind(ds)}")
    clim = climatology_for(ds, cfg.climatology)
    region_w, regions_described = regions_for(ds, cfg.regions)
    forecast = open_forecast(path, ds, dataset)
    try:
        scorer = make_scorer(ds, keep_windows=True, regions=region_w)
        weights = cell_weights(ds.grid, lat=ds.lat, lat2d=ds.lat2d, mask=ds.mask)
        ensemble = EnsembleAccumulator(weights, ds.mask) if forecast.members else None
        n = len(ds.splits["test"])
        for a in range(0, n, 64):
            positions = np.arange(a, min(a + 64, n))
            batch = ds.gather("test", positions)
            truth = np.asarray(batch.y)
            values = forecast.read(positions)
            bad = ~np.isfinite(values)
            if ds.mask is not None:
                bad &= ds.mask
            if bad.any():
                i = int(np.argmax(bad.reshape(len(values), -1).any(axis=1)))
                where = " in cells the dataset has values for" if ds.mask is not None else ""
                raise UserError(f"{forecast.path}: NaN or infinite values in the forecast initialised at "
                                f"{forecast.handle['time'].values[forecast.rows[a + i]]} "
                                f"({int(bad[i].sum())} value(s){where})")
            if ds.mask is not None:  # masked cells count for nothing; NaN there is expected
                target = truth[:, None] if forecast.members else truth
                values = np.where(ds.mask, values, np.broadcast_to(target, values.shape)).astype(np.float32)
            if forecast.members:
                ensemble.update(values, truth)
                values = values.mean(axis=1, dtype=np.float64).astype(np.float32)  # the ensemble mean
            seasonal = None if clim.kind == "static" else target_climatology(clim, ds, batch.index)
            scorer.update(torch.from_numpy(values), torch.from_numpy(truth), seasonal)
        test = scorer.result()
        mse, mae = scorer.errors.window_errors()
        described = metric_set(ds, climatology=clim, regions=regions_described)
        if ensemble is not None:
            test.update(ensemble.result())
            described["ensemble"] = ("deterministic scores of the ensemble mean; crps_ecdf and crps_fair as "
                                     "scores.probability.crps_for_ensemble (method ecdf / fair) names them, "
                                     "latitude-weighted like rmse; spread_skill_ratio = sqrt(weighted mean member "
                                     "variance, ddof 1) / weighted RMSE of the ensemble mean")
        test["metric_set"] = described
    finally:
        forecast.close()
    refs = evaluate_references(ds, split="test", cfg=cfg)
    external = {"file": str(Path(path).resolve()), "name": name, "members": forecast.members,
                "leads_scored": ds.out_len, "leads_not_scored": forecast.unscored_leads,
                "scored": dt.datetime.now().isoformat(timespec="seconds")}
    run_dir = create_run_dir(results_dir, run_id)
    write_json(run_dir / "config.json", {"run_id": run_id, "external": external,
                                         "dataset_meta": {**{k: ds.meta.get(k) for k in (
                                             "name", "digest", "units", "step", "in_len", "out_len")},
                                             "kind": ds.kind}})
    metrics = {"run_id": run_id, "status": "finished", "split": "test", "external": external,
               "climatology": cfg.climatology, "regions": cfg.regions, "test": test, **refs}
    write_json(run_dir / "metrics.json", metrics)
    write_window_errors(run_dir / "window_errors_test.npz", {"window_start": np.asarray(ds.splits["test"]),
                                                             "mse_per_pixel": mse, "mae_per_pixel": mae})
    units = ",".join(dict.fromkeys(ds.meta.get("units") or [])) or None
    append_row(results_dir, {
        "run_id": run_id, "dataset": dataset, "data_digest": ds.meta.get("digest"), "units": units,
        "scale": cell["scale"], "model": EXTERNAL_MODEL, "backbone": cell["backbone"], "quantizer": name,
        "seed": cell["seed"], "test_mse": test["mse_per_pixel"], "test_mae": test["mae_per_pixel"],
        "test_rmse": test["rmse_per_pixel"], "test_rmse_latweighted": test.get("rmse_latweighted"),
        **{f"{r}_{m}": refs[r][f"{m}_per_pixel"] for r in refs for m in ("mse", "mae")},
        "finished": dt.datetime.now().isoformat(timespec="seconds")})
    return run_dir, metrics

