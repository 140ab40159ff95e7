"""TaxiBJ: Beijing taxi inflow/outflow on a 32 x 32 grid every 30 minutes, 4 -> 4.

Inputs (`--from`, a folder or files):
  BJ13..BJ16_M32x32_T30_InOut.h5  keys `data` (N, 2, 32, 32: inflow, outflow) and `date` (bytes
                                  YYYYMMDDSS, slot SS = 01..48 half hours). Days without all 48
                                  slots are dropped (as ST-ResNet does). Splits: the last 28 days are
                                  the test split (ST-ResNet's), the 28 days before them validation,
                                  the rest training. Flows are min-max scaled to [0, 1] with the
                                  train minimum and maximum (ST-ResNet scales to [-1, 1]; OpenSTL then
                                  maps to [0, 1] by (x + 1) / 2; the result is the same).
  dataset.npz                     OpenSTL's prepared file (X_train, Y_train, X_test, Y_test in
                                  [-1, 1], (N, 4, 2, 32, 32)); mapped to [0, 1] by (x + 1) / 2. Its
                                  last 5% of training samples (after a gap of 7 samples, so no frame
                                  is shared) become the validation split.
Windows never cross a gap in time (a dropped day, or the months between the yearly files).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from svqbench.config import PAPER_BASE, scales
from svqbench.data import DatasetSpec
from svqbench.data.prepared import PreparedWriter
from svqbench.errors import UserError
from svqbench.models import ForecastShape

IN_LEN, OUT_LEN = 4, 4
SLOTS_PER_DAY = 48
HELD_OUT_DAYS = 28
H5_NAMES = [f"BJ{y}_M32x32_T30_InOut.h5" for y in (13, 14, 15, 16)]


def _find(from_paths: list[Path] | None) -> tuple[list[Path], Path | None]:
    if not from_paths:
        raise UserError("taxibj cannot be downloaded by svqbench; run `svqbench prepare taxibj --from FOLDER` "
                        "with the folder holding BJ13..BJ16_M32x32_T30_InOut.h5 (or OpenSTL's dataset.npz)")
    h5, npz = [], None
    for src in map(Path, from_paths):
        if not src.exists():
            raise UserError(f"--from {src}: no such file or folder")
        candidates = sorted(src.rglob("*")) if src.is_dir() else [src]
        for p in candidates:
            if p.name in H5_NAMES:
                h5.append(p)
            elif p.name == "dataset.npz":
                npz = npz or p
    return h5, npz


def _slot_times(dates: np.ndarray, where: str) -> np.ndarray:
    """Slot start times (datetime64[m]) from YYYYMMDDSS strings."""
    out = np.empty(len(dates), dtype="datetime64[m]")
    for i, raw in enumerate(dates):
        s = raw.decode() if isinstance(raw, (bytes, np.bytes_)) else str(raw)
        try:
            day = np.datetime64(f"{s[:4]}-{s[4:6]}-{s[6:8]}", "m")
            slot = int(s[8:])
        except ValueError:
            raise UserError(f"{where}: date {s!r} is not YYYYMMDDSS") from None
        if not 1 <= slot <= SLOTS_PER_DAY:
            raise UserError(f"{where}: date {s!r} has slot {slot}, expected 01..48")
        out[i] = day + np.timedelta64(30 * (slot - 1), "m")
    return out


def _complete_days(times: np.ndarray) -> np.ndarray:
    """Indices of the slots that belong to a day with all 48 slots (each exactly once)."""
    days = times.astype("datetime64[D]")
    keep = np.zeros(len(times), dtype=bool)
    for day in np.unique(days):
        idx = np.flatnonzero(days == day)
        expected = day.astype("datetime64[m]") + np.arange(SLOTS_PER_DAY) * np.timedelta64(30, "m")
        if len(idx) == SLOTS_PER_DAY and np.array_equal(np.sort(times[idx]), expected):
            keep[idx] = True
    return np.flatnonzero(keep)


def _read_h5(paths: list[Path]) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Per file: (path, kept slot indices in time order, their times). Frames are read later."""
    import h5py
    found = {p.name: p for p in paths}
    missing = [n for n in H5_NAMES if n not in found]
    if missing:
        raise UserError(f"taxibj: {', '.join(missing)} not found under --from; all four yearly files are needed")
    out = []
    for name in H5_NAMES:
        path = found[name]
        try:
            with h5py.File(path, "r") as f:
                if "data" not in f or "date" not in f:
                    raise UserError(f"{path}: keys {sorted(f.keys())}, expected `data` and `date`")
                shape, dtype, dates = f["data"].shape, f["data"].dtype, f["date"][()]
        except OSError as e:
            raise UserError(f"{path}: cannot be read as HDF5 ({e}); truncated or corrupt") from None
        if len(shape) != 4 or shape[1:] != (2, 32, 32):
            raise UserError(f"{path}: data has shape {shape}, expected (N, 2, 32, 32)")
        if not np.issubdtype(dtype, np.number):
            raise UserError(f"{path}: data has dtype {dtype}, expected numbers")
        if len(dates) != shape[0]:
            raise UserError(f"{path}: {len(dates)} dates for {shape[0]} frames")
        times = _slot_times(dates, str(path))
        keep = _complete_days(times)
        keep = keep[np.argsort(times[keep], kind="stable")]
        out.append((path, keep, times[keep]))
    return out


def _windows_in(times: np.ndarray, lo: int, hi: int, length: int) -> np.ndarray:
    """Starts s in [lo, hi - length] whose `length` slots are consecutive half hours."""
    starts = np.arange(lo, max(lo, hi - length + 1))
    ok = (times[starts + length - 1] - times[starts]) == np.timedelta64(30 * (length - 1), "m")
    return starts[ok].astype(np.int64)


def _h5_blocks(files: list[tuple[Path, np.ndarray, np.ndarray]], rows: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame index, float32 block) over the kept slots of every file, in order."""
    import h5py
    at = 0
    for path, keep, _ in files:
        with h5py.File(path, "r") as f:
            data = f["data"]
            for i in range(0, len(keep), rows):
                idx = keep[i: i + rows]
                first, stop = int(idx.min()), int(idx.max()) + 1  # one contiguous read, then the kept slots
                block = np.asarray(data[first:stop], dtype=np.float32)[idx - first]
                if not np.isfinite(block).all():
                    raise UserError(f"{path}: NaN or infinite flows; the file is corrupt")
                yield at, block
                at += len(idx)


def _prepare_h5(dest: Path, paths: list[Path]) -> Path:
    from svqbench.data.download import sha256
    files = _read_h5(paths)
    times = np.concatenate([t for _, _, t in files])
    if (np.diff(times) <= np.timedelta64(0, "m")).any():
        raise UserError("taxibj: the yearly files overlap in time; pass each BJ file once")
    n = len(times)
    held = HELD_OUT_DAYS * SLOTS_PER_DAY
    if n < 3 * held:
        raise UserError(f"taxibj: only {n // SLOTS_PER_DAY} complete days; need more than {3 * HELD_OUT_DAYS}")
    bounds = {"train": (0, n - 2 * held), "val": (n - 2 * held, n - held), "test": (n - held, n)}
    length = IN_LEN + OUT_LEN
    windows = {s: _windows_in(times, a, b, length) for s, (a, b) in bounds.items()}
    train = np.zeros(n + 1, dtype=np.int32)  # frames that train windows touch
    np.add.at(train, windows["train"], 1)
    np.add.at(train, windows["train"] + length, -1)
    train = np.cumsum(train[:n]) > 0
    lo, hi = np.inf, -np.inf
    for at, block in _h5_blocks(files):  # pass 1: the train min and max
        picked = block[train[at: at + len(block)]]
        if len(picked):
            lo, hi = min(lo, float(picked.min())), max(hi, float(picked.max()))
    if not hi > lo:
        raise UserError(f"taxibj: the train flows are constant ({lo}); cannot min-max scale")
    with PreparedWriter(dest, n, 2, (32, 32)) as writer:
        for at, block in _h5_blocks(files):  # pass 2: scaled frames
            writer.write(at, (block - np.float32(lo)) / np.float32(hi - lo), source=str(files[0][0].parent))
        start, stop = str(times[0]), str(times[-1])
        meta = dict(name=dest.name, kind="traffic",
                    description="TaxiBJ inflow/outflow, 30-minute slots, 4 -> 4, min-max scaled with train min/max",
                    channels=["inflow", "outflow"], units=["scaled flow (0-1 on train)"] * 2, value_range=[0.0, 1.0],
                    scaling={"min": lo, "max": hi, "to_flow": "flow = value * (max - min) + min"},
                    in_len=IN_LEN, out_len=OUT_LEN, step="30 minutes", grid={"height": 32, "width": 32},
                    times={"first": start, "last": stop, "slots": n, "incomplete_days_dropped": True},
                    splits={s: {"slots": [str(times[a]), str(times[b - 1])],
                                "rule": "last 28 complete days test, 28 before them validation"}
                            for s, (a, b) in bounds.items()},
                    sources=[{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p, _, _ in files])
        return writer.finish(windows, meta)


def _npz_header(zf: zipfile.ZipFile, fh, path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise UserError(f"{path}: {key} uses .npy format {version}, which svqbench does not read")
    shape, fortran, dtype = read(fh)
    if fortran or dtype.hasobject:
        raise UserError(f"{path}: {key} is not a plain C-ordered numeric array")
    return tuple(shape), dtype


def _npz_open(path: Path, key: str):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: not a readable .npz ({e}); truncated or corrupt") from None
    if f"{key}.npy" not in zf.namelist():
        zf.close()
        raise UserError(f"{path}: no array {key!r} (found {', '.join(n[:-4] for n in zf.namelist())})")
    return zf, zf.open(f"{key}.npy")


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    zf, fh = _npz_open(path, key)
    with zf, fh:
        return _npz_header(zf, fh, path, key)[0]


def _npz_blocks(path: Path, key: str, rows: int = 1024) -> Iterator[np.ndarray]:
    """Array `key` of an .npz in blocks of `rows`, read from the zip stream (bounded memory)."""
    zf, fh = _npz_open(path, key)
    with zf, fh:
        shape, dtype = _npz_header(zf, fh, path, key)
        row = int(np.prod(shape[1:])) * dtype.itemsize
        for i in range(0, shape[0], rows):
            n = min(rows, shape[0] - i)
            try:
                raw = fh.read(n * row)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise UserError(f"{path}: {key} cannot be read ({e}); the file is truncated or corrupt") from None
            if len(raw) != n * row:
                raise UserError(f"{path}: {key} ends early; the file is truncated")
            yield np.frombuffer(raw, dtype=dtype).reshape((n, *shape[1:]))


def _prepare_npz(dest: Path, path: Path) -> Path:
    from svqbench.data.download import sha256
    shapes = {}
    for key in ("X_train", "Y_train", "X_test", "Y_test"):
        shapes[key] = _npz_shape(path, key)
    for key, shape in shapes.items():
        want = OUT_LEN if key.startswith("Y") else IN_LEN
        if len(shape) != 5 or shape[1] != want or shape[2:] != (2, 32, 32):
            raise UserError(f"{path}: {key} has shape {shape}, expected (N, {want}, 2, 32, 32)")
    n_train, n_test = shapes["X_train"][0], shapes["X_test"][0]
    length = IN_LEN + OUT_LEN
    n_val = max(1, n_train // 20)
    gap = length - 1  # consecutive samples overlap by up to 7 frames
    if n_train - n_val - gap < 1:
        raise UserError(f"{path}: only {n_train} training samples; too few to hold out validation")
    sample_split = np.array(["train"] * (n_train - n_val - gap) + ["gap"] * gap + ["val"] * n_val + ["test"] * n_test)
    with PreparedWriter(dest, (n_train + n_test) * length, 2, (32, 32)) as writer:
        for part, offset in (("train", 0), ("test", n_train)):
            at = offset
            for x, y in zip(_npz_blocks(path, f"X_{part}"), _npz_blocks(path, f"Y_{part}")):
                block = (np.concatenate([x, y], axis=1).astype(np.float32) + 1) / 2  # [-1, 1] -> [0, 1]
                writer.write(at * length, block.reshape(-1, 2, 32, 32), source=f"{path}:{part}")
                at += len(x)
        starts = np.arange(n_train + n_test, dtype=np.int64) * length
        windows = {s: starts[sample_split == s] for s in ("train", "val", "test")}
        meta = dict(name=dest.name, kind="traffic",
                    description="TaxiBJ from OpenSTL's dataset.npz, 4 -> 4, (x + 1) / 2 to [0, 1]",
                    channels=["inflow", "outflow"], units=["scaled flow (0-1)"] * 2, value_range=[0.0, 1.0],
                    in_len=IN_LEN, out_len=OUT_LEN, step="30 minutes", grid={"height": 32, "width": 32},
                    splits={"train": {"samples": int((sample_split == "train").sum())},
                            "val": {"samples": n_val, "rule": f"last 5% of X_train after a {gap}-sample gap"},
                            "test": {"samples": n_test}},
                    sources=[{"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}])
        return writer.finish(windows, meta)


def prepare(dest: Path, *, from_paths: list[Path] | None = None, progress: bool = True) -> Path:
    h5, npz = _find(from_paths)
    if h5:
        return _prepare_h5(dest, h5)
    if npz is not None:
        return _prepare_npz(dest, npz)
    raise UserError(f"taxibj: no BJ13..BJ16_M32x32_T30_InOut.h5 or dataset.npz under {', '.join(map(str, from_paths))}")


TAXIBJ = DatasetSpec(
    "taxibj", prepare,
    # Table 10 names gSTA; Table 12's 7.84M / 9.45M are the ConvNeXt model (--backbone convnext)
    scales(dict(PAPER_BASE, backbone="gsta", lr=5e-4)),
    ForecastShape(4, 4, 2, 32, 32),
    "TaxiBJ crowd in/outflow, 2 x 32 x 32 half-hourly, 4 -> 4 (h5 files or OpenSTL dataset.npz via --from)")
