"""Issue 11, loader: normalised training windows delivered to the model per second, old vs new.

WeatherBench-S shape (12 -> 12 frames of 1 x 32 x 64), one synthetic hourly year (8,760 frames, every
window a train window) written with `write_prepared`, shuffled batches of 16, both normalisations:

- old: the previous training loop's batch path, per step `read_batch` (a Python loop over the
  windows and np.stack) + `to_tensors` (numpy normalisation, torch.from_numpy), loaded by path from
  another checkout (default /tmp/before11: `git worktree add /tmp/before11 17e4dc6`, the last
  commit before the new loop);
- new, device-resident (`--data-on-device yes`; on CPU the mapped frames are the device copy):
  windows gathered by index and normalised with torch;
- new, host prefetch (`--data-on-device no`): numpy gather + normalisation in a background thread,
  measured as the consumer sees it (alone, and while the consumer spends 5 ms per batch of its own
  work that releases the GIL, as a model's kernels do: the loader then costs the step nothing
  when it keeps up; the waits printed are net of time.sleep's own overshoot).

Passes are interleaved in rounds (best of the rounds); wall-clock windows per second.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loader_throughput.py [--old /tmp/before11] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from svqbench.data.batches import Loader, chunks  # noqa: E402
from bench_common import load_by_path as load, random_t2m  # noqa: E402
from svqbench.data.prepared import PreparedDataset  # noqa: E402

N, BATCH = 8760, 16
WORK_S = 0.005


def per_batch(batches, steps: int, work: float = 0.0) -> float:
    """Wall seconds per batch as the consumer sees them, less its own `work` per batch."""
    count, t0 = 0, time.perf_counter()
    for x, y in batches:
        count += 1
        if work:
            time.sleep(work)  # the model's turn: releases the GIL as torch kernels do
        if count >= steps:
            break
    return (time.perf_counter() - t0) / count - work


def sleep_overshoot(steps: int) -> float:
    """What time.sleep(WORK_S) takes beyond WORK_S here: subtracted from the waits."""
    return per_batch(iter([(np.zeros(BATCH), None)] * steps), steps, WORK_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=Path("/tmp/before11"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="batches per timed pass")
    a = parser.parse_args()
    if not (a.old / "svqbench/data/batches.py").exists():
        print(f"no old checkout at {a.old} (git worktree add {a.old} <commit>)", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    old_prepared = load("old_svqbench_prepared", a.old / "svqbench/data/prepared.py")
    old_batches = load("old_svqbench_batches", a.old / "svqbench/data/batches.py")
    old_batches.Batch = old_prepared.Batch
    cpu = torch.device("cpu")
    work = Path(tempfile.mkdtemp(prefix="svqbench-loader-throughput-"))
    try:
        path = random_t2m(work / "ds", N, val=100, name="loader-bench")
        ds_old, ds = old_prepared.PreparedDataset(path), PreparedDataset(path)
        order = np.random.default_rng(1).permutation(len(ds.splits["train"]))
        slices = chunks(len(order), BATCH)
        np.take(ds._mapped, np.arange(N), axis=0).sum()  # page cache warm

        def old_path(norm):
            for a_, b_ in slices:
                x, y, _ = old_batches.to_tensors(ds_old, old_batches.read_batch(ds_old, "train", order[a_:b_]), norm, cpu)
                yield x, y
        for norm in ("global", "window"):
            device, host = Loader(ds, norm, cpu, on_device=True), Loader(ds, norm, cpu, on_device=False)
            best: dict[str, float] = {}
            overshoot = min(sleep_overshoot(a.steps) for _ in range(a.rounds))
            for _ in range(a.rounds):
                for name, make, w in (("old read_batch + to_tensors", lambda: old_path(norm), 0.0),
                                      ("new device-resident", lambda: device.batches("train", order, slices), 0.0),
                                      ("new host prefetch", lambda: host.batches("train", order, slices), 0.0),
                                      ("old, beside 5 ms of work per batch", lambda: old_path(norm), WORK_S),
                                      ("new host prefetch, beside 5 ms of work", lambda: host.batches("train", order,
                                                                                                      slices), WORK_S)):
                    it = make()
                    seconds = per_batch(it, a.steps, w)
                    if hasattr(it, "close"):
                        it.close()
                    best[name] = min(best.get(name, float("inf")), seconds)
            print(f"norm {norm}, batch {BATCH}, windows of 12 + 12 frames of 1 x 32 x 64, CPU 1 thread:")
            for name, seconds in best.items():
                if "work" in name:
                    wait = max(seconds - overshoot, 0)
                    print(f"  {name:42s} the model waits {wait * 1e3:6.3f} ms per batch for data")
                else:
                    print(f"  {name:42s} {BATCH / seconds:10,.0f} windows/s  ({seconds * 1e3:6.3f} ms per batch)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
