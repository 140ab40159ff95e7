"""Score a model, and the reference forecasts, on one split in physical units (streaming).

The metric set follows the dataset's kind (meta.json "kind", default "weather"), as in OpenSTL:
- weather: per-pixel MSE/MAE/RMSE/bias, the mean over channels of per-channel RMSEs (several
  channels), latitude-weighted RMSE/MAE/bias (only when the grid has latitudes, 1-D or 2-D) and the
  anomaly correlation against the train climatology (seasonal or static: `climatology_for`), per
  lead time and per channel, and RMSE and ACC per region (`regions_for`); with a mask, over the
  valid cells only;
- video / traffic: per-frame and per-pixel MSE/MAE/RMSE, SSIM and PSNR on frames mapped from
  meta "value_range" (default [0, 1]) to [0, 1] and clipped, and LPIPS (AlexNet) when its weights
  resolve offline or the user asks for it.
Every result carries `metric_set`, which says what was computed and why LPIPS was or was not.
The reference forecasts (persistence, climatology, input mean) go through the same accumulators.
`evaluate_run` re-scores a finished run (`svqbench evaluate`).
"""
from __future__ import annotations

import datetime as dt
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from svqbench.config import RunConfig
from svqbench.data.prepared import PreparedDataset
from svqbench.distributed import SINGLE, DistContext, reduce_accumulator
from svqbench.errors import UserError
from svqbench.climatology import CLIMATOLOGIES, Climatology, seasonal_climatology, static_climatology
from svqbench.metrics import ErrorAccumulator, ImageQualityAccumulator, LPIPSAccumulator
from svqbench.regions import DEFAULT_REGIONS, parse_regions, region_mask, region_weights
from svqbench.data.batches import split_batches, split_positions, to_tensors

KINDS = ("weather", "video", "traffic")
EVAL_SPLITS = ("test", "val")


def dataset_kind(ds: PreparedDataset) -> str:
    kind = ds.meta.get("kind", "weather")
    if kind not in KINDS:
        raise UserError(f"prepared dataset {ds.path} has unknown kind {kind!r} in meta.json; "
                        f"expected one of: {', '.join(KINDS)}")
    return kind


def value_range(ds: PreparedDataset) -> tuple[float, float]:
    lo, hi = ds.meta.get("value_range", (0.0, 1.0))
    return float(lo), float(hi)


@dataclass
class Scorer:
    """The accumulators of one forecast (model or reference) on one split."""
    errors: ErrorAccumulator
    image: ImageQualityAccumulator | None = None
    lpips: LPIPSAccumulator | None = None

    def update(self, pred: torch.Tensor, true: torch.Tensor, climatology: torch.Tensor | None = None) -> None:
        """`climatology`: the (seasonal) climatology at every target frame, for the weather scores."""
        self.errors.update(pred, true, climatology)
        for acc in (self.image, self.lpips):
            if acc is not None:
                acc.update(pred, true)

    def accumulators(self) -> list:
        return [a for a in (self.errors, self.image, self.lpips) if a is not None]

    def reduce(self, dist: DistContext) -> "Scorer":
        for acc in self.accumulators():
            reduce_accumulator(acc, dist)
        return self

    def result(self) -> dict:
        out = {}
        for acc in self.accumulators():
            out.update(acc.result())
        return out


def lpips_decision(ds: PreparedDataset, lpips: bool | None, lpips_weights=None):
    """(LPIPS module or None, note for metric_set). lpips: None = when available, True = required, False = off."""
    kind = dataset_kind(ds)
    if lpips is False:
        return None, {"computed": False, "reason": "turned off (--no-lpips)"}
    if kind == "weather":
        if lpips:
            raise UserError(f"LPIPS is for video/traffic frames; dataset {ds.path.name} is of kind weather; "
                            "drop --lpips")
        return None, {"computed": False, "reason": "not a video/traffic dataset"}
    c, (h, w) = len(ds.channels), ds.grid
    reason = LPIPSAccumulator.check_applicable(c, h, w)
    if reason:
        if lpips:
            raise UserError(f"{reason} (dataset {ds.path.name}); drop --lpips")
        return None, {"computed": False, "reason": reason}
    from svqbench.lpips_weights import ENV_VAR, build_lpips_alex, resolve_alexnet_weights
    try:
        weights = resolve_alexnet_weights(lpips_weights)
    except UserError as e:
        if lpips or lpips_weights or os.environ.get(ENV_VAR):  # asked for, or a named file is wrong
            raise
        return None, {"computed": False, "reason": str(e)}
    return build_lpips_alex(weights), {"computed": True, "net": "alex", "version": "0.1",
                                       "backbone_weights": weights.describe()}


# ---- climatology and regions of the weather scores ------------------------------------------------

_CLIMATOLOGIES: "weakref.WeakKeyDictionary[PreparedDataset, dict]" = weakref.WeakKeyDictionary()


def climatology_for(ds: PreparedDataset, mode: str = "seasonal") -> Climatology:
    """The climatology ACC and the climatology forecast use (svqbench.climatology), computed once per
    opened dataset: `seasonal` where the data's times allow one, else static with the reason."""
    if mode not in CLIMATOLOGIES:
        raise UserError(f"unknown climatology {mode!r}; choose one of: {', '.join(CLIMATOLOGIES)}")
    cache = _CLIMATOLOGIES.setdefault(ds, {})
    if mode not in cache:
        cache[mode] = _climatology(ds, mode)
    return cache[mode]


def _climatology(ds: PreparedDataset, mode: str) -> Climatology:
    n = len(ds.frames)
    if mode == "static":
        return static_climatology(ds.climatology, n)
    times = ds.times
    if times is None:
        reason = ("the prepared dataset stores no frame times (a source without calendar times, or prepared before "
                  "svqbench stored them: prepare it again for a seasonal climatology)")
    else:
        from svqbench.data import cf
        dates = times.dates()
        try:
            step = cf.infer_step(dates, lambda i: cf.iso(dates[i]), str(ds.path))
        except UserError as e:
            step, reason = None, f"its times are not regular ({e})"
        if step is not None:
            length = ds.in_len + ds.out_len
            touched = np.zeros(n + 1, dtype=np.int64)  # frames of the train windows, as prepare's statistics
            np.add.at(touched, ds.splits["train"], 1)
            np.add.at(touched, ds.splits["train"] + length, -1)
            train = np.flatnonzero(np.cumsum(touched[:n]) > 0)
            made = seasonal_climatology(lambda idx: ds.frames[idx], train, dates, step,  # weather: float32 frames
                                        calendar=times.calendar)
            if isinstance(made, Climatology):
                return made
            reason = made
    return static_climatology(ds.climatology, n, requested="seasonal", reason=reason)


def regions_for(ds: PreparedDataset, spec: str = DEFAULT_REGIONS) -> tuple[dict[str, np.ndarray], dict]:
    """(name -> (H, W) region weights, metric_set["regions"]) of a `--regions` value on this grid.
    A region the user named that holds no valid cell is refused (UserError, one line); WeatherBench
    2's bands implied by `wb2` that hold none are left out and recorded as such."""
    if dataset_kind(ds) != "weather":
        return {}, {}
    grid_meta = ds.meta.get("grid") or {}
    lon, lon2d = grid_meta.get("lon"), grid_meta.get("lon2d")
    has_lat = ds.lat is not None or ds.lat2d is not None
    weights, described = {}, {}
    where = f"dataset {ds.path.name}"
    for region in parse_regions(spec):
        if not has_lat and not region.asked:
            described[region.name] = {"definition": region.definition(), "scored": False,
                                      "reason": "the grid has no latitudes"}
            continue
        inside = region_mask(region, ds.grid, lat=ds.lat, lon=None if lon is None else np.asarray(lon, float),
                             lat2d=ds.lat2d, lon2d=None if lon2d is None else np.asarray(lon2d, float), where=where)
        cells = inside if ds.mask is None else inside & ds.mask
        if not cells.any():
            if region.asked:
                valid = "valid " if ds.mask is not None else ""
                raise UserError(f"region {region.name} ({region.definition()}) holds no {valid}"
                                f"cell of the grid of {where} ({_grid_extent(ds, lon, lon2d)}); widen it or drop it "
                                f"from --regions")
            described[region.name] = {"definition": region.definition(), "scored": False,
                                      "reason": "no cell of the grid lies in it"}
            continue
        weights[region.name] = region_weights(inside, lat=ds.lat, lat2d=ds.lat2d, valid=ds.mask)
        described[region.name] = {"definition": region.definition(), "scored": True, "cells": int(cells.sum())}
    return weights, described


def _grid_extent(ds: PreparedDataset, lon, lon2d) -> str:
    lat = ds.lat2d if ds.lat2d is not None else ds.lat
    lon = lon2d if lon2d is not None else lon
    parts = [] if lat is None else [f"lat {np.min(lat):g}..{np.max(lat):g}"]
    parts += [] if lon is None else [f"lon {np.min(lon):g}..{np.max(lon):g}"]
    return ", ".join(parts) or f"{ds.grid[0]} x {ds.grid[1]} cells without coordinates"


def check_evaluation(cfg: RunConfig, ds: PreparedDataset) -> None:
    """What the test scores need, checked before training: every region the user named holds cells."""
    if dataset_kind(ds) != "weather" and parse_regions(cfg.regions) and cfg.regions != DEFAULT_REGIONS:
        raise UserError(f"--regions is for weather datasets; dataset {ds.path.name} is of kind {dataset_kind(ds)}: "
                        f"drop --regions")
    regions_for(ds, cfg.regions)


def target_climatology(clim: Climatology, ds: PreparedDataset, window_starts: np.ndarray) -> torch.Tensor:
    """The climatology at every target frame of the windows starting at `window_starts`: (B, T, C, H, W)."""
    frames = np.asarray(window_starts, dtype=np.int64)[:, None] + ds.in_len + np.arange(ds.out_len)
    return torch.from_numpy(clim.at_frames(frames))


def make_scorer(ds: PreparedDataset, *, lpips_model=None, device: torch.device = torch.device("cpu"),
                keep_windows: bool = False, regions: dict[str, np.ndarray] | None = None) -> Scorer:
    """`regions`: name -> region weights (`regions_for`), weather only. The weather scorer's static
    climatology is the dataset's; a seasonal one goes to `Scorer.update`."""
    kind = dataset_kind(ds)
    if kind == "weather":
        return Scorer(ErrorAccumulator(ds.out_len, ds.lat, lat2d=ds.lat2d, mask=ds.mask, climatology=ds.climatology,
                                       keep_windows=keep_windows, regions=regions))
    image = None
    if min(ds.grid) >= 7:
        image = ImageQualityAccumulator(ds.out_len, value_range(ds))
    lp = None if lpips_model is None else LPIPSAccumulator(ds.out_len, lpips_model, value_range=value_range(ds),
                                                             device=device)
    return Scorer(ErrorAccumulator(ds.out_len, None, per_frame=True, mask=ds.mask, keep_windows=keep_windows), image, lp)


def metric_set(ds: PreparedDataset, lpips_note: dict | None = None, *, climatology: Climatology | None = None,
               regions: dict | None = None) -> dict:
    """What was computed and how; `climatology` and `regions` (regions_for's description) for weather."""
    kind = dataset_kind(ds)
    if kind == "weather":
        has_lat = ds.lat is not None or ds.lat2d is not None
        names = ["mse_per_pixel", "mae_per_pixel", "rmse_per_pixel", "bias_per_pixel"]
        names += ["rmse_mean_over_channels"] if len(ds.channels) > 1 else []
        names += ["rmse_latweighted", "mae_latweighted", "bias_latweighted", "acc_latweighted"] if has_lat \
            else ["acc_unweighted"]
        notes = []
        if ds.lat2d is not None:
            notes.append("2-D latitude (curvilinear grid): each cell weighted by cos(lat) / mean of cos(lat) over "
                         "the valid cells")
        elif ds.lat is not None:
            notes.append("latitude-weighted: each row weighted by cos(lat) / mean of cos(lat)")
        else:
            notes.append("no latitude coordinate: no latitude weighting")
        clim = climatology or static_climatology(ds.climatology, 0)
        notes.append(f"acc: anomalies against the {clim.describe()['used']} train climatology ({clim.kind}), "
                     f"uncentered, per forecast (window, lead, channel) over the grid, then the mean over forecasts "
                     f"(WeatherBench 2)")
        if clim.reason:
            notes.append(f"climatology: static, since a seasonal one cannot be computed: {clim.reason}")
        scored = [r for r, d in (regions or {}).items() if d.get("scored")]
        suffix = ("rmse_latweighted", "acc_latweighted") if has_lat else ("rmse_per_pixel", "acc_unweighted")
        names += [f"{m}_{r}" for r in scored for m in suffix]
        out = {"kind": kind, "metrics": names, "units": "physical (de-normalised with train statistics)",
               "channels": list(ds.channels), "climatology": clim.describe(), "regions": regions or {}}
        add_mask_note(ds, out, notes)
        out["notes"] = notes
        return out
    names = ["mse_per_frame", "mae_per_frame", "rmse_per_frame", "mse_per_pixel", "mae_per_pixel", "rmse_per_pixel"]
    if min(ds.grid) >= 7:
        names += ["ssim", "psnr"]
    out = {"kind": kind, "metrics": names, "units": "physical (de-normalised with train statistics)",
           "image_metrics_value_range": list(value_range(ds))}
    if ds.mask is not None:
        add_mask_note(ds, out, [])
    if lpips_note is not None:
        if lpips_note.get("computed"):
            names.append("lpips")
        out["lpips"] = lpips_note
    return out


def add_mask_note(ds: PreparedDataset, out: dict, notes: list) -> None:
    """metric_set entries of a masked dataset: how many cells count."""
    if ds.mask is None:
        return
    valid, cells = int(ds.mask.sum()), int(ds.mask.size)
    out["mask"] = {"valid_cells": valid, "cells": cells}
    notes.append(f"masked: {valid} of {cells} cells valid")
    out.setdefault("notes", notes)


PER_WINDOW = "per_window"  # evaluate_model(per_window=True): {"window_start", "mse_per_pixel", "mae_per_pixel"}


@torch.no_grad()
def evaluate_model(model, ds: PreparedDataset, cfg: RunConfig, *, split: str = "test",
                   device: torch.device = torch.device("cpu"), dist: DistContext = SINGLE,
                   lpips: bool | None = None, lpips_weights=None, per_window: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Metrics of `model` on `split` (see the module doc for which).

    With several ranks each scores its own contiguous share of the split (no padding) and the
    sums are reduced, so every rank returns the metrics of the whole split, each window once.
    `per_window`: also return, under PER_WINDOW, numpy arrays of every window's start frame and
    its MSE and MAE per pixel (physical units, over T x C x valid cells), in window order (a
    one-seed bootstrap's input; keep them out of metrics.json). `progress(done, total)` is told of
    each batch scored (this rank's batches).
    """
    model.eval().to(device)
    lpips_model, lpips_note = lpips_decision(ds, lpips, lpips_weights)
    weather = dataset_kind(ds) == "weather"
    clim = climatology_for(ds, cfg.climatology) if weather else None
    region_w, regions = regions_for(ds, cfg.regions)
    scorer = make_scorer(ds, lpips_model=lpips_model, device=torch.device(device), keep_windows=per_window,
                         regions=region_w)
    starts = []
    total_batches = -(-len(split_positions(ds, split, dist)) // cfg.batch_size)
    for batch in split_batches(ds, split, cfg.batch_size, dist):
        x, _, offset = to_tensors(ds, batch, cfg.norm, device)
        pred, _ = model(x)
        phys = ds.denormalise(pred.float().cpu().numpy(), offset.cpu().numpy())
        seasonal = None if clim is None or clim.kind == "static" else target_climatology(clim, ds, batch.index)
        scorer.update(torch.from_numpy(phys), torch.from_numpy(np.asarray(batch.y)), seasonal)
        starts.append(np.asarray(batch.index, dtype=np.int64))
        if progress is not None:
            progress(len(starts), total_batches)
    windows = None
    if per_window:  # this rank's share, then every rank's in rank order (= window order)
        mse, mae = scorer.errors.window_errors()
        mine = (np.concatenate(starts) if starts else np.zeros(0, np.int64), mse, mae)
        shares = dist.gather(mine)
        windows = {"window_start": np.concatenate([s[0] for s in shares]),
                   "mse_per_pixel": np.concatenate([s[1] for s in shares]),
                   "mae_per_pixel": np.concatenate([s[2] for s in shares])}
    out = {**scorer.reduce(dist).result(), "metric_set": metric_set(ds, lpips_note, climatology=clim, regions=regions)}
    if windows is not None:
        out[PER_WINDOW] = windows
    return out


REFERENCES = ("persistence", "climatology", "input_mean")


def evaluate_references(ds: PreparedDataset, *, split: str = "test", batch_size: int = 64,
                        cfg: RunConfig | None = None) -> dict[str, dict]:
    """persistence: repeat the last input frame; climatology: the train climatology at each target
    frame's time (seasonal or static, as `cfg.climatology` and the data allow: its `kind` says which);
    input_mean: the mean of the input window (per channel and cell) repeated over the lead times.
    Same metric set as the model (ACC against the same climatology, the same regions), without LPIPS."""
    cfg = cfg or RunConfig()
    weather = dataset_kind(ds) == "weather"
    clim = climatology_for(ds, cfg.climatology) if weather else static_climatology(ds.climatology, len(ds.frames))
    region_w, _ = regions_for(ds, cfg.regions)
    scorers = {name: make_scorer(ds, regions=region_w) for name in REFERENCES}
    static = torch.from_numpy(ds.climatology)
    for batch in ds.batches(split, batch_size):
        y = torch.from_numpy(np.asarray(batch.y))
        last = torch.from_numpy(np.asarray(batch.x[:, -1:]))
        mean = torch.from_numpy(np.asarray(batch.x).mean(axis=1, keepdims=True, dtype=np.float64))
        seasonal = None if clim.kind == "static" else target_climatology(clim, ds, batch.index)
        scorers["persistence"].update(last.expand_as(y), y, seasonal)
        scorers["climatology"].update(static.expand_as(y) if seasonal is None else seasonal, y, seasonal)
        scorers["input_mean"].update(mean.expand(*y.shape), y, seasonal)
    out = {name: scorer.result() for name, scorer in scorers.items()}
    if weather:
        out["climatology"]["kind"] = clim.kind  # which climatology this forecast is
    return out


# ---- re-scoring a saved run ---------------------------------------------------------------------

def evaluate_run(target: str | Path, *, split: str = "test", device: str = "cpu", data_dir=None,
                 results_dir=None, lpips: bool | None = None, lpips_weights=None) -> tuple[Path, dict]:
    """Re-score a run's checkpoint with its saved config; writes <run>/metrics_<split>.json atomically."""
    from svqbench.atomic import write_json
    from svqbench.checkpoint import read_weights
    from svqbench.quantizers.analysis import usage_on_split
    from svqbench.runs import RECORD, SavedRun, config_from_dict, load_model, locate_checkpoint, open_run

    from svqbench.device import check_device
    check_device(device)  # before a missing dataset is prepared
    if split not in EVAL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(EVAL_SPLITS)}")
    run_dir, checkpoint = locate_checkpoint(target, results_dir)
    state = read_weights(checkpoint)
    if (run_dir / RECORD).is_file():
        run = open_run(run_dir, data_dir=data_dir)
    elif state.get("config") is not None:  # a checkpoint file on its own carries its config
        run = SavedRun(run_dir, {}, config_from_dict(state["config"], str(checkpoint)), data_dir)
    else:
        raise UserError(f"neither {checkpoint} nor {run_dir / RECORD} holds the run's config")
    cfg = run.config
    ds = run.dataset(auto_prepare=True)
    model = load_model(cfg, ds, checkpoint, device=device)
    dev = torch.device(device)
    t0 = time.perf_counter()
    scores = evaluate_model(model, ds, cfg, split=split, device=dev, lpips=lpips, lpips_weights=lpips_weights)
    scores.pop(PER_WINDOW, None)  # per-window errors stay out of the JSON
    check_finite(scores, f"{run.run_id} on the {split} split", checkpoint)
    refs = evaluate_references(ds, split=split, cfg=cfg)
    usage = usage_on_split(model, ds, cfg, split=split, device=dev)  # {} without a codebook
    metrics = {"run_id": run.run_id, "split": split, "checkpoint": checkpoint.name,
               "checkpoint_epoch": state.get("epoch"), "dataset": cfg.dataset,
               "evaluated": dt.datetime.now().isoformat(timespec="seconds"),
               "eval_seconds": round(time.perf_counter() - t0, 2), split: scores, **refs,
               "codebook_usage": usage}
    path = run_dir / f"metrics_{split}.json"
    write_json(path, metrics)
    return path, metrics


def check_finite(scores: dict, what: str, checkpoint: Path) -> None:
    """Non-finite metrics mean broken weights: never recorded as a result."""
    import math

    from svqbench.errors import RunFailed
    bad = sorted(k for k, v in scores.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        raise RunFailed(f"non-finite test metrics ({', '.join(bad)}) for {what}: the weights in {checkpoint} "
                        f"are broken; nothing was recorded")
