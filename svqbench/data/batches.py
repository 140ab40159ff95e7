"""Batches for the model: windows of a prepared dataset as normalised tensors, by split and rank.

`read_batch` gathers windows by position; `split_positions` / `split_batches` walk a split in order
(one rank's contiguous share under DDP, or an evenly spaced subset); `to_tensors` normalises and
moves a batch to the device; `inject_noise` is the Table 5 training-time noise.

`Loader` is what training reads from, in one of two ways (`--data-on-device`, docs/scaling.md):

- device-resident: the frames (and a dataset's input frames) are put on the device once, windows are
  gathered there by index and normalised there (`normalise_tensors`, the same float32 operations in
  the same order as `PreparedDataset.normalise`, so the tensors are bit-identical to the host path).
  On a GPU the frames are uploaded; on the CPU "the device" is RAM, where the memory-mapped
  frames.npy already is: the tensor is the mapping itself (no copy) and the page cache holds it.
- host: a background thread gathers and normalises the next batches with numpy (pinned memory when
  the device is a GPU) while the model works on the current one; the copy to the GPU does not block.

`auto` chooses the device when the frames take less than `DEVICE_FRACTION` of the memory available
when first asked (`memory.available_memory`: GPU free memory; CPU MemAvailable, the cgroup's room and
SVQBENCH_MEMORY_LIMIT, i.e. the mapped file stays in the page cache, otherwise random windows would be
read from disk and the prefetching thread hides that).
"""
from __future__ import annotations

import functools
import queue
import threading
import warnings
from typing import Iterable, Iterator

import numpy as np
import torch

from svqbench.data.prepared import Batch, PreparedDataset
from svqbench.distributed import SINGLE, DistContext
from svqbench.errors import UserError
from svqbench.memory import available_memory

from svqbench.options import DATA_ON_DEVICE  # defined without torch, for the CLI
DEVICE_FRACTION = 0.5   # auto: device-resident when the frames take less than this share of free memory
PREFETCH = 3            # host loader: batches prepared ahead
_UPLOAD_BYTES = 64 << 20


def read_batch(ds: PreparedDataset, split: str, positions: np.ndarray) -> Batch:
    """The windows at `positions` (indices into ds.splits[split]) as one batch."""
    return ds.gather(split, np.asarray(positions, dtype=np.int64))


def split_positions(ds: PreparedDataset, split: str, dist: DistContext = SINGLE, *, limit: int = 0) -> np.ndarray:
    """This rank's contiguous share of the positions of a split, in order (all of them for one
    process); the shares of all ranks cover every window exactly once, without padding.
    `limit` > 0 keeps only that many evenly spaced windows of the split (the same ones every time)."""
    n = len(ds.splits[split])
    positions = np.arange(n) if not 0 < limit < n else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
    return dist.shard(positions)


def chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[a, b) of consecutive batches of n items."""
    return [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]


def split_batches(ds: PreparedDataset, split: str, batch_size: int, dist: DistContext = SINGLE, *,
                  limit: int = 0) -> Iterator[Batch]:
    """`split_positions` in batches, as host (numpy) batches."""
    positions = split_positions(ds, split, dist, limit=limit)
    for a, b in chunks(len(positions), batch_size):
        yield ds.gather(split, positions[a:b])


def to_tensors(ds: PreparedDataset, batch: Batch, norm: str, device: torch.device):
    """(x, y, offset) in model space on `device`; `ds.denormalise(pred, offset)` inverts it."""
    x, y, offset = ds.normalise(batch, norm)
    return (torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(np.ascontiguousarray(y)).to(device),
            torch.from_numpy(np.ascontiguousarray(offset)).to(device))


def normalise_tensors(x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                      mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`PreparedDataset.normalise` for float32 tensors (B, T, C, H, W) on any device; mean and std are
    (C, 1, 1) float32. The same float32 operations in the same order as numpy's, so the results are
    bit-identical: the window mean adds the input frames one after another, as numpy's reduction over
    a non-innermost axis does (torch's own mean sums in another order)."""
    if mode == "global":
        offset, subtract = mean.expand(x.shape[0], *x.shape[2:]), mean
    elif mode == "window":
        total = x[:, 0].clone()
        for t in range(1, x.shape[1]):
            total += x[:, t]
        offset = total.div_(x.shape[1])
        subtract = offset[:, None]
    else:
        raise UserError(f"unknown norm {mode!r}; choose one of: global, window")
    return torch.sub(x, subtract).div_(std), torch.sub(y, subtract).div_(std), offset


def data_bytes(ds: PreparedDataset) -> int:
    """Bytes of the frames a device-resident loader holds (frames.npy and any input frames)."""
    extra = ds.input_frames.nbytes if ds.input_frames is not None else 0
    return int(ds.frames.nbytes) + int(extra)


@functools.lru_cache(maxsize=None)
def free_memory(device: str) -> int:
    """What `memory.available_memory` reports for `device`, measured the first time this process asks
    (so a decision made before the model is on the GPU stays the same later)."""
    return available_memory(device)[0]


def resident(ds: PreparedDataset, device: torch.device, on_device: str) -> bool:
    """Whether `Loader` keeps the frames on the device for `--data-on-device auto | yes | no`."""
    if on_device not in DATA_ON_DEVICE:
        raise UserError(f"unknown data-on-device {on_device!r}; choose one of: {', '.join(DATA_ON_DEVICE)}")
    if on_device == "no":
        return False
    need, free = data_bytes(ds), free_memory(str(device))
    if on_device == "yes":
        if device.type == "cuda" and need > free:
            raise UserError(f"--data-on-device yes: the frames take {need / 2**30:.2f} GiB but {device} has "
                            f"{free / 2**30:.2f} GiB free; use --data-on-device auto or no")
        return True
    return need <= DEVICE_FRACTION * free


def frames_held_on(ds: PreparedDataset, device: str, on_device: str) -> int:
    """Bytes of frames a run keeps on a GPU beside its model (0 on the CPU, where they are the mapped file)."""
    dev = torch.device(device)
    return data_bytes(ds) if dev.type == "cuda" and resident(ds, dev, on_device) else 0


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class Loader:
    """Normalised (x, y) training and validation batches of one dataset on one device.

    `batches(split, positions, slices)` yields, for each [a, b) of `slices`, the windows at
    positions[a:b] of the split in model space on the device: the same tensors either way the data
    are held (see the module doc). `mask` is the dataset's valid-cell mask on the device, or None."""

    def __init__(self, ds: PreparedDataset, norm: str, device: torch.device, *, on_device: bool,
                 prefetch: int = PREFETCH):
        if norm not in ("global", "window"):
            raise UserError(f"unknown norm {norm!r}; choose one of: global, window")
        self.ds, self.norm, self.device, self.on_device = ds, norm, torch.device(device), on_device
        self.prefetch = max(1, prefetch)
        self.pin = self.device.type == "cuda"
        self.mask = None if ds.mask is None else torch.from_numpy(np.asarray(ds.mask, dtype=bool)).to(self.device)
        self.valid_cells = 0 if ds.mask is None else int(np.count_nonzero(ds.mask))
        if on_device:
            self.frames = self._put(ds._mapped)
            self.inputs = self.frames if ds.input_frames is None else self._put(ds.input_frames)
            self.mean = torch.from_numpy(np.asarray(ds.mean, dtype=np.float32)[:, None, None]).to(self.device)
            self.std = torch.from_numpy(np.asarray(ds.std, dtype=np.float32)[:, None, None]).to(self.device)
            self.scale = None if ds.frame_scale is None else \
                torch.tensor(np.float32(ds.frame_scale), dtype=torch.float32, device=self.device)
            self.t_in = torch.arange(ds.in_len, device=self.device)
            self.t_out = torch.arange(ds.in_len, ds.in_len + ds.out_len, device=self.device)

    @property
    def mode(self) -> str:
        return "device" if self.on_device else "host-prefetch"

    def _put(self, frames: np.ndarray) -> torch.Tensor:
        """The frames as a tensor on the device: the mapping itself on the CPU, uploaded in blocks to a GPU."""
        if self.device.type == "cpu":
            with warnings.catch_warnings():  # read-only mapping: the tensor is only ever read
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(frames)
        out = torch.empty(frames.shape, dtype=torch.from_numpy(np.empty(0, frames.dtype)).dtype, device=self.device)
        step = max(1, _UPLOAD_BYTES // max(1, frames[:1].nbytes))
        for a in range(0, len(frames), step):
            out[a: a + step].copy_(torch.from_numpy(np.ascontiguousarray(frames[a: a + step])))
        return out

    def batches(self, split: str, positions: np.ndarray, slices: Iterable[tuple[int, int]]
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        positions = np.asarray(positions, dtype=np.int64)
        if self.on_device:
            return self._device_batches(split, positions, slices)
        return self._host_batches(split, positions, slices)

    def split(self, split: str, batch_size: int, dist: DistContext = SINGLE, *, limit: int = 0
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of a split in order, in batches (as `split_batches`)."""
        positions = split_positions(self.ds, split, dist, limit=limit)
        return self.batches(split, positions, chunks(len(positions), batch_size))

    # ---- device-resident: one upload of the window starts per call, then gathers on the device
    def _device_batches(self, split, positions, slices):
        starts = torch.from_numpy(np.ascontiguousarray(self.ds.splits[split][positions], dtype=np.int64)).to(self.device)
        for a, b in slices:
            s = starts[a:b]
            x = self._gather(self.inputs, s, self.t_in)
            y = self._gather(self.frames, s, self.t_out)
            x, y, _ = normalise_tensors(x, y, self.mean, self.std, self.norm)
            yield x, y

    def _gather(self, frames: torch.Tensor, starts: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        idx = (starts[:, None] + offsets).reshape(-1)
        out = frames.index_select(0, idx).view(len(starts), len(offsets), *frames.shape[1:])
        if self.scale is not None:  # uint8 video frames: stored * frame_scale in float32, as numpy does
            out = out.to(torch.float32).mul_(self.scale)
        return out

    # ---- host: a thread gathers and normalises ahead of the model
    def _host_batch(self, split, positions):
        x, y, _ = self.ds.normalise(self.ds.gather(split, positions), self.norm)
        x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        return (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)

    def _host_batches(self, split, positions, slices):
        slices = list(slices)
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for a, b in slices:
                    if not put(self._host_batch(split, positions[a:b])):
                        return
                put(_END)
            except BaseException as e:  # handed to the consumer, raised there
                put(_Failed(e))

        worker = threading.Thread(target=work, name="svqbench-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                x, y = item
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        finally:
            stop.set()
            worker.join()


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
