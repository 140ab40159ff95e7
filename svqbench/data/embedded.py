"""The embedded real dataset: annual-mean near-surface air temperature over North America.

Source: `iris-sample-data` (A1B_north_america.nc / E1_north_america.nc), a climate-model run of
240 years (1860-2099, 360-day calendar) on a 37 x 49 grid (15-60 N, 225-315 E), in kelvin.
Task: 10 years in -> 5 years out. Contiguous blocks in time, windows never cross a block:
train 1860-2019 (146 windows), val 2020-2059 (26), test 2060-2099 (26). The later years of the
scenario are warmer than any training year, which is why per-window normalisation exists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from svqbench.config import PAPER_T2M
from svqbench.data import DatasetSpec
from svqbench.data.download import sha256
from svqbench.data.prepared import FrameTimes, write_prepared
from svqbench.errors import UserError
from svqbench.models import ForecastShape

IN_LEN, OUT_LEN = 10, 5
BLOCKS = {"train": (1860, 2019), "val": (2020, 2059), "test": (2060, 2099)}


def _source(filename: str) -> Path:
    try:
        import iris_sample_data
    except ImportError:
        raise UserError("the embedded dataset needs the `iris-sample-data` package; pip install iris-sample-data") from None
    return Path(iris_sample_data.path) / filename


def block_windows(years: np.ndarray, first: int, last: int, length: int) -> np.ndarray:
    """Start indices of every window of `length` consecutive frames whose years lie in [first, last]."""
    inside = np.flatnonzero((years >= first) & (years <= last))
    if len(inside) == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.array_equal(years[inside], np.arange(years[inside[0]], years[inside[-1]] + 1)):
        raise UserError(f"years {first}-{last} are not contiguous in the source")
    return inside[: max(0, len(inside) - length + 1)].astype(np.int64)


def _prepare(dest: Path, filename: str, scenario: str) -> Path:
    import xarray as xr
    path = _source(filename)
    if not path.exists():
        raise UserError(f"{path} not found; reinstall iris-sample-data")
    with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        da = ds["air_temperature"].transpose("time", "latitude", "longitude").load()
        encoding = ds["time"].encoding  # the file's own time units and calendar, kept for forecasts
    times = FrameTimes.encode(da["time"].values, encoding.get("units"), encoding.get("calendar"))
    years = np.array([t.year for t in da["time"].values])
    frames = da.values.astype(np.float32)[:, None]
    windows = {s: block_windows(years, a, b, IN_LEN + OUT_LEN) for s, (a, b) in BLOCKS.items()}
    meta = dict(
        name=dest.name, description=f"annual-mean 1.5 m air temperature, North America, {scenario} scenario",
        channels=["air_temperature"], units=["K"], in_len=IN_LEN, out_len=OUT_LEN, step="1 year",
        grid={"lat": da["latitude"].values.astype(float).tolist(), "lon": da["longitude"].values.astype(float).tolist()},
        times={"first": str(da["time"].values[0]), "last": str(da["time"].values[-1]), "steps": len(years)},
        splits={s: {"years": list(b), "rule": "windows lie entirely inside the block"} for s, b in BLOCKS.items()},
        sources=[{"file": f"iris-sample-data/{filename}", "sha256": sha256(path)}],
    )
    return write_prepared(dest, frames, windows, meta, times=times)


def prepare_a1b(dest: Path) -> Path:
    return _prepare(dest, "A1B_north_america.nc", "SRES A1B")


def prepare_e1(dest: Path) -> Path:
    return _prepare(dest, "E1_north_america.nc", "E1")


def _spec(name: str, prepare, scenario: str) -> DatasetSpec:
    quick = dict(hid_s=16, hid_t=64, n_t=4, n_s=2, mlp_ratio=4.0, drop_path=0.0, lr=5e-3, batch_size=16,
                 schedule="cosine", warmup_epochs=2, epochs=30, patience=8, loss="l1", codebook_size=10000,
                 codebook_init="normal", norm="window")
    return DatasetSpec(name, prepare, {"paper": dict(PAPER_T2M), "quick": quick},
                       ForecastShape(IN_LEN, OUT_LEN, 1, 37, 49),
                       f"annual-mean air temperature over North America, {scenario} (iris-sample-data), "
                       f"{IN_LEN} -> {OUT_LEN} years")


EMBEDDED = _spec("embedded", prepare_a1b, "SRES A1B")
EMBEDDED_E1 = _spec("embedded-e1", prepare_e1, "E1")
