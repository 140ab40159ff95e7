"""A synthetic prepared dataset small enough for multi-run tests (resume, DDP, faults) on 2 busy
cores: 8 x 8 drifting waves, 4 -> 2 frames, 60 / 20 / 20 windows, saved under the name `embedded`
so the `embedded` preset applies."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from svqbench.data.prepared import write_prepared

# model flags the CLI accepts too, so a subprocess `svqbench run` builds the same config
FLAGS = dict(hid_s=4, hid_t=8, n_t=2, n_s=2, batch_size=16, codebook_size=32, epochs=3, patience=5)


def make_tiny_dataset(root: Path, *, name: str = "embedded") -> Path:
    in_len, out_len, n = 4, 2, 110
    rng = np.random.default_rng(0)
    t = np.arange(n)[:, None, None]
    yy, xx = np.mgrid[0:8, 0:8]
    frames = (280 + 5 * np.sin(0.7 * xx + 0.3 * t) * np.cos(0.5 * yy - 0.2 * t)
              + rng.normal(0, 0.3, (n, 8, 8)))[:, None].astype(np.float32)
    length = in_len + out_len
    windows = {"train": np.arange(0, 60), "val": np.arange(65, 65 + 20 - length + 1 + 5),
               "test": np.arange(90, n - length + 1)}
    meta = dict(name=name, description="synthetic drifting waves (tests)", channels=["t"], units=["K"],
                in_len=in_len, out_len=out_len, step="1", grid={"lat": np.linspace(-40, 40, 8).tolist(),
                                                                "lon": np.linspace(0, 315, 8).tolist()},
                times=list(range(n)), splits={}, sources=[])
    return write_prepared(Path(root) / name, frames, windows, meta)


def cli_flags(**overrides) -> list[str]:
    args = []
    for key, value in {**FLAGS, **overrides}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args
