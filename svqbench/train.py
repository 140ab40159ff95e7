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
- no per-step host sync: each step's loss, aux loss and gradient norm stay on the device and are
  read every `log_every` steps, before a checkpoint and at the epoch end (`read_steps`); the epoch's
  sums are then added on the host in step order, exactly as when every step was read.
- a non-finite loss or gradient is never applied: the step is skipped where it happens (on the
  device with fused Adam, as GradScaler skips; by a host check otherwise, which costs nothing on a
  CPU) and the next read stops the run (NonFiniteError) naming the first bad step, so the last
  checkpoint on disk is the last good state. A non-finite loss makes every gradient NaN (x NaN,
  otherwise x 1.0 exactly), so under DDP all ranks skip the same step without an all-reduce.
- batches come from a `Loader`: device-resident frames gathered and normalised on the device, or a
  prefetching host thread (`--data-on-device`); fast paths (fused Adam, cudnn.benchmark) are chosen
  by `fast_paths` and recorded in the run's runtime.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
from svqbench.data.batches import DATA_ON_DEVICE, Loader, inject_noise, resident
from svqbench.data.prepared import PreparedDataset
from svqbench.distributed import SINGLE, DistContext, resumed_world_size_note
from svqbench.errors import RunFailed, UserError
from svqbench.options import ADAMS, PRECISIONS, TrainOptions  # noqa: F401 (re-exported)

# TrainOptions lives in svqbench.options (no torch): `run --print-config` checks it without importing torch.


@dataclass(frozen=True)
class FastPaths:
    """What a run actually uses, decided once from its TrainOptions, dataset and device (`runtime.paths`).

    data: "device" (frames on the device) | "host-prefetch". adam: "fused" | "foreach" | "for-loop".
    skip: where a non-finite step is skipped, "device" (fused Adam's found_inf, or fp16's GradScaler
    with fused Adam) or "host" (a host check of the gradient norm; free on a CPU, a sync on a GPU)."""
    data: str
    adam: str
    cudnn_benchmark: bool
    skip: str

    def record(self) -> dict:
        return dataclasses.asdict(self)


def fast_paths(options: TrainOptions, ds: PreparedDataset, device: torch.device | str) -> FastPaths:
    """The paths a run takes. GPU-only ones stay off on CPU where they would change CPU numbers:
    auto Adam is fused on CUDA and torch's default for-loop on CPU; cudnn.benchmark is CUDA's."""
    device = torch.device(device)
    adam = options.adam if options.adam != "auto" else "fused" if device.type == "cuda" else "for-loop"
    return FastPaths(data="device" if resident(ds, device, options.data_on_device) else "host-prefetch",
                     adam=adam, cudnn_benchmark=device.type == "cuda",
                     skip="device" if adam == "fused" else "host")


def make_adam(params, cfg: RunConfig, adam: str, device: torch.device) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_adam_flags(adam, device))
    except RuntimeError as e:
        raise UserError(f"--adam {adam} is not supported on {device} ({e}); use --adam auto") from None


def _adam_flags(adam: str, device: torch.device) -> dict:
    if adam == "fused":
        return {"fused": True}
    if adam == "foreach":
        return {"foreach": True}
    return {} if device.type == "cpu" else {"foreach": False}  # for-loop: torch's own choice on CPU


def use_adam(opt: torch.optim.Optimizer, adam: str, device: torch.device) -> None:
    """After loading an optimiser state (which brings the saved run's fused/foreach flags): this run's
    implementation, and its step counters where it keeps them (fused: on the device, else the CPU)."""
    flags = _adam_flags(adam, device)
    for group in opt.param_groups:
        group["fused"], group["foreach"] = flags.get("fused"), flags.get("foreach")
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "step" in st and torch.is_tensor(st["step"]):
                where = p.device if flags.get("fused") or group.get("capturable") else torch.device("cpu")
                st["step"] = st["step"].to(device=where, dtype=torch.float32)


class NonFiniteError(RunFailed):
    """The loss or the gradient stopped being finite; nothing was stepped with it."""

    def __init__(self, epoch: int, step: int, what: str, checkpoint: str | None, *, skipped: int = 0):
        self.epoch, self.step, self.what, self.checkpoint = epoch, step, what, checkpoint
        self.skipped = skipped  # non-finite steps skipped (never applied) before the run stopped
        kept = f"last good checkpoint {checkpoint} kept" if checkpoint else "no checkpoint was written yet"
        super().__init__(f"non-finite {what} at epoch {epoch} step {step}; training stopped, {kept}; "
                         f"try a lower --lr or --precision fp32")

    def record(self) -> dict:
        return {"reason": f"non-finite {self.what}", "epoch": self.epoch, "step": self.step,
                "last_good_checkpoint": self.checkpoint, "skipped_steps": self.skipped, "message": str(self)}


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


def masked_loss(crit: Callable[..., torch.Tensor], pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                valid_cells: int = 0, *, reduction: str = "mean") -> torch.Tensor:
    """`crit` over the valid grid cells only: the per-element loss of masked cells is left out and
    the mean divides by the number of valid elements. Without a mask, exactly `crit(pred, y)`."""
    if mask is None:
        return crit(pred, y) if reduction == "mean" else crit(pred, y, reduction=reduction)
    total = torch.where(mask, crit(pred, y, reduction="none"), 0.0).sum()
    return total if reduction == "sum" else total / (y.numel() // mask.numel() * valid_cells)


def _valid_elements(y: torch.Tensor, loader: Loader) -> int:
    return y.numel() if loader.mask is None else y.numel() // loader.mask.numel() * loader.valid_cells


@torch.no_grad()
def validation_loss(model, ds: PreparedDataset, cfg: RunConfig, device: torch.device, *,
                    dist: DistContext = SINGLE, precision: str = "fp32", loader: Loader | None = None) -> float:
    """Mean loss per (valid) element over the validation split, or its `max_val_windows` subset (summed
    across ranks). One host read at the end."""
    model.eval()
    crit = loss_fn(cfg.loss)
    loader = loader or Loader(ds, cfg.norm, device, on_device=resident(ds, torch.device(device), "auto"))
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, element count
    for x, y in loader.split("val", cfg.batch_size, dist, limit=cfg.max_val_windows):
        with autocast(device, precision):
            pred, _ = model(x)
        sums[0] += masked_loss(crit, pred.float(), y, loader.mask, loader.valid_cells, reduction="sum").double()
        sums[1] += _valid_elements(y, loader)
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
    """Progress hooks; the CLI subclasses this with a rich progress bar. `step` is called once per
    optimiser step, in bursts when the step losses are read (every `log_every` steps, before each
    checkpoint, at the epoch end), each time with that step's own loss, the learning rate it used and
    its global step (optimiser steps before it in the run, as a checkpoint restores it); `flush` after
    each read, before any checkpoint is written (a tracker makes the steps durable there)."""

    def start(self, total_steps: int) -> None: ...
    def step(self, epoch: int, loss: float, lr: float, global_step: int) -> None: ...
    def flush(self) -> None: ...
    def epoch(self, row: dict) -> None: ...
    def stop(self) -> None: ...

    @contextlib.contextmanager
    def phase(self, name: str):
        """A phase after training (test scoring, codebook usage): yields progress(done, total) batches."""
        yield lambda done, total: None

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
class StepRecord:
    """One optimiser step as it waits on the device: (loss, aux loss, gradient norm) not read yet."""
    values: torch.Tensor   # float32 (3,) on the device
    epoch: int
    step: int
    global_step: int
    samples: int           # windows this rank adds to the epoch's loss sum (0 for an empty share)
    lr: float              # the learning rate this step used (a host float: no sync)


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
    sample_gen: torch.Generator   # recurrent models' teacher-forcing masks (svqbench.models.recurrent)
    steps_per_epoch: int
    device: torch.device
    options: TrainOptions
    dist: DistContext
    run_dir: Path
    loader: Loader
    paths: FastPaths
    state: LoopState = field(default_factory=LoopState)
    last_good: str | None = None  # the checkpoint a failure can fall back to
    pending: list[StepRecord] = field(default_factory=list)  # steps not read yet
    reporter: Reporter = field(default_factory=QuietReporter)


def setup(cfg: RunConfig, ds: PreparedDataset, model, run_dir: Path, *, device: torch.device,
          options: TrainOptions, dist: DistContext) -> Training:
    paths = fast_paths(options, ds, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = paths.cudnn_benchmark
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adam(params, cfg, paths.adam, device)
    steps_per_epoch = ds.num_batches("train", cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    return Training(cfg=cfg, ds=ds, model=model, forward=model, net=model, params=params, opt=opt,
                    sched=torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch)),
                    scaler=torch.amp.GradScaler(device.type, enabled=options.precision == "fp16"),
                    crit=loss_fn(cfg.loss), rng=np.random.default_rng(cfg.seed),
                    noise_gen=torch.Generator().manual_seed(cfg.seed + 1),
                    sample_gen=torch.Generator().manual_seed(sample_seed(cfg.seed, dist.rank)),
                    steps_per_epoch=steps_per_epoch,
                    device=device, options=options, dist=dist, run_dir=Path(run_dir),
                    loader=Loader(ds, cfg.norm, device, on_device=paths.data == "device"), paths=paths)


def sample_seed(seed: int, rank: int) -> int:
    """Seed of a rank's teacher-forcing generator: its own stream per rank (each rank draws the masks
    of its share of the batch), apart from the shuffling (seed) and noise (seed + 1) streams."""
    return (seed + 2 + 1_000_003 * rank) % 2 ** 63


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
    use_adam(t.opt, t.paths.adam, t.device)  # the saved run may have used another implementation
    t.sched.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty when saved by a run without fp16 (precision may change on resume)
        t.scaler.load_state_dict(ckpt["scaler"])
    t.rng.bit_generator.state = ckpt["rng"]["numpy"]
    t.noise_gen.set_state(ckpt["rng"]["noise"])
    ranks = ckpt["rng"]["ranks"]
    mine = ranks[dist.rank] if len(ranks) == dist.world_size else ranks[0]
    torch.set_rng_state(mine["torch"])
    if "sample" in mine:  # checkpoints written before the recurrent models keep the fresh generator
        t.sample_gen.set_state(mine["sample"])
    if t.device.type == "cuda" and mine["cuda"] is not None:
        torch.cuda.set_rng_state(mine["cuda"], t.device)
    t.state = LoopState.from_dict(ckpt["loop"])
    if not dist.is_main:  # rank 0 carries the epoch's partial sums of all ranks
        t.state.loss_sum, t.state.samples = 0.0, 0
    if dist.is_main:
        reporter.note(f"resuming {t.run_dir.name} from {t.last_good}: epoch {t.state.epoch} step {t.state.step}")
        changed = resumed_world_size_note(ckpt.get("world_size", 1), dist, t.last_good)  # the checkpoint records it
        if changed:
            reporter.note(changed)


def save_resume_state(t: Training) -> None:
    """checkpoint.pt: everything `restore` needs (the partial loss sums of all ranks on rank 0).
    The steps not read yet are read first: a non-finite one stops the run before anything is written."""
    read_steps(t)
    state, dist = t.state, t.dist
    partial = torch.tensor([state.loss_sum, float(state.samples)], dtype=torch.float64)
    dist.all_reduce_sum([partial])
    state.loss_sum, state.samples = (float(partial[0]), int(partial[1])) if dist.is_main else (0.0, 0)
    ranks = dist.gather({**_rng_states(t.device), "sample": t.sample_gen.get_state()})
    if dist.is_main:
        save_checkpoint({"model": t.model.state_dict(), "optimizer": t.opt.state_dict(),
                         "scheduler": t.sched.state_dict(), "scaler": t.scaler.state_dict(),
                         "rng": {"numpy": t.rng.bit_generator.state, "noise": t.noise_gen.get_state(),
                                 "ranks": ranks},
                         "loop": state.to_dict(), "world_size": dist.world_size,
                         "precision": t.options.precision, "config": t.cfg.to_dict()}, t.run_dir)
    t.last_good = CHECKPOINT


# ---------------------------------------------------------------- one step, one epoch end

def step_rows(t: Training, step: int) -> tuple[int, int, float, tuple[int, int], int]:
    """Optimiser step `step` of the epoch on this rank: [a, b) of its windows in the epoch's order,
    its share of the global batch, its rows (lo, hi) in the global batch and the global batch size.
    A rank whose share is empty (global batch smaller than the world) still runs forward/backward
    on one window with weight 0, as DDP needs every rank."""
    size = t.cfg.batch_size
    first = step * size
    count = min(size, len(t.state.order) - first)
    lo, hi = t.dist.bounds(count)
    share = (hi - lo) / count
    if hi == lo:
        lo, hi = 0, 1
    return first + lo, first + hi, share, (lo, hi), count


def train_step(t: Training, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimiser step on this rank's share (x, y) of the next global batch. Nothing is read back
    to the host: the step's loss, aux loss and gradient norm wait in `t.pending` for `read_steps`."""
    cfg, state, dist = t.cfg, t.state, t.dist
    a, b, share, rows, batch_rows = step_rows(t, state.step)
    x = inject_noise(x, cfg.noise, t.noise_gen, rows=rows, batch_rows=batch_rows)
    if t.options.channels_last:
        x = x.contiguous()
    with autocast(t.device, t.options.precision):
        # every model takes the target frames and the step (recurrent teacher forcing); SimVP ignores them
        pred, aux = t.net(x, target=y, step=state.global_step, generator=t.sample_gen)
    forecast = masked_loss(t.crit, pred.float(), y, t.loader.mask, t.loader.valid_cells)
    loss = forecast + aux + t.model.regularizer(pred.float(), y)  # TAU's divergence term, else 0
    # DDP averages gradients over ranks: weight by share * world so the average is the
    # gradient of the global-batch loss (identical to one process for equal shares)
    weighted = loss * (share * dist.world_size) if dist.enabled else loss
    # a non-finite loss makes every gradient NaN (x NaN; x 1.0 otherwise, which changes no bit), and
    # DDP's gradient average carries that to every rank: all ranks skip the same step, no all-reduce
    weighted = weighted * torch.where(torch.isfinite(loss.detach()), 1.0, math.nan)
    t.opt.zero_grad(set_to_none=True)
    t.scaler.scale(weighted).backward()
    t.scaler.unscale_(t.opt)
    grads = [p.grad for p in t.params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=t.device)
    apply_step(t, norm)
    lr = t.opt.param_groups[0]["lr"]  # the rate this step used, before the schedule moves it
    t.sched.step()
    t.pending.append(StepRecord(torch.stack([loss.detach().float(), aux.detach().float(), norm.detach().float()]),
                                state.epoch, state.step, state.global_step, (b - a) if share > 0 else 0, lr))
    state.step += 1
    state.global_step += 1


def apply_step(t: Training, norm: torch.Tensor) -> None:
    """The optimiser step, skipped when the gradient is not finite (which a non-finite loss makes it)."""
    if t.options.precision == "fp16":  # GradScaler skips inf/NaN gradients (on the device with fused Adam)
        t.scaler.step(t.opt)
        t.scaler.update()
        return
    bad = ~torch.isfinite(norm)
    if t.paths.adam == "fused":
        t.opt.found_inf = bad.to(torch.float32)  # fused Adam leaves weights and state alone where set
        try:
            t.opt.step()
        finally:
            del t.opt.found_inf
    elif not bool(bad):  # a host check: free on a CPU, one sync per step on a GPU
        t.opt.step()


def read_steps(t: Training) -> None:
    """Read the steps waiting on the device (one transfer), add them to the epoch's sums in step
    order, report each one (its own loss, lr and global step). The first non-finite step (it was
    skipped) stops the run here; under DDP the ranks agree on it with one all-reduce per read."""
    pending, t.pending = t.pending, []
    if not pending:
        return
    state, dist = t.state, t.dist
    values = torch.stack([p.values for p in pending]).cpu().tolist()
    fp16 = t.options.precision == "fp16"  # its grad scaler skips overflowing steps: not a failure
    bad = [i for i, (loss, _, norm) in enumerate(values)
           if not math.isfinite(loss) or not (fp16 or math.isfinite(norm))]
    first = bad[0] if bad else len(pending)
    if dist.enabled:
        first = int(dist.all_reduce_min(float(first)))
    if first < len(pending):
        loss, _, _ = values[first]
        what = "loss" if not math.isfinite(loss) else "gradient" if first in bad else \
            "loss or gradient on another rank"
        p = pending[first]
        raise NonFiniteError(p.epoch, p.step, what, t.last_good, skipped=len(bad))
    for p, (loss, aux, _) in zip(pending, values):
        state.aux_sum, state.aux_steps = state.aux_sum + aux, state.aux_steps + 1
        if p.samples:
            state.loss_sum += loss * p.samples
            state.samples += p.samples
    for p, (loss, _, _) in zip(pending, values):
        t.reporter.step(p.epoch, loss, p.lr, p.global_step)
    t.reporter.flush()


def end_of_epoch(t: Training, seconds: float) -> dict:
    """Validate, keep the best weights, log the epoch, decide on early stopping; returns the log row."""
    read_steps(t)
    cfg, state, dist = t.cfg, t.state, t.dist
    epoch = state.epoch
    val = validation_loss(t.forward, t.ds, cfg, t.device, dist=dist, precision=t.options.precision, loader=t.loader)
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
    t.reporter = reporter
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
            batches = t.loader.batches("train", state.order,
                                       [step_rows(t, s)[:2] for s in range(state.step, t.steps_per_epoch)])
            try:
                for x, y in batches:
                    train_step(t, x, y)
                    if len(t.pending) >= options.log_every:
                        read_steps(t)
                    if every and state.global_step % every == 0 and state.step < t.steps_per_epoch:
                        save_resume_state(t)
            finally:
                batches.close()  # stops a prefetching thread
            read_steps(t)
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
