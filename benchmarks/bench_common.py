"""What the training-loop benchmarks (loop_overhead, loader_throughput, gpu_loop) share: a prepared
dataset of random frames in the WeatherBench-S t2m shape, and modules of another checkout loaded by
path (the old loop to compare against). Imported by the scripts from this folder."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

IN_LEN = OUT_LEN = 12  # WeatherBench-S: 12 hourly frames in, 12 out


def random_t2m(path: Path, frames: int, *, val: int, name: str) -> Path:
    """`frames` random 1 x 32 x 64 frames around 280 K, every window a train window; val and test are
    the first `val` windows (the benchmarks time training)."""
    from svqbench.data.prepared import write_prepared
    rng = np.random.default_rng(0)
    data = (280 + 5 * rng.standard_normal((frames, 1, 32, 64))).astype(np.float32)
    starts = np.arange(frames - IN_LEN - OUT_LEN + 1)
    return write_prepared(path, data, {"train": starts, "val": starts[:val], "test": starts[:val]},
                          dict(name=name, channels=["t2m"], units=["K"], in_len=IN_LEN, out_len=OUT_LEN))


def load_by_path(name: str, path: Path):
    """The module at `path`, registered as `name` (another checkout's file beside this one's)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
