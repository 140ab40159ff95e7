"""The training loop: plain torch, readable top to bottom.

    train()  ->  setup  ->  restore (on --resume)  ->  for each epoch: train_step ... ; end_of_epoch

Adam; cosine (linear warm-up) / onecycle / constant schedule stepped per batch; L1 or L2 loss in
normalised space plus the quantizer's auxiliary loss; validation on the validation split after
every epoch; early stopping and the best checkpoint by validation loss. The test split is never
touched here. Batches come from `svqbench.data.batches`, checkpoint files from
`svqbench.checkpoint`, the model from `svqbench.models` (docs/scaling.md for DDP and faults):

- data parallel: with a `DistContext` of N ranks, every optimiser step takes the same global batch
  of `batch_size` windows a single process would take, split into N contiguous shares; each rank's
  loss is weighted by its share so DDP's gradient average is the global-batch mean. Rank 0 writes.
- resumable: checkpoint.pt holds the model, optimiser, scheduler, grad scaler, every RNG state and
  the loop state (epoch, step, shuffle order, running sums, early-stopping state); a resumed CPU
  run in deterministic mode reproduces the uninterrupted one exactly.
- a non-finite loss or gradient stops the run (NonFiniteError) before the optimiser step, so the
  last checkpoint on disk is the last good state.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from svqbench.atomic import write_csv
from svqbench.checkpoint import CHECKPOINT, load_latest_checkpoint, save_best, save_checkpoint
from svqbench.config import RunConfig
from svqbench.data.batches import inject_noise, read_batch, split_batches, to_tensors
from svqbench.data.prepared import PreparedDataset
from svqbench.distributed import SINGLE, DistContext
from svqbench.errors import RunFailed, UserError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainOptions:
    """How to train (not what): recorded in config.json as `runtime`, never in the leaderboard key.

    precision: fp32 | bf16 | fp16 autocast of the forward pass (fp32 master weights; fp16 adds a
    gradient scaler). checkpoint_every: optimiser steps between mid-epoch checkpoints (0 = only at
    epoch ends). resume: continue from the run folder's checkpoint instead of starting fresh."""
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    checkpoint_every: int = 500
    resume: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.checkpoint_every < 0:
            raise UserError(f"checkpoint-every must be >= 0 steps, got {self.checkpoint_every}")


class NonFiniteError(RunFailed):
    """The loss or the gradient stopped being finite; nothing was stepped with it."""

    def __init__(self, epoch: int, step: int, what: str, checkpoint: str | None):
        self.epoch, self.step, self.what, self.checkpoint = epoch, step, what, checkpoint
        kept = f"last good checkpoint {checkpoint} kept" if checkpoint else "no checkpoint was written yet"
        super().__init__(f"non-finite {what} at epoch {epoch} step {step}; training stopped, {kept}; "
                         f"try a lower --lr or --precision fp32")

    def record(self) -> dict:
        return {"reason": f"non-finite {self.what}", "epoch": self.epoch, "step": self.step,
                "last_good_checkpoint": self.checkpoint, "message": str(self)}


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


def loss_fn(name: str) -> Callable[..., torch.Tensor]:
    return F.l1_loss if name == "l1" else F.mse_loss


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def validation_loss(model, ds: PreparedDataset, cfg: RunConfig, device: torch.device, *,
                    dist: DistContext = SINGLE, precision: str = "fp32") -> float:
    """Mean loss per element over the validation split, or its `max_val_windows` subset (summed across ranks)."""
    model.eval()
    crit = loss_fn(cfg.loss)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, element count
    for batch in split_batches(ds, "val", cfg.batch_size, dist, limit=cfg.max_val_windows):
        x, y, _ = to_tensors(ds, batch, cfg.norm, device)
        with autocast(device, precision):
            pred, _ = model(x)
        sums[0] += crit(pred.float(), y, reduction="sum").double()
        sums[1] += y.numel()
    dist.all_reduce_sum([sums])
    return float(sums[0] / sums[1])


# ---------------------------------------------------------------- progress

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

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)


class QuietReporter(Reporter):
    """Ranks other than 0 report nothing."""

    def note(self, message: str) -> None: ...


# ---------------------------------------------------------------- state

@dataclass
class LoopState:
    """Where the loop is: everything besides module/optimiser state that a resume needs."""
    epoch: int = 0                # current epoch
    step: int = 0                 # optimiser steps done in the current epoch
    global_step: int = 0
    order: np.ndarray | None = None  # the current epoch's shuffle (None between epochs)
    loss_sum: float = 0.0         # this epoch's train loss * samples so far (all ranks on rank 0)
    samples: int = 0
    aux_sum: float = 0.0          # this epoch's quantizer aux loss summed over steps (rank 0's)
    aux_steps: int = 0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    log: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in vars(self).items() if k != "order"}
        d["order"] = None if self.order is None else torch.from_numpy(self.order)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoopState":
        order = d["order"]
        return cls(**{**d, "order": None if order is None else order.numpy()})


@dataclass
class Training:
    """Everything the loop works on, made once by `setup`."""
    cfg: RunConfig
    ds: PreparedDataset
    model: torch.nn.Module        # the module whose state is saved
    forward: torch.nn.Module      # the model, compiled when asked (also used for validation)
    net: torch.nn.Module          # what a training step calls: `forward`, wrapped in DDP under torchrun
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    crit: Callable[..., torch.Tensor]
    rng: np.random.Generator      # shuffling
    noise_gen: torch.Generator    # Table 5 noise
    steps_per_epoch: int
    device: torch.device
    options: TrainOptions
    dist: DistContext
    run_dir: Path
    state: LoopState = field(default_factory=LoopState)
    last_good: str | None = None  # the checkpoint a failure can fall back to


def setup(cfg: RunConfig, ds: PreparedDataset, model, run_dir: Path, *, device: torch.device,
          options: TrainOptions, dist: DistContext) -> Training:
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = ds.num_batches("train", cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    return Training(cfg=cfg, ds=ds, model=model, forward=model, net=model, params=params, opt=opt,
                    sched=torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch)),
                    scaler=torch.amp.GradScaler(device.type, enabled=options.precision == "fp16"),
                    crit=loss_fn(cfg.loss), rng=np.random.default_rng(cfg.seed),
                    noise_gen=torch.Generator().manual_seed(cfg.seed + 1), steps_per_epoch=steps_per_epoch,
                    device=device, options=options, dist=dist, run_dir=Path(run_dir))


def wrap_model(t: Training) -> None:
    """torch.compile and DDP, after the weights are restored."""
    t.forward = torch.compile(t.model) if t.options.compile else t.model
    t.net = t.forward
    if t.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel
        # static_graph: the set of parameters a step uses never changes, and may leave some out
        # (a quantizer's unused projection), which DDP then handles without a graph search per step
        t.net = DistributedDataParallel(t.forward, device_ids=[t.device.index] if t.device.type == "cuda" else None,
                                        static_graph=True, gradient_as_bucket_view=True)


def _rng_states(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore(t: Training, reporter: Reporter) -> None:
    """Continue from the newest good checkpoint of the run folder (rank 0 reads, all ranks load)."""
    dist = t.dist
    found = load_latest_checkpoint(t.run_dir, reporter.note) if dist.is_main else None
    found = dist.broadcast(found)
    if found is None:
        reporter.note(f"no usable checkpoint in {t.run_dir}; training from the start")
        return
    ckpt, t.last_good = found
    t.model.load_state_dict(ckpt["model"])
    t.opt.load_state_dict(ckpt["optimizer"])
    t.sched.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty when saved by a run without fp16 (precision may change on resume)
        t.scaler.load_state_dict(ckpt["scaler"])
    t.rng.bit_generator.state = ckpt["rng"]["numpy"]
    t.noise_gen.set_state(ckpt["rng"]["noise"])
    ranks = ckpt["rng"]["ranks"]
    mine = ranks[dist.rank] if len(ranks) == dist.world_size else ranks[0]
    torch.set_rng_state(mine["torch"])
    if t.device.type == "cuda" and mine["cuda"] is not None:
        torch.cuda.set_rng_state(mine["cuda"], t.device)
    t.state = LoopState.from_dict(ckpt["loop"])
    if not dist.is_main:  # rank 0 carries the epoch's partial sums of all ranks
        t.state.loss_sum, t.state.samples = 0.0, 0
    if dist.is_main:
        reporter.note(f"resuming {t.run_dir.name} from {t.last_good}: epoch {t.state.epoch} step {t.state.step}")


def save_resume_state(t: Training) -> None:
    """checkpoint.pt: everything `restore` needs (the partial loss sums of all ranks on rank 0)."""
    state, dist = t.state, t.dist
    partial = torch.tensor([state.loss_sum, float(state.samples)], dtype=torch.float64)
    dist.all_reduce_sum([partial])
    state.loss_sum, state.samples = (float(partial[0]), int(partial[1])) if dist.is_main else (0.0, 0)
    ranks = dist.gather(_rng_states(t.device))
    if dist.is_main:
        save_checkpoint({"model": t.model.state_dict(), "optimizer": t.opt.state_dict(),
                         "scheduler": t.sched.state_dict(), "scaler": t.scaler.state_dict(),
                         "rng": {"numpy": t.rng.bit_generator.state, "noise": t.noise_gen.get_state(),
                                 "ranks": ranks},
                         "loop": state.to_dict(), "world_size": dist.world_size,
                         "precision": t.options.precision, "config": t.cfg.to_dict()}, t.run_dir)
    t.last_good = CHECKPOINT


# ---------------------------------------------------------------- one step, one epoch end

def train_step(t: Training) -> float:
    """One optimiser step on this rank's share of the next global batch; returns its loss."""
    cfg, state, dist = t.cfg, t.state, t.dist
    positions = state.order[state.step * cfg.batch_size: (state.step + 1) * cfg.batch_size]
    lo, hi = dist.bounds(len(positions))
    # a rank whose share is empty (global batch smaller than the world) still runs
    # forward/backward on one window with weight 0, as DDP needs every rank
    share = (hi - lo) / len(positions)
    if hi == lo:
        lo, hi = 0, 1
    mine = positions[lo:hi]
    x, y, _ = to_tensors(t.ds, read_batch(t.ds, "train", mine), cfg.norm, t.device)
    x = inject_noise(x, cfg.noise, t.noise_gen, rows=(lo, hi), batch_rows=len(positions))
    if t.options.channels_last:
        x = x.contiguous()
    with autocast(t.device, t.options.precision):
        pred, aux = t.net(x)
    forecast = t.crit(pred.float(), y)
    loss = forecast + aux + t.model.regularizer(pred.float(), y)  # TAU's divergence term, else 0
    # DDP averages gradients over ranks: weight by share * world so the average is the
    # gradient of the global-batch loss (identical to one process for equal shares)
    weighted = loss * (share * dist.world_size) if dist.enabled else loss
    t.opt.zero_grad(set_to_none=True)
    t.scaler.scale(weighted).backward()
    t.scaler.unscale_(t.opt)
    grads = [p.grad for p in t.params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=t.device)
    loss_ok, grad_ok = bool(torch.isfinite(loss)), bool(torch.isfinite(norm))
    if t.options.precision == "fp16":
        grad_ok = True  # the grad scaler skips overflowing steps and lowers its scale
    if dist.any(not (loss_ok and grad_ok)):
        what = "loss" if not loss_ok else "gradient" if not grad_ok else "loss or gradient on another rank"
        raise NonFiniteError(state.epoch, state.step, what, t.last_good)
    t.scaler.step(t.opt)
    t.scaler.update()
    t.sched.step()
    value = loss.item()
    state.aux_sum, state.aux_steps = state.aux_sum + float(aux.detach()), state.aux_steps + 1
    if share > 0:
        state.loss_sum += value * len(mine)
        state.samples += len(mine)
    state.step += 1
    state.global_step += 1
    return value


def end_of_epoch(t: Training, seconds: float) -> dict:
    """Validate, keep the best weights, log the epoch, decide on early stopping; returns the log row."""
    cfg, state, dist = t.cfg, t.state, t.dist
    epoch = state.epoch
    val = validation_loss(t.forward, t.ds, cfg, t.device, dist=dist, precision=t.options.precision)
    if not math.isfinite(val):
        raise NonFiniteError(epoch, state.step, "validation loss", t.last_good)
    totals = torch.tensor([state.loss_sum, float(state.samples)], dtype=torch.float64)
    dist.all_reduce_sum([totals])
    improved = val < state.best
    if improved:
        state.best, state.best_epoch, state.bad_epochs = val, epoch, 0
        if dist.is_main:
            save_best(t.run_dir, model_state=t.model.state_dict(), epoch=epoch, val_loss=val, config=cfg.to_dict())
    else:
        state.bad_epochs += 1
    row = dict(epoch=epoch, train_loss=float(totals[0] / totals[1]), val_loss=val,
               aux_loss=state.aux_sum / max(1, state.aux_steps),
               lr=t.opt.param_groups[0]["lr"], best=improved, seconds=round(seconds, 3))
    state.log.append(row)
    if dist.is_main:
        write_csv(t.run_dir / "log.csv", state.log)
    state.epoch, state.step, state.order = epoch + 1, 0, None
    state.loss_sum, state.samples, state.aux_sum, state.aux_steps = 0.0, 0, 0.0, 0
    state.finished = state.bad_epochs >= cfg.patience or state.epoch >= cfg.epochs
    return row


# ---------------------------------------------------------------- the loop

def train(cfg: RunConfig, ds: PreparedDataset, model, run_dir: Path, *, device: torch.device,
          reporter: Reporter | None = None, options: TrainOptions | None = None,
          dist: DistContext = SINGLE) -> TrainResult:
    options = options or TrainOptions()
    reporter = (reporter or Reporter()) if dist.is_main else QuietReporter()
    t = setup(cfg, ds, model, run_dir, device=device, options=options, dist=dist)
    if options.resume:
        restore(t, reporter)
    wrap_model(t)
    state, every = t.state, options.checkpoint_every
    t0 = time.perf_counter()
    reporter.start(cfg.epochs * t.steps_per_epoch)
    try:
        while not state.finished and state.epoch < cfg.epochs:
            if state.order is None:
                state.order = t.rng.permutation(len(ds.splits["train"]))
            t.model.train()
            t_epoch = time.perf_counter()
            while state.step < t.steps_per_epoch:
                loss = train_step(t)
                reporter.step(state.epoch, loss, t.opt.param_groups[0]["lr"])
                if every and state.global_step % every == 0 and state.step < t.steps_per_epoch:
                    save_resume_state(t)
            row = end_of_epoch(t, time.perf_counter() - t_epoch)
            reporter.epoch(row)
            if state.finished and state.epoch < cfg.epochs:
                reporter.note(f"early stop after epoch {row['epoch']}: no better validation loss in "
                              f"{cfg.patience} epochs (best {state.best:.5g} at epoch {state.best_epoch})")
            save_resume_state(t)
    finally:
        reporter.stop()
    return TrainResult(state.best_epoch, state.best, len(state.log), time.perf_counter() - t0,
                       stopped_early=len(state.log) < cfg.epochs, log=state.log)
