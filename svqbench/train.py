"""The training loop: plain torch, readable top to bottom.

Adam; cosine (linear warm-up) / onecycle / constant schedule stepped per batch; L1 or L2 loss in
normalised space plus the quantizer's auxiliary loss; validation on the validation split after
every epoch; early stopping and the best checkpoint by validation loss. The test split is never
touched here.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from svqbench.config import RunConfig
from svqbench.data.prepared import PreparedDataset
from svqbench.models.simvp import SimVP


def build_model(cfg: RunConfig, ds: PreparedDataset) -> SimVP:
    h, w = ds.grid
    return SimVP(in_len=ds.in_len, out_len=ds.out_len, channels=len(ds.channels), height=h, width=w,
                 hid_s=cfg.hid_s, hid_t=cfg.hid_t, n_s=cfg.n_s, n_t=cfg.n_t, backbone=cfg.backbone,
                 mlp_ratio=cfg.mlp_ratio, drop_path=cfg.drop_path, quantizer=cfg.quantizer,
                 quantizer_kwargs=cfg.quantizer_kwargs(), placement=cfg.placement)


def lr_lambda(cfg: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of cfg.lr at optimiser step `s` (per-batch schedule)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return lambda s: 1.0
    if cfg.schedule == "onecycle":
        # torch's OneCycleLR shape: 30% cosine ramp from lr/25 to lr, then cosine down to lr/(25*1e4)
        up = max(1, int(0.3 * total))
        start, end = 1 / 25, 1 / 25 / 1e4

        def onecycle(s: int) -> float:
            if s < up:
                return start + (1 - start) * (1 - math.cos(math.pi * s / up)) / 2
            p = min(1.0, (s - up) / max(1, total - up))
            return end + (1 - end) * (1 + math.cos(math.pi * p)) / 2
        return onecycle
    warm = cfg.warmup_epochs * steps_per_epoch
    lo, floor = cfg.warmup_lr / cfg.lr, cfg.min_lr / cfg.lr

    def cosine(s: int) -> float:
        if s < warm:
            return lo + (1 - lo) * s / warm
        p = min(1.0, (s - warm) / max(1, total - warm))
        return floor + (1 - floor) * (1 + math.cos(math.pi * p)) / 2
    return cosine


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return F.l1_loss if name == "l1" else F.mse_loss


def inject_noise(x: torch.Tensor, eta: float, gen: torch.Generator) -> torch.Tensor:
    """Table 5 protocol: in each sample, exactly int(N * eta) of its N elements, picked uniformly
    at random, are multiplied by U(-2, 2)."""
    if eta <= 0:
        return x
    b = x.shape[0]
    flat = x.reshape(b, -1).clone()
    k = int(flat.shape[1] * eta)
    if k == 0:
        return x
    idx = torch.rand(flat.shape, generator=gen).argsort(dim=1)[:, :k].to(x.device)
    factors = (torch.rand((b, k), generator=gen) * 4 - 2).to(x.device, x.dtype)
    flat.scatter_(1, idx, flat.gather(1, idx) * factors)
    return flat.reshape(x.shape)


def to_tensors(ds: PreparedDataset, batch, norm: str, device: torch.device):
    x, y, offset = ds.normalise(batch, norm)
    return (torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(np.ascontiguousarray(y)).to(device),
            torch.from_numpy(np.ascontiguousarray(offset)).to(device))


@torch.no_grad()
def validation_loss(model, ds: PreparedDataset, cfg: RunConfig, device: torch.device) -> float:
    model.eval()
    crit, total, count = loss_fn(cfg.loss), 0.0, 0
    for batch in ds.batches("val", cfg.batch_size):
        x, y, _ = to_tensors(ds, batch, cfg.norm, device)
        pred, _ = model(x)
        total += float(crit(pred, y)) * len(x)
        count += len(x)
    return total / count


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_log(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    stopped_early: bool
    log: list[dict] = field(default_factory=list)


class Reporter:
    """Progress hooks; the CLI subclasses this with a rich progress bar."""

    def start(self, total_steps: int) -> None: ...
    def step(self, epoch: int, loss: float, lr: float) -> None: ...
    def epoch(self, row: dict) -> None: ...
    def stop(self) -> None: ...


def train(cfg: RunConfig, ds: PreparedDataset, model: SimVP, run_dir: Path, *, device: torch.device,
          reporter: Reporter | None = None) -> TrainResult:
    reporter = reporter or Reporter()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = ds.num_batches("train", cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch))
    crit = loss_fn(cfg.loss)
    rng = np.random.default_rng(cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    best, best_epoch, bad_epochs, log = math.inf, -1, 0, []
    t0 = time.perf_counter()
    reporter.start(cfg.epochs * steps_per_epoch)
    try:
        for epoch in range(cfg.epochs):
            model.train()
            t_epoch, total, count = time.perf_counter(), 0.0, 0
            for batch in ds.batches("train", cfg.batch_size, shuffle=True, rng=rng):
                x, y, _ = to_tensors(ds, batch, cfg.norm, device)
                x = inject_noise(x, cfg.noise, noise_gen)
                pred, aux = model(x)
                loss = crit(pred, y) + aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss) * len(x)
                count += len(x)
                reporter.step(epoch, float(loss), opt.param_groups[0]["lr"])
            val = validation_loss(model, ds, cfg, device)
            improved = val < best
            if improved:
                best, best_epoch, bad_epochs = val, epoch, 0
                save_atomic({"model": model.state_dict(), "epoch": epoch, "val_loss": val, "config": cfg.to_dict()},
                            run_dir / "best.pt")
            else:
                bad_epochs += 1
            row = dict(epoch=epoch, train_loss=total / count, val_loss=val, lr=opt.param_groups[0]["lr"],
                       best=improved, seconds=round(time.perf_counter() - t_epoch, 3))
            log.append(row)
            write_log(log, run_dir / "log.csv")
            reporter.epoch(row)
            if bad_epochs >= cfg.patience:
                break
    finally:
        reporter.stop()
    return TrainResult(best_epoch, best, len(log), time.perf_counter() - t0,
                       stopped_early=len(log) < cfg.epochs, log=log)
