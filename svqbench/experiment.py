"""One run end to end: prepared data -> model -> train (val split) -> test once -> results.

The same function runs in one process or in every process torchrun starts (rank 0 alone writes),
and continues a killed run (`resume_experiment`): the run folder's config.json says what to train,
its checkpoint where to continue; the leaderboard row is written once, at the very end.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import re
import time
from pathlib import Path

import torch

from svqbench import memory
from svqbench.atomic import write_json
from svqbench.checkpoint import BEST, check_checkpoint_files, read_weights
from svqbench.config import RunConfig
from svqbench.data.batches import frames_held_on
from svqbench.data.prepared import open_prepared
from svqbench.device import check_device
from svqbench.distributed import DistContext, from_environment, shutdown
from svqbench.errors import RunFailed, UserError
from svqbench.evaluate import PER_WINDOW, check_evaluation, check_finite, evaluate_model, evaluate_references
from svqbench.data import dataset_names, dataset_spec
from svqbench.models import build_model, check_model_size
from svqbench.quantizers.analysis import LEADERBOARD_KEYS, usage_kind, usage_on_split
from svqbench.results import append_row, create_run_dir, in_leaderboard
from svqbench.runs import environment_record, open_run
from svqbench.tracking import tracker_of
from svqbench.train import NonFiniteError, Reporter, TrainOptions, fast_paths, train
from svqbench.version import __version__


def default_run_id(cfg: RunConfig) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    model = cfg.backbone if cfg.model == "simvp" else cfg.model  # SimVP runs are named by their translator
    return f"{cfg.dataset}-{cfg.scale}-{model}-{cfg.quantizer}-s{cfg.seed}-{stamp}"


def run_experiment(cfg: RunConfig, *, results_dir: Path, data_dir: Path | None = None, run_id: str | None = None,
                   device: str = "cpu", reporter: Reporter | None = None,
                   options: TrainOptions | None = None, notes: list[str] | tuple[str, ...] = ()) -> dict:
    """Train, test once, record. Under torchrun (WORLD_SIZE > 1) every rank calls this; the
    process group is set up from the environment and torn down at the end. `notes` (from
    config.resolve) are reported once the run has passed its checks and its folder exists."""
    if run_id is not None:
        check_run_id(run_id)
    check_device(device)
    check_model_size(cfg, dataset_spec(cfg.dataset).shape if cfg.dataset in dataset_names() else None)
    dist, device = from_environment(device)
    try:
        return _run(cfg, results_dir=Path(results_dir), data_dir=data_dir, run_id=run_id, device=device,
                    reporter=reporter, options=options or TrainOptions(), dist=dist, notes=notes)
    finally:
        shutdown(dist)


def _run(cfg: RunConfig, *, results_dir: Path, data_dir, run_id, device: str, reporter, options: TrainOptions,
         dist: DistContext, notes=()) -> dict:
    # rank 0 prepares a missing dataset; the others wait for it (on several nodes each node needs it)
    ds = open_prepared(cfg.dataset, data_dir) if dist.is_main else None
    dist.barrier()
    if ds is None:
        ds = open_prepared(cfg.dataset, data_dir, auto_prepare=False)
    check_model_size(cfg, ds)
    check_evaluation(cfg, ds)  # a --regions box with no cell of this grid: one line, before training
    held = frames_held_on(ds, device, options.data_on_device)  # frames a GPU keeps beside the model
    memory.check_run(cfg, ds, device, options, dist.world_size, held=held)  # before any folder or batch: one line
    run_id = dist.broadcast(run_id or default_run_id(cfg))
    if options.resume:
        run_dir = results_dir / run_id
    elif dist.is_main:
        run_dir = create_run_dir(results_dir, run_id)
    else:
        run_dir = results_dir / run_id
    if dist.is_main:
        for note in notes:
            (reporter or Reporter()).note(note)
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True)
    model = build_model(cfg, ds)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # what was asked, and the paths taken (data on the device, Adam implementation, ...: svqbench.train.FastPaths)
    runtime = {**dataclasses.asdict(options), "world_size": dist.world_size, "paths": fast_paths(options, ds, dev).record()}
    runtime.pop("resume")
    if dist.is_main and not options.resume:
        write_json(run_dir / "config.json", {"run_id": run_id, "config": cfg.to_dict(), "runtime": runtime,
                                             "svqbench": __version__, "torch": torch.__version__,
                                             "python": platform.python_version(), "device": device,
                                             **environment_record(device),  # command, git, versions, host
                                             "quantizer_details": getattr(model.quantizer, "describe", dict)(),
                                             "dataset_meta": {**{k: ds.meta.get(k) for k in (
                                                 "name", "shape", "sources", "stats", "digest", "units", "step",
                                                 "in_len", "out_len")}, "kind": ds.kind}})
    tracker = tracker_of(reporter) if dist.is_main else None  # --tracker (svqbench.tracking): rank 0 logs
    if tracker:
        tracker.begin(run_id, run_dir, {**cfg.to_dict(), "runtime": runtime}, resume=options.resume)
    try:
        with memory.out_of_memory_as_failure(cfg.batch_size):
            result = train(cfg, ds, model, run_dir, device=dev, reporter=reporter, options=options, dist=dist)
    except (NonFiniteError, memory.OutOfMemory) as e:
        if dist.is_main:
            write_json(run_dir / "metrics.json", {"run_id": run_id, "status": "failed", "failure": e.record(),
                                                  "runtime": runtime})
        raise
    best = read_weights(run_dir / BEST) if dist.is_main else None
    model.load_state_dict(dist.broadcast(best)["model"])
    t0 = time.perf_counter()
    with (reporter or Reporter()).phase("test scoring") as progress:
        test = evaluate_model(model, ds, cfg, split="test", device=dev, dist=dist, per_window=True, progress=progress)
    windows = test.pop(PER_WINDOW)  # per-window errors: window_errors_test.npz, not metrics.json
    try:  # broken weights give NaN metrics: a failed run, never a leaderboard row
        check_finite(test, f"run {run_id} on the test split", run_dir / BEST)
    except RunFailed as e:
        if dist.is_main:
            write_json(run_dir / "metrics.json", {"run_id": run_id, "status": "failed", "runtime": runtime,
                                                  "failure": {"reason": "non-finite test metrics", "message": str(e)}})
        raise
    if not dist.is_main:
        return {}
    refs = evaluate_references(ds, split="test", cfg=cfg)
    usage = {}  # none, mlp, DMVFN: no codebook, no usage phase
    if usage_kind(getattr(model, "quantizer", None)) is not None:
        with (reporter or Reporter()).phase("codebook usage") as progress:
            usage = usage_on_split(model, ds, cfg, split="test", device=dev, progress=progress)
    train_aux = next((r.get("aux_loss") for r in result.log if r["epoch"] == result.best_epoch), None)
    metrics = {"run_id": run_id, "status": "finished", "split": "test", "checkpoint": "best.pt",
               "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
               "stopped_early": result.stopped_early, "train_seconds": round(result.seconds, 2),
               "eval_seconds": round(time.perf_counter() - t0, 2), "params": n_params,
               "trainable_params": n_trainable, "runtime": runtime, "test": test, **refs,
               "train_aux_loss": train_aux, "codebook_usage": usage}
    write_json(run_dir / "metrics.json", metrics)
    write_window_errors(run_dir / "window_errors_test.npz", windows)
    units = ",".join(dict.fromkeys(ds.meta.get("units") or [])) or None
    metrics = dict(metrics, run_dir=str(run_dir), units=units)
    row = {"run_id": run_id, "dataset": cfg.dataset, "data_digest": ds.meta.get("digest"), "units": units,
           "scale": cfg.scale, "model": cfg.model, "backbone": cfg.backbone,
           "quantizer": cfg.quantizer, "seed": cfg.seed, "loss": cfg.loss, "norm": cfg.norm, "noise": cfg.noise,
           "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "params": n_params,
           "test_mse": test["mse_per_pixel"], "test_mae": test["mae_per_pixel"],
           "test_rmse": test["rmse_per_pixel"], "test_rmse_latweighted": test.get("rmse_latweighted"),
           # video/traffic only (None for weather): OpenSTL's per-frame sums and image metrics
           **{f"test_{m}": test.get(m) for m in ("mse_per_frame", "mae_per_frame", "ssim", "psnr", "lpips")},
           **{f"{r}_{m}": refs[r][f"{m}_per_pixel"] for r in refs for m in ("mse", "mae")},
           "train_aux_loss": train_aux,  # per step, in the best (evaluated) epoch
           **{k: usage.get(k) for k in LEADERBOARD_KEYS},
           "precision": options.precision,
           "train_seconds": round(result.seconds, 2), "finished": dt.datetime.now().isoformat(timespec="seconds")}
    if not (options.resume and in_leaderboard(results_dir, run_id)):  # a resumed run may have got this far
        append_row(results_dir, row)
    if tracker:  # after the row: a tracking failure never costs the leaderboard
        tracker.log_results(metrics, tracked_figure(run_dir, data_dir, tracker.note))
    return metrics


def tracked_figure(run_dir: Path, data_dir, note) -> Path | None:
    """The forecast-sample figure a tracker logs (svqbench.plots.forecast_sample, from the best checkpoint),
    or None with a note: the metrics are logged either way; the figure is a bonus."""
    from svqbench.plots import forecast_sample
    try:
        return Path(forecast_sample(run_dir, run_dir / "forecast_sample.png", data_dir=data_dir))
    except Exception as e:  # noqa: BLE001 - see above
        note(f"tracking: no forecast-sample figure ({type(e).__name__}: {e})")
        return None


def write_window_errors(path: Path, windows: dict) -> Path:
    """Per-window test errors for a one-seed bootstrap (results.window_errors): arrays `mse`, `mae`
    (per pixel, physical units) and `window_start`, in window order."""
    import numpy as np

    from svqbench.atomic import atomic_write
    return atomic_write(path, lambda f: np.savez(f, mse=windows["mse_per_pixel"], mae=windows["mae_per_pixel"],
                                                 window_start=windows["window_start"]))


def check_run_id(run_id: str) -> None:
    """A run id names a folder under the results folder: letters, digits, '.', '_', '-' only."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}", run_id):
        raise UserError(f"bad run name {run_id!r}: use letters, digits, '.', '_' and '-' (not first), "
                        f"at most 200 characters")


def resume_experiment(run: str | Path, *, results_dir: Path, data_dir: Path | None = None, device: str = "cpu",
                      reporter: Reporter | None = None, precision: str | None = None, compile: bool | None = None,
                      channels_last: bool | None = None, checkpoint_every: int | None = None,
                      data_on_device: str | None = None, log_every: int | None = None, adam: str | None = None) -> dict:
    """Continue a killed run from its newest good checkpoint with the config it was started with;
    runtime options default to the saved ones (pass one to change it, e.g. a GPU run resumed on CPU)."""
    saved_run = open_run(run, results_dir=results_dir, data_dir=data_dir)
    run_dir, saved, cfg = saved_run.dir, saved_run.record, saved_run.config
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        try:
            finished = json.loads(metrics_path.read_text()).get("status", "finished") == "finished"
        except (ValueError, OSError, AttributeError):  # unreadable or not an object: not a finished record
            finished = False
        if finished and in_leaderboard(run_dir.parent, run_dir.name):
            raise UserError(f"run {run_dir.name} already finished (see {metrics_path}); start a new run instead")
    check_checkpoint_files(run_dir)
    runtime = {k: v for k, v in (saved.get("runtime") or {}).items() if k in ("precision", "compile", "channels_last",
                                                                             "checkpoint_every", "data_on_device",
                                                                             "log_every", "adam")}
    given = dict(precision=precision, compile=compile, channels_last=channels_last, checkpoint_every=checkpoint_every,
                 data_on_device=data_on_device, log_every=log_every, adam=adam)
    runtime.update({k: v for k, v in given.items() if v is not None})
    return run_experiment(cfg, results_dir=run_dir.parent, data_dir=data_dir, run_id=run_dir.name, device=device,
                          reporter=reporter, options=TrainOptions(**runtime, resume=True))
