"""Issue 5 target: the training data loader delivers at least 20,000 WeatherBench-S windows
(12 + 12 frames of 1 x 32 x 64) per second on one core, so data never limits training.

Builds a prepared dataset of one synthetic hourly year (8,760 frames, every window a train window)
and times shuffled epochs of `PreparedDataset.batches` at batch 16, alone and with the
normalisation and tensor conversion training does. Rates use this process's CPU time (best of 3
epochs), which is what "on one core" means when other jobs share the machine; wall-clock rates are
printed beside them. The memcpy floor (copying the same bytes, no gather) is timed the same way.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loader_speed.py
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from svqbench.data.prepared import PreparedDataset, PreparedWriter  # noqa: E402

N, IN_LEN, OUT_LEN, BATCH = 8760, 12, 12, 16


def build(path: Path) -> PreparedDataset:
    rng = np.random.default_rng(0)
    length = IN_LEN + OUT_LEN
    with PreparedWriter(path, N, 1, (32, 64)) as w:
        w.write(0, (280 + rng.normal(0, 5, (N, 1, 32, 64))).astype(np.float32))
        starts = np.arange(N - length + 1)
        windows = {"train": starts, "val": starts[:100], "test": starts[:100]}
        w.finish(windows, dict(name="loader-bench", channels=["t2m"], units=["K"], in_len=IN_LEN, out_len=OUT_LEN))
    return PreparedDataset(path)


def epoch(ds: PreparedDataset, train_step: bool) -> tuple[float, float]:
    """(windows per CPU second, windows per wall second) of one shuffled epoch."""
    rng = np.random.default_rng(1)
    count, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    for batch in ds.batches("train", BATCH, shuffle=True, rng=rng):
        if train_step:
            x, y, offset = ds.normalise(batch, "global")
            torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        count += len(batch.index)
    return count / (time.process_time() - cpu0), count / (time.perf_counter() - wall0)


def best(fn, repeats: int = 3) -> tuple[float, float]:
    runs = [fn() for _ in range(repeats)]
    return max(r[0] for r in runs), max(r[1] for r in runs)


def memcpy_floor(ds: PreparedDataset) -> tuple[float, float]:
    src = np.asarray(ds.frames[:BATCH * (IN_LEN + OUT_LEN)])
    dst = np.empty_like(src)
    batches = len(ds.splits["train"]) // BATCH
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(batches):
        np.copyto(dst, src)
    n = batches * BATCH
    return n / (time.process_time() - cpu0), n / (time.perf_counter() - wall0)


def main() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="svqbench-loader-speed-"))
    try:
        ds = build(work / "ds")
        epoch(ds, False)  # warm the page cache
        cpu, wall = best(lambda: epoch(ds, False))
        cpu2, wall2 = best(lambda: epoch(ds, True))
        floor_cpu, floor_wall = best(lambda: memcpy_floor(ds))
        print(f"batches(): {cpu:,.0f} windows per CPU second (target >= 20,000; wall {wall:,.0f}/s), "
              f"{len(ds.splits['train'])} windows of 12 + 12 frames, batch {BATCH}")
        print(f"batches() + normalise + torch.from_numpy: {cpu2:,.0f} per CPU second (wall {wall2:,.0f}/s)")
        print(f"memcpy floor for the same bytes: {floor_cpu:,.0f} per CPU second; batches() reaches "
              f"{cpu / floor_cpu:.2f} of it")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
