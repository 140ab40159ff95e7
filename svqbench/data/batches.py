"""Batches for the model: windows of a prepared dataset as normalised tensors, by split and rank.

`read_batch` gathers windows by position; `split_batches` walks a split in order (one rank's
contiguous share under DDP, or an evenly spaced subset); `to_tensors` normalises and moves a batch
to the device; `inject_noise` is the Table 5 training-time noise.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from svqbench.data.prepared import Batch, PreparedDataset
from svqbench.distributed import SINGLE, DistContext


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


def to_tensors(ds: PreparedDataset, batch: Batch, norm: str, device: torch.device):
    """(x, y, offset) in model space on `device`; `ds.denormalise(pred, offset)` inverts it."""
    x, y, offset = ds.normalise(batch, norm)
    return (torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(np.ascontiguousarray(y)).to(device),
            torch.from_numpy(np.ascontiguousarray(offset)).to(device))


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
