"""The training loop: plain torch, readable top to bottom.

Adam; cosine (linear warm-up) / onecycle / constant schedule stepped per batch; L1 or L2 loss in
normalised space plus the quantizer's auxiliary loss; validation on the validation split after
every epoch; early stopping and the best checkpoint by validation loss. The test split is never
touched here.

Scale and faults (docs/scaling.md):
- data parallel: with a `DistContext` of N ranks, every optimiser step takes the same global batch
  of `batch_size` windows a single process would take, split into N contiguous shares; each rank's
  loss is weighted by its share so DDP's gradient average is the global-batch mean. Results match a
  single process up to float summation order. Rank 0 alone writes files.
- resumable: `checkpoint.pt` (and the one before it, `checkpoint.prev.pt`) hold the model,
  optimiser, scheduler, grad scaler, every RNG state, the epoch's shuffle order, the step within
  the epoch and the early-stopping state, with a content digest; a resumed CPU run in deterministic
  mode reproduces the uninterrupted one exactly.
- a non-finite loss or gradient stops the run (NonFiniteError) before the optimiser step, so the
  last checkpoint on disk is the last good state.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from svqbench.config import RunConfig
from svqbench.data.prepared import Batch, PreparedDataset
from svqbench.distributed import SINGLE, DistContext
from svqbench.errors import RunFailed, UserError
from svqbench.models.simvp import SimVP

PRECISIONS = ("fp32", "bf16", "fp16")
CHECKPOINT, PREVIOUS_CHECKPOINT = "checkpoint.pt", "checkpoint.prev.pt"
CHECKPOINT_FORMAT = "svqbench-checkpoint-1"


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


def loss_fn(name: str) -> Callable[..., torch.Tensor]:
    return F.l1_loss if name == "l1" else F.mse_loss


def inject_noise(x: torch.Tensor, eta: float, gen: torch.Generator, *,
                 rows: tuple[int, int] | None = None, batch_rows: int | None = None) -> torch.Tensor:
    """Table 5 protocol: in each sample, exactly int(N * eta) of its N elements, picked uniformly
    at random, are multiplied by U(-2, 2).

    In data-parallel training `x` holds rows [lo, hi) of a global batch of `batch_rows` samples:
    every rank draws for the whole global batch from identically seeded generators and keeps its
    rows, so the noise does not depend on the number of processes."""
    if eta <= 0:
        return x
    b = x.shape[0]
    lo, hi = rows or (0, b)
    total_rows = batch_rows or b
    flat = x.reshape(b, -1).clone()
    k = int(flat.shape[1] * eta)
    if k == 0:
        return x
    idx = torch.rand((total_rows, flat.shape[1]), generator=gen).argsort(dim=1)[lo:hi, :k].to(x.device)
    factors = (torch.rand((total_rows, k), generator=gen)[lo:hi] * 4 - 2).to(x.device, x.dtype)
    flat.scatter_(1, idx, flat.gather(1, idx) * factors)
    return flat.reshape(x.shape)


def to_tensors(ds: PreparedDataset, batch, norm: str, device: torch.device):
    x, y, offset = ds.normalise(batch, norm)
    return (torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(np.ascontiguousarray(y)).to(device),
            torch.from_numpy(np.ascontiguousarray(offset)).to(device))


def read_batch(ds: PreparedDataset, split: str, positions: np.ndarray) -> Batch:
    """The windows at `positions` (indices into ds.splits[split]) as one batch."""
    pairs = [ds.window(split, int(i)) for i in positions]
    return Batch(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                 np.asarray(ds.splits[split][positions]))


def split_batches(ds: PreparedDataset, split: str, batch_size: int, dist: DistContext = SINGLE, *,
                  limit: int = 0) -> Iterator[Batch]:
    """This rank's contiguous share of a split, in order and in batches (the whole split for one
    process); the shares of all ranks cover every window exactly once, without padding.
    `limit` > 0 keeps only that many evenly spaced windows of the split (the same ones every time)."""
    n = len(ds.splits[split])
    if not dist.enabled and not 0 < limit < n:
        yield from ds.batches(split, batch_size)
        return
    positions = np.arange(n) if not 0 < limit < n else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
    positions = dist.shard(positions)
    for i in range(0, len(positions), batch_size):
        yield read_batch(ds, split, positions[i: i + batch_size])


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


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_log(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------- checkpoints (resume state)

def state_digest(obj: Any) -> str:
    """sha256 over the content of a checkpoint payload (tensor bytes, dtypes, shapes, plain
    values), so a flipped bit is caught even where torch.load would read it without complaint."""
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=repr):
                feed(k)
                feed(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        else:
            h.update(f"{type(o).__name__}:{o!r};".encode())
    feed(obj)
    return h.hexdigest()


def save_checkpoint(payload: dict, run_dir: Path) -> Path:
    """Write checkpoint.pt atomically and keep the one before it as checkpoint.prev.pt."""
    path = Path(run_dir) / CHECKPOINT
    payload = dict(payload, format=CHECKPOINT_FORMAT)
    payload["digest"] = state_digest({k: v for k, v in payload.items() if k != "digest"})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS_CHECKPOINT))
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict:
    """Load and verify one checkpoint file; ValueError with the reason when it is unusable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, UnicodeDecodeError...
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not an svqbench checkpoint")
    if payload.get("digest") != state_digest({k: v for k, v in payload.items() if k != "digest"}):
        raise ValueError("content digest mismatch (corrupt)")
    return payload


def load_latest_checkpoint(run_dir: Path, note: Callable[[str], None]) -> tuple[dict, str] | None:
    """The newest good checkpoint of a run and its file name; corrupt files are reported via
    `note` and skipped (the previous one is used). None when there is no usable checkpoint."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = Path(run_dir) / name
        try:
            return read_checkpoint(path), name
        except FileNotFoundError:
            continue
        except ValueError as e:
            note(f"checkpoint {path} is {e}; falling back to the previous one")
    return None


# ---------------------------------------------------------------- the loop

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


@dataclass
class LoopState:
    """Where the loop is: everything besides module/optimiser state that a resume needs."""
    epoch: int = 0                # current epoch
    step: int = 0                 # optimiser steps done in the current epoch
    global_step: int = 0
    order: np.ndarray | None = None  # the current epoch's shuffle (None between epochs)
    loss_sum: float = 0.0         # this epoch's train loss * samples so far (all ranks on rank 0)
    samples: int = 0
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


def _rng_states(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def train(cfg: RunConfig, ds: PreparedDataset, model: SimVP, run_dir: Path, *, device: torch.device,
          reporter: Reporter | None = None, options: TrainOptions | None = None,
          dist: DistContext = SINGLE) -> TrainResult:
    options = options or TrainOptions()
    reporter = (reporter or Reporter()) if dist.is_main else QuietReporter()
    run_dir = Path(run_dir)
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_train = len(ds.splits["train"])
    steps_per_epoch = ds.num_batches("train", cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")
    crit = loss_fn(cfg.loss)
    rng = np.random.default_rng(cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    state, last_good = LoopState(), None

    if options.resume:
        found = load_latest_checkpoint(run_dir, reporter.note) if dist.is_main else None
        found = dist.broadcast(found)
        if found is None:
            reporter.note(f"no usable checkpoint in {run_dir}; training from the start")
        else:
            ckpt, last_good = found
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if ckpt["scaler"]:  # empty when saved by a run without fp16 (precision may change on resume)
                scaler.load_state_dict(ckpt["scaler"])
            rng.bit_generator.state = ckpt["rng"]["numpy"]
            noise_gen.set_state(ckpt["rng"]["noise"])
            ranks = ckpt["rng"]["ranks"]
            mine = ranks[dist.rank] if len(ranks) == dist.world_size else ranks[0]
            torch.set_rng_state(mine["torch"])
            if device.type == "cuda" and mine["cuda"] is not None:
                torch.cuda.set_rng_state(mine["cuda"], device)
            state = LoopState.from_dict(ckpt["loop"])
            if not dist.is_main:  # rank 0 carries the epoch's partial sums of all ranks
                state.loss_sum, state.samples = 0.0, 0
            if dist.is_main:
                reporter.note(f"resuming {run_dir.name} from {last_good}: epoch {state.epoch} step {state.step}")

    forward = torch.compile(model) if options.compile else model  # also used for validation
    net = forward
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel
        # static_graph: the set of parameters a step uses never changes, and may leave some out
        # (a quantizer's unused projection), which DDP then handles without a graph search per step
        net = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None,
                                      static_graph=True, gradient_as_bucket_view=True)

    def checkpoint() -> None:
        nonlocal last_good
        partial = torch.tensor([state.loss_sum, float(state.samples)], dtype=torch.float64)
        dist.all_reduce_sum([partial])
        state.loss_sum, state.samples = (float(partial[0]), int(partial[1])) if dist.is_main else (0.0, 0)
        ranks = dist.gather(_rng_states(device))
        if dist.is_main:
            save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                             "rng": {"numpy": rng.bit_generator.state, "noise": noise_gen.get_state(),
                                     "ranks": ranks},
                             "loop": state.to_dict(),
                             "world_size": dist.world_size, "precision": options.precision,
                             "config": cfg.to_dict()}, run_dir)
        last_good = CHECKPOINT

    t0 = time.perf_counter()
    reporter.start(cfg.epochs * steps_per_epoch)
    try:
        while not state.finished and state.epoch < cfg.epochs:
            epoch = state.epoch
            if state.order is None:
                state.order = rng.permutation(n_train)
            model.train()
            t_epoch = time.perf_counter()
            aux_sum, aux_steps = 0.0, 0  # this process's quantizer aux loss per step (since any resume)
            while state.step < steps_per_epoch:
                positions = state.order[state.step * cfg.batch_size: (state.step + 1) * cfg.batch_size]
                lo, hi = dist.bounds(len(positions))
                # a rank whose share is empty (global batch smaller than the world) still runs
                # forward/backward on one window with weight 0, as DDP needs every rank
                share = (hi - lo) / len(positions)
                if hi == lo:
                    lo, hi = 0, 1
                mine = positions[lo:hi]
                batch = read_batch(ds, "train", mine)
                x, y, _ = to_tensors(ds, batch, cfg.norm, device)
                x = inject_noise(x, cfg.noise, noise_gen, rows=(lo, hi), batch_rows=len(positions))
                if options.channels_last:
                    x = x.contiguous()
                with autocast(device, options.precision):
                    pred, aux = net(x)
                forecast = crit(pred.float(), y)
                loss = forecast + aux + model.regularizer(pred.float(), y)  # TAU's divergence term, else 0
                # DDP averages gradients over ranks: weight by share * world so the average is the
                # gradient of the global-batch loss (identical to one process for equal shares)
                weighted = loss * (share * dist.world_size) if dist.enabled else loss
                opt.zero_grad(set_to_none=True)
                scaler.scale(weighted).backward()
                scaler.unscale_(opt)
                grads = [p.grad for p in params if p.grad is not None]
                norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=device)
                loss_ok, grad_ok = bool(torch.isfinite(loss)), bool(torch.isfinite(norm))
                if options.precision == "fp16":
                    grad_ok = True  # the grad scaler skips overflowing steps and lowers its scale
                bad = dist.any(not (loss_ok and grad_ok))
                if bad:
                    what = "loss" if not loss_ok else "gradient" if not grad_ok else "loss or gradient on another rank"
                    raise NonFiniteError(epoch, state.step, what, last_good)
                scaler.step(opt)
                scaler.update()
                sched.step()
                value = loss.item()
                aux_sum, aux_steps = aux_sum + float(aux.detach()), aux_steps + 1
                if share > 0:
                    state.loss_sum += value * len(mine)
                    state.samples += len(mine)
                state.step += 1
                state.global_step += 1
                reporter.step(epoch, value, opt.param_groups[0]["lr"])
                if (options.checkpoint_every and state.global_step % options.checkpoint_every == 0
                        and state.step < steps_per_epoch):
                    checkpoint()
            val = validation_loss(forward, ds, cfg, device, dist=dist, precision=options.precision)
            if not math.isfinite(val):
                raise NonFiniteError(epoch, state.step, "validation loss", last_good)
            totals = torch.tensor([state.loss_sum, float(state.samples)], dtype=torch.float64)
            dist.all_reduce_sum([totals])
            improved = val < state.best
            if improved:
                state.best, state.best_epoch, state.bad_epochs = val, epoch, 0
                if dist.is_main:
                    save_atomic({"model": model.state_dict(), "epoch": epoch, "val_loss": val,
                                 "config": cfg.to_dict()}, run_dir / "best.pt")
            else:
                state.bad_epochs += 1
            row = dict(epoch=epoch, train_loss=float(totals[0] / totals[1]), val_loss=val,
                       aux_loss=aux_sum / max(1, aux_steps),
                       lr=opt.param_groups[0]["lr"], best=improved, seconds=round(time.perf_counter() - t_epoch, 3))
            state.log.append(row)
            if dist.is_main:
                write_log(state.log, run_dir / "log.csv")
            reporter.epoch(row)
            state.epoch, state.step, state.order, state.loss_sum, state.samples = epoch + 1, 0, None, 0.0, 0
            state.finished = state.bad_epochs >= cfg.patience or state.epoch >= cfg.epochs
            checkpoint()
    finally:
        reporter.stop()
    return TrainResult(state.best_epoch, state.best, len(state.log), time.perf_counter() - t0,
                       stopped_early=len(state.log) < cfg.epochs, log=state.log)

