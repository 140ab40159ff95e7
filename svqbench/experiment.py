"""One run end to end: prepared data -> model -> train (val split) -> test once -> results."""
from __future__ import annotations

import datetime as dt
import platform
import time
from pathlib import Path

import torch

from svqbench import __version__
from svqbench.config import RunConfig
from svqbench.data.prepared import open_prepared
from svqbench.evaluate import evaluate_model, evaluate_references
from svqbench.results import append_row, create_run_dir, write_json
from svqbench.train import Reporter, build_model, train


def default_run_id(cfg: RunConfig) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return f"{cfg.dataset}-{cfg.scale}-{cfg.backbone}-{cfg.quantizer}-s{cfg.seed}-{stamp}"


def run_experiment(cfg: RunConfig, *, results_dir: Path, data_dir: Path | None = None, run_id: str | None = None,
                   device: str = "cpu", reporter: Reporter | None = None) -> dict:
    ds = open_prepared(cfg.dataset, data_dir)
    run_id = run_id or default_run_id(cfg)
    run_dir = create_run_dir(results_dir, run_id)
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True)
    model = build_model(cfg, ds)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    write_json(run_dir / "config.json", {"run_id": run_id, "config": cfg.to_dict(), "svqbench": __version__,
                                         "torch": torch.__version__, "python": platform.python_version(),
                                         "device": device, "dataset_meta": {k: ds.meta[k] for k in
                                                                            ("name", "shape", "sources", "stats")}})
    result = train(cfg, ds, model, run_dir, device=dev, reporter=reporter)
    best = torch.load(run_dir / "best.pt", map_location=dev, weights_only=True)
    model.load_state_dict(best["model"])
    t0 = time.perf_counter()
    test = evaluate_model(model, ds, cfg, split="test", device=dev)
    refs = evaluate_references(ds, split="test")
    metrics = {"run_id": run_id, "split": "test", "checkpoint": "best.pt", "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
               "stopped_early": result.stopped_early, "train_seconds": round(result.seconds, 2),
               "eval_seconds": round(time.perf_counter() - t0, 2), "params": n_params,
               "trainable_params": n_trainable, "test": test, **refs}
    write_json(run_dir / "metrics.json", metrics)
    row = {"run_id": run_id, "dataset": cfg.dataset, "scale": cfg.scale, "backbone": cfg.backbone,
           "quantizer": cfg.quantizer, "seed": cfg.seed, "loss": cfg.loss, "norm": cfg.norm, "noise": cfg.noise,
           "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "params": n_params,
           "test_mse": test["mse_per_pixel"], "test_mae": test["mae_per_pixel"],
           "test_rmse": test["rmse_per_pixel"], "test_rmse_latweighted": test.get("rmse_latweighted"),
           **{f"{r}_{m}": refs[r][f"{m}_per_pixel"] for r in refs for m in ("mse", "mae")},
           "train_seconds": round(result.seconds, 2), "finished": dt.datetime.now().isoformat(timespec="seconds")}
    append_row(results_dir, row)
    return metrics
