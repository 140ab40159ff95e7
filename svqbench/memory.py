"""Will a training step fit in memory? An estimate made before the first batch, and out-of-memory as a failure.

A step's peak memory is traced, not guessed: one forward + loss + backward of a copy of the model
runs under a dispatch mode that adds up the bytes of every tensor storage the step creates and
subtracts them when Python frees them (`LiveTensorBytes`); the most alive at once is the step's
peak. The copy lives on the `meta` device, so nothing is allocated or computed and the cost is the
same at any batch (a model that cannot run there, e.g. one that calls .item(), is traced on the CPU
at the trial batches). Two trial batches give the bytes per sample and the fixed part; Adam's two
state tensors per trainable parameter (present during every step after the first) and the weights
themselves are added by their size. What is traced is tensors only: kernels' scratch space (e.g.
a CPU convolution's unfolded input) and the allocator's rounding are not, nor the process's other
memory: at batch 16 the torch profiler's replay of every CPU allocation reads 5% above the trace on the
default quick model and 13% above it on a tiny one (tests/test_memory.py), so a batch fits when its
estimate is at most FIT_FRACTION of the available memory. The estimate is fp32; under bf16/fp16
autocast (which the meta device does not apply) activations are smaller and nothing is refused.

Available memory: on the CPU MemAvailable (/proc/meminfo), lowered to the room under a cgroup
memory limit (v2 memory.max or v1 memory.limit_in_bytes of this process's cgroup and its parents);
on a GPU its free memory; SVQBENCH_MEMORY_LIMIT (GiB) caps either. An address-space limit
(ulimit -v) is not memory and is not read: an allocation it refuses, like any other out-of-memory
inside the loop, becomes `OutOfMemory`.
"""
from __future__ import annotations

import contextlib
import math
import os
import weakref
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from svqbench.errors import RunFailed, UserError

FIT_FRACTION = 0.8     # a batch fits when its estimate is at most this share of the available memory
TRIAL_BATCHES = (2, 4)  # the two traced batches (batch 1 sits a little off the line that 2.. follow)
GIB = 2**30
LIMIT_ENV = "SVQBENCH_MEMORY_LIMIT"  # GiB: the most memory svqbench counts as available


class OutOfMemory(RunFailed):
    """An allocation failed inside the training loop (CPU or CUDA)."""

    def __init__(self, batch_size: int, error: BaseException):
        first = str(error).splitlines()[0] if str(error) else ""
        self.batch_size, self.error = batch_size, f"{type(error).__name__}: {first}"
        super().__init__(f"out of memory at batch size {batch_size}; lower --batch-size")

    def record(self) -> dict:
        return {"reason": "out of memory", "batch_size": self.batch_size, "error": self.error, "message": str(self)}


def is_out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), Python's MemoryError (numpy), or torch's CPU allocator failing
    (a RuntimeError: "DefaultCPUAllocator: can't allocate memory" on Linux, "not enough memory" elsewhere)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


@contextlib.contextmanager
def out_of_memory_as_failure(batch_size: int):
    """Turn an out-of-memory error raised inside the block into `OutOfMemory` (a one-line run failure)."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise OutOfMemory(batch_size, e) from None


# ---------------------------------------------------------------- available memory

def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _inactive_file(path: Path, key: str) -> int:
    """Page cache the kernel reclaims before it kills (counted in a cgroup's usage)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its parents (None: no limit)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (root / "cgroup.controllers").exists():  # v2, unified at the root
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        d = base / path.lstrip("/")
        while True:
            limit, used = _read_int(d / files[0]), _read_int(d / files[1])
            if limit is not None and used is not None and limit < 2**60:  # v1 writes ~2^63 for "no limit"
                rooms.append(limit - used + _inactive_file(d / "memory.stat", files[2]))
            if d == base or base not in d.parents:
                break
            d = d.parent
    return max(0, min(rooms)) if rooms else None


def available_memory(device: str | torch.device) -> tuple[int, str]:
    """Bytes this process can still have on `device`, and where that figure comes from. A user's
    cap (LIMIT_ENV, in GiB, e.g. on a shared machine) lowers it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        found = [(int(torch.cuda.mem_get_info(dev)[0]), f"free on {dev}")]
    else:
        found = [(ram, "MemAvailable") for ram in [_meminfo_available()] if ram is not None]
        found += [(room, "room under the cgroup memory limit") for room in [_cgroup_room()] if room is not None]
    cap = os.environ.get(LIMIT_ENV)
    if cap:
        try:
            found.append((int(float(cap) * GIB), f"{LIMIT_ENV}={cap}"))
        except ValueError:
            raise UserError(f"{LIMIT_ENV}={cap!r}: give the memory to use in GiB, e.g. 8") from None
    if not found:
        raise UserError(f"cannot tell how much memory is available (no /proc/meminfo); set {LIMIT_ENV} to the GiB "
                        f"svqbench may use")
    return min(found)


# ---------------------------------------------------------------- the traced step

class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensor storages created while active that are still alive (`live`), and the most
    alive at once (`peak`). A storage is counted once, however many views share it."""

    def __init__(self):
        super().__init__()
        from torch.utils.weak import WeakIdKeyDictionary
        self.live = self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _freed(self, size: int, _ref) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_leaves
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self._seen:
                    size = storage.nbytes()
                    self._seen[storage] = weakref.ref(storage, partial(self._freed, size))
                    self.live += size
                    self.peak = max(self.peak, self.live)
        return out


@dataclass(frozen=True)
class StepMemory:
    """A training step's estimated peak bytes at a batch (`at`): the weights and Adam's state by
    their size, plus the traced step's peak as traced_fixed + batch * per_sample."""
    weights: int       # parameters and buffers
    optimizer: int     # Adam's exp_avg and exp_avg_sq of every trainable parameter
    traced_fixed: int  # the traced peak's part that does not grow with the batch (gradients, ...)
    per_sample: int
    traced_on: str     # meta | cpu

    @property
    def fixed(self) -> int:
        return self.weights + self.optimizer + self.traced_fixed

    def traced(self, batch: int) -> int:
        """The traced step's peak (forward + backward) at `batch`."""
        return self.traced_fixed + batch * self.per_sample

    def at(self, batch: int) -> int:
        return self.fixed + batch * self.per_sample

    def largest_batch(self, budget: int) -> int:
        """The largest batch whose estimate is within `budget` bytes (0: not even one sample)."""
        return max(0, (budget - self.fixed) // self.per_sample) if self.per_sample > 0 else 2**62


def _traced_peak(model: torch.nn.Module, shape, batch: int, device: str) -> int:
    """Peak tensor bytes of a training forward (target and step given, as the loop calls it) + L1
    loss + aux + regulariser + backward at `batch` (gradients start unset, as the loop's
    zero_grad(set_to_none=True) leaves them)."""
    import torch.nn.functional as F
    for p in model.parameters():
        p.grad = None
    with LiveTensorBytes() as trace:
        x = torch.zeros(batch, shape.in_len, shape.channels, shape.height, shape.width, device=device)
        y = torch.zeros(batch, shape.out_len, shape.channels, shape.height, shape.width, device=device)
        pred, aux = model(x, target=y, step=0, generator=torch.Generator().manual_seed(0))
        (F.l1_loss(pred, y) + aux + model.regularizer(pred, y)).backward()
        del x, y, pred, aux
    return trace.peak


def estimate_step(cfg, shape) -> StepMemory:
    """Trace a training step of `cfg`'s model on `shape` at TRIAL_BATCHES and fit fixed + per sample.
    A copy built here under a forked RNG: the caller's RNG streams and model are never touched."""
    from svqbench.models import build_model
    with torch.random.fork_rng(devices=[]):
        for device in ("meta", "cpu"):
            try:
                torch.manual_seed(cfg.seed)
                with torch.device(device):
                    model = build_model(cfg, shape).train()
                a, b = (_traced_peak(model, shape, n, device) for n in TRIAL_BATCHES)
                break
            except (RuntimeError, NotImplementedError) as e:  # e.g. .item() on meta: trace on the CPU instead
                if device == "meta":
                    continue
                if is_out_of_memory(e):
                    raise UserError(f"not even a trial step of batch {TRIAL_BATCHES[1]} fits in memory on the "
                                    f"CPU: the model is too large for this machine") from None
                raise
    per_sample = max(0, math.ceil((b - a) / (TRIAL_BATCHES[1] - TRIAL_BATCHES[0])))
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    adam = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return StepMemory(weights=weights, optimizer=adam, traced_fixed=max(0, a - TRIAL_BATCHES[0] * per_sample),
                      per_sample=per_sample, traced_on=device)


def check_batch(cfg, shape, batch: int, device: str | torch.device, *, flag: str = "--batch-size",
                what: str | None = None, extra: int = 0, processes: int = 1, precision: str = "fp32",
                available: tuple[int, str] | None = None, step: StepMemory | None = None) -> StepMemory:
    """Refuse, in one line with the figures and the largest batch that fits, a training step of
    `batch` samples whose estimated peak (plus `extra` bytes, e.g. frames held on a GPU; times
    `processes` sharing this memory) is more than FIT_FRACTION of the available memory.
    `what` names the batch in the message (default: "--batch-size B").
    `available`: (bytes, where from) instead of reading them; `step`: an estimate already made."""
    step = step or estimate_step(cfg, shape)
    if precision != "fp32":  # an fp32 estimate would refuse batches that fit under autocast
        return step
    free, source = available or available_memory(device)
    need = processes * step.at(batch) + extra
    if need <= FIT_FRACTION * free:
        return step
    largest = step.largest_batch(int((FIT_FRACTION * free - extra) // processes))
    per = f" for each of {processes} processes" if processes > 1 else ""
    fix = f"the largest batch that fits is {largest}; lower {flag}" if largest else \
        "not even a batch of 1 fits: choose a smaller model or free memory"
    raise UserError(f"{what or f'{flag} {batch}'}: a training step needs about {need / GIB:.2f} GiB{per} "
                    f"(estimated), more than {FIT_FRACTION:.0%} of the {free / GIB:.2f} GiB available ({source}) "
                    f"on {device}; {fix}")


def check_run(cfg, ds, device: str, options, world_size: int = 1, *, held: int = 0) -> StepMemory:
    """`check_batch` for a run: each optimiser step takes min(batch_size, train windows) windows,
    split over the ranks; `held` bytes of frames kept on a GPU (svqbench.data.batches.frames_held_on)
    count too, and CPU ranks started together (torchrun's LOCAL_WORLD_SIZE) share the machine's memory."""
    from svqbench.models import ForecastShape
    dev = torch.device(device)
    n_train = len(ds.splits["train"])
    rows = min(cfg.batch_size, n_train)
    per_rank = -(-rows // max(1, world_size))
    what = f"--batch-size {cfg.batch_size}"
    if rows < cfg.batch_size:
        what += f" (steps of {rows} windows: the train split holds {n_train})"
    if per_rank < rows:
        what += f", {per_rank} per rank"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if dev.type == "cpu" else 1
    return check_batch(cfg, ForecastShape.of(ds), per_rank, device, what=what, extra=held, processes=processes,
                       precision=options.precision)


def fitting_batch(cfg, shape, wanted: int, device: str | torch.device) -> int:
    """`wanted`, or the largest batch below it whose step fits (refused in one line when not even 1 fits)."""
    step, available = estimate_step(cfg, shape), available_memory(device)
    largest = step.largest_batch(int(FIT_FRACTION * available[0]))
    if largest < 1:
        check_batch(cfg, shape, 1, device, what="a batch of 1", available=available, step=step)  # refuses
    return min(wanted, largest)
