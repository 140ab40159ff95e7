"""Data-parallel training across processes (torchrun): who I am, which samples are mine, sums.

`torchrun --nproc_per_node N -m svqbench run ...` starts N copies of the command with RANK,
WORLD_SIZE and LOCAL_RANK in the environment; `from_environment` turns them into a
`DistContext` (gloo on CPU, NCCL on CUDA). A single process gets the trivial context (rank 0 of 1)
and every method below is then a no-op, so the training and evaluation code has one path.

Sharding is exact: the positions 0..n-1 of a split (or of one global batch) are cut into
`world_size` contiguous pieces whose sizes differ by at most one; nothing is padded or repeated, so
summing per-rank sums across ranks counts every sample exactly once.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from svqbench.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 is the only process that writes files or prints progress."""
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """[lo, hi) of this rank's contiguous share of n items (sizes differ by at most one)."""
        base, extra = divmod(n, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def shard(self, items: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds(len(items))
        return items[lo:hi]

    def all_reduce_sum(self, tensors: Sequence) -> None:
        """Sum each tensor across ranks in place (float64 sums stay exact enough for metrics)."""
        if not self.enabled:
            return
        import torch.distributed as dist
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def all_reduce_min(self, value: float) -> float:
        """The smallest `value` over all ranks (e.g. the first failed step), one all-reduce."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one rank."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (e.g. a run id built from the clock)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    def _device(self):
        import torch
        import torch.distributed as dist
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_environment(device: str) -> tuple[DistContext, str]:
    """The context torchrun described in the environment, and the device this rank should use
    (`cuda` becomes `cuda:LOCAL_RANK`). Initialises the default process group when WORLD_SIZE > 1."""
    if not launched_by_torchrun():
        return SINGLE, device
    try:
        ctx = DistContext(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                          local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise UserError("WORLD_SIZE is set but RANK is missing or not a number; launch with "
                        "`torchrun --nproc_per_node N -m svqbench run ...`") from None
    import torch
    import torch.distributed as dist
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} but CUDA is not available; use --device cpu (gloo backend)")
        device = f"cuda:{ctx.local_rank}"
        torch.cuda.set_device(ctx.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size,
                                timeout=dt.timedelta(minutes=30))
    return ctx, device


def resumed_world_size_note(saved: int, ctx: DistContext, checkpoint: str) -> str | None:
    """The warning for a resume on another number of processes than wrote `checkpoint`, else None.
    The global batch stays the same, so training goes on correctly, but the per-rank sums are added
    in another order: the numbers differ from an uninterrupted run (about 1e-4), and metrics.json
    records the new world size. Said, not refused: moving a job to other hardware is legitimate."""
    if saved == ctx.world_size:
        return None
    how = (f"torchrun --nproc_per_node {saved} -m svqbench run --resume ..." if saved > 1
           else "svqbench run --resume ... without torchrun")
    return (f"warning: {checkpoint} was written by {saved} process(es), this resume runs on {ctx.world_size}: "
            f"the run goes on with the same global batch, but its results will not be bit-identical to an "
            f"uninterrupted run; resume with `{how}` for that")


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def reduce_accumulator(acc: Any, ctx: DistContext) -> Any:
    """Sum a metric accumulator's additive state across ranks, in rank order, so that every rank's
    `acc.result()` covers the whole split. Accumulators name that state in `summed_fields`
    (tensors or numbers; None where a rank saw no batch)."""
    fields = getattr(acc, "summed_fields", None)
    if fields is None:
        raise TypeError(f"{type(acc).__name__} does not declare summed_fields; it cannot be reduced across ranks")
    if not ctx.enabled:
        return acc
    states = ctx.gather({name: getattr(acc, name) for name in fields})
    for name in fields:
        values = [s[name] for s in states if s[name] is not None]
        total = values[0] if values else None
        for v in values[1:]:
            total = total + v
        setattr(acc, name, total)
    return acc
