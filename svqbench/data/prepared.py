"""The prepared-dataset format every source converts to, and the batches training reads from it.

A prepared dataset is a folder a user can open without svqbench:
  frames.npy        (N, C, H, W): float32 in physical units, or uint8 with meta["frame_scale"]
                    (video: value = stored * frame_scale, in [0, 1]); read memory-mapped
  windows_<split>.npy  int64 start frame of every window of that split (train / val / test)
  inputs.npy        optional, named by meta["input_frames"]: frames of the same shape and dtype from
                    which the *input* frames of every window are read (targets stay frames.npy)
  mask.npy          optional, named by meta["mask"]: (H, W) bool, True = valid grid cell
  climatology.npy   float32 (C, H, W): mean of the train frames per grid cell
  times.npy         optional, named by meta["frame_times"]["file"]: float64 time of every frame, CF-encoded
                    in meta["frame_times"]["units"] ("hours since 1970-01-01 00:00:00") and ["calendar"],
                    the source's own where they encode its times exactly (FrameTimes)
  meta.json         kind (weather / traffic / video), channels, units, grid, times, in/out lengths,
                    split descriptions, train-only normalisation stats, source checksums
A window starting at s is frames[s : s + in_len] -> frames[s + in_len : s + in_len + out_len].

Sources write through `PreparedWriter`, which fills frames.npy in a temp folder block by block
with positional writes (memory stays bounded), computes the statistics from the train windows
only, and swaps the folder in with a rename, so a failed conversion leaves any earlier dataset
untouched.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from svqbench.atomic import CannotWrite, ensure_dir, remove_stale_temps, write_json
from svqbench.errors import UserError
from svqbench.data import data_root  # the registry above this reader owns where data lives

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
_CHUNK_BYTES = 16 << 20  # frames read per step when computing statistics (float64 copies are 2-3x this)


@dataclass(frozen=True)
class FrameTimes:
    """The real time of every frame as CF numbers: `values` in `units` ("UNIT since DATE") of `calendar`.

    Prepare stores them (times.npy) so that forecasts carry the source's own stamps: monthly means
    stamped mid-month stay mid-month, a 360-day calendar stays 360-day."""
    values: np.ndarray  # float64 (N,)
    units: str
    calendar: str

    @classmethod
    def encode(cls, dates, units: str | None = None, calendar: str | None = None) -> "FrameTimes":
        """cftime `dates` in the source's `units` and `calendar` when those encode every date exactly
        and as CF allows (no year-0 origin in a calendar without a year 0); else in whole days, hours,
        minutes or seconds since the first date's midnight."""
        import warnings

        import cftime
        dates = np.asarray(dates, dtype=object)
        calendar = str(calendar or dates[0].calendar).strip().lower()
        unit = str(units or "").partition(" since ")[0].strip().lower()
        candidates = [units] if units and unit in ("seconds", "minutes", "hours", "days") else []
        first = dates[0]
        origin = f"{first.year:04d}-{first.month:02d}-{first.day:02d} 00:00:00"
        candidates += [f"{u} since {origin}" for u in ("days", "hours", "minutes", "seconds")]
        keys = _date_keys(dates)
        for candidate in candidates:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # cftime's CFWarning: an origin CF does not allow
                    values = np.asarray(cftime.date2num(dates, candidate, calendar), dtype=np.float64)
                    back = cftime.num2date(values, candidate, calendar, only_use_cftime_datetimes=True)
            except (ValueError, TypeError, OverflowError, Warning):
                continue
            whole = candidate in (units, candidates[-1]) or (values == np.round(values)).all()
            if whole and np.array_equal(_date_keys(back), keys):
                return cls(values, candidate, calendar)
        raise UserError(f"times {first} .. {dates[-1]} ({calendar} calendar) cannot be stored as CF numbers")

    def dates(self) -> np.ndarray:
        """The frames' times as cftime dates in their calendar."""
        import cftime
        return np.asarray(cftime.num2date(self.values, self.units, self.calendar, only_use_cftime_datetimes=True),
                          dtype=object)


def _date_keys(dates) -> np.ndarray:
    """Dates to the second as sortable integers (any calendar)."""
    return np.array([((((d.year * 100 + d.month) * 100 + d.day) * 100 + d.hour) * 100 + d.minute) * 100 + d.second
                     for d in dates], dtype=np.int64)


class PreparedWriter:
    """Build a prepared dataset without holding the frames in memory.

        with PreparedWriter(dest, n_frames, channels, (H, W)) as w:
            w.write(start, block)          # block (n, C, H, W), any number of times
            w.finish(windows, meta)        # statistics, climatology, atomic swap into dest

    uint8 frames need `frame_scale` (physical value = stored * frame_scale). Leaving the block
    without `finish` (an exception) deletes the temp folder and keeps the old dataset.
    """

    def __init__(self, dest: str | os.PathLike, n_frames: int, channels: int, grid: tuple[int, int], *,
                 dtype: str = "float32", frame_scale: float | None = None):
        if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("uint8")):
            raise ValueError(f"frames dtype must be float32 or uint8, got {dtype}")
        if (np.dtype(dtype) == np.uint8) != (frame_scale is not None):
            raise ValueError("uint8 frames need frame_scale; float32 frames must not have one")
        self.dest = Path(dest)
        self.frame_scale = frame_scale
        self.dtype = np.dtype(dtype)
        self.shape = (int(n_frames), int(channels), *map(int, grid))
        self.frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        ensure_dir(self.dest.parent)
        remove_stale_temps(self.dest.parent)  # what a killed prepare left behind
        self.tmp = self.dest.with_name(f".{self.dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.file = None
        try:
            self.tmp.mkdir()
            # A .npy header, then frames written in place with pwrite: nothing is mapped, so the
            # process holds one block at a time however large the dataset is.
            self.file = open(self.tmp / "frames.npy", "w+b")
            np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                             "fortran_order": False, "shape": self.shape})
            self.offset = self.file.tell()
            self.file.truncate(self.offset + self.shape[0] * self.frame_bytes)
        except OSError as e:
            self.abort()
            raise CannotWrite(self.tmp, e) from None
        self.done = False

    def __enter__(self) -> "PreparedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, start: int, block: np.ndarray, *, source: str = "source data") -> None:
        """Frames `start .. start + len(block)` (physical values for float32, stored values for uint8)."""
        if tuple(block.shape[1:]) != self.shape[1:]:
            raise UserError(f"{source}: frame shape {tuple(block.shape[1:])} does not match {self.shape[1:]}")
        if not 0 <= start <= start + len(block) <= self.shape[0]:
            raise ValueError(f"frames {start}..{start + len(block)} outside 0..{self.shape[0]}")
        if self.dtype == np.float32 and not np.isfinite(block).all():
            bad = int(np.argmax(~np.isfinite(block).reshape(len(block), -1).all(axis=1)))
            raise UserError(f"{source}: NaN or infinite values (first in frame {start + bad}); "
                            f"fix or drop those times before preparing")
        view = memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B")
        at = self.offset + start * self.frame_bytes
        while view:  # pwrite may write less than asked
            try:
                written = os.pwrite(self.file.fileno(), view, at)
            except OSError as e:  # a full disk: svqbench.data.prepare names the folder and its free space
                raise CannotWrite(self.tmp / "frames.npy", e) from None
            view, at = view[written:], at + written

    def read(self, start: int, stop: int) -> np.ndarray:
        """Stored frames `start .. stop`, read back from the file (not mapped)."""
        raw = os.pread(self.file.fileno(), (stop - start) * self.frame_bytes, self.offset + start * self.frame_bytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape(stop - start, *self.shape[1:])

    def physical(self, start: int, stop: int) -> np.ndarray:
        block = self.read(start, stop)
        return block if self.frame_scale is None else block.astype(np.float32) * np.float32(self.frame_scale)

    def finish(self, windows: dict[str, np.ndarray], meta: dict[str, Any], *, mask: np.ndarray | None = None,
               times: FrameTimes | None = None) -> Path:
        """Statistics from the frames the train windows touch, then swap the folder into place.

        `mask` (H, W) bool, True = valid cell (e.g. ocean in an SST field): statistics use the valid
        cells only, masked cells are filled with each channel's train mean (0 after normalisation),
        and the mask is saved as mask.npy (meta["mask"]). `times`: every frame's real time, saved as
        times.npy (meta["frame_times"]: its file, units and calendar)."""
        n = self.shape[0]
        if times is not None and len(times.values) != n:
            raise ValueError(f"{len(times.values)} frame times for {n} frames")
        length = int(meta["in_len"]) + int(meta["out_len"])
        name = meta.get("name", self.dest.name)
        windows = {s: np.asarray(windows[s], dtype=np.int64) for s in SPLITS}
        for split in SPLITS:
            w = windows[split]
            if w.size == 0:
                raise UserError(f"{name}: split {split!r} has no windows of {length} frames; give it more time "
                                f"steps (netcdf: --splits, weatherbench: --years) or shorten --in-len/--out-len")
            if w.min() < 0 or w.max() + length > n:
                raise ValueError(f"split {split}: window starts out of range")
        in_train = np.zeros(n + 1, dtype=np.int32)  # +1 at a window's start, -1 past its end
        np.add.at(in_train, windows["train"], 1)
        np.add.at(in_train, windows["train"] + length, -1)
        in_train = np.cumsum(in_train[:n]) > 0
        c, h, w = self.shape[1:]
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (h, w):
                raise ValueError(f"mask shape {mask.shape} does not match the grid {(h, w)}")
            mask = None if mask.all() else mask
        if mask is not None and not mask.any():
            raise UserError(f"{name}: every grid cell is masked (NaN); nothing to learn from")
        # with a mask, statistics see the valid cells only, as a (C, 1, valid cells) frame
        stats = _TrainStats(self.shape[1:] if mask is None else (c, 1, int(mask.sum())))
        step = max(1, _CHUNK_BYTES // (self.frame_bytes * (4 if self.frame_scale else 1)))
        for start in range(0, n, step):
            chosen = in_train[start: start + step]
            if chosen.any():
                block = self.physical(start, start + len(chosen))[chosen]
                stats.add(block if mask is None else block[:, :, mask][:, :, None, :])
        mean, std, climatology = stats.result()
        if mask is not None:
            full = np.empty((c, h, w), dtype=np.float32)
            full[:] = mean.astype(np.float32)[:, None, None]
            full[:, mask] = climatology[:, 0]
            climatology = full
            for start in range(0, n, step):  # masked cells -> the train mean of their channel
                block = self.read(start, min(n, start + step)).copy()
                block[:, :, ~mask] = mean.astype(np.float32)[:, None]
                self.write(start, block)
            np.save(self.tmp / "mask.npy", mask)
            meta = dict(meta, mask={"file": "mask.npy", "valid_cells": int(mask.sum()), "cells": int(mask.size),
                                    "fill": "train mean of each channel", "stats": "valid cells only"})
        meta = dict(meta, format_version=FORMAT_VERSION, shape=list(self.shape), dtype=str(self.dtype),
                    stats={"mean": mean.tolist(), "std": std.tolist(), "computed_on": "train"},
                    windows={s: int(len(windows[s])) for s in SPLITS})
        if self.frame_scale is not None:
            meta["frame_scale"] = self.frame_scale
        try:  # a full disk here (frames fit, metadata does not) keeps the earlier dataset
            os.fsync(self.file.fileno())  # the frames are on disk before the folder is swapped in
            meta["digest"] = self._digest(windows, meta)
            self.file.close()
            np.save(self.tmp / "climatology.npy", climatology)
            if times is not None:
                np.save(self.tmp / "times.npy", np.asarray(times.values, dtype=np.float64))
                meta["frame_times"] = {"file": "times.npy", "units": times.units, "calendar": times.calendar}
            for split in SPLITS:
                np.save(self.tmp / f"windows_{split}.npy", windows[split])
            write_json(self.tmp / "meta.json", meta)
        except OSError as e:
            self.abort()
            raise CannotWrite(self.tmp, e) from None
        old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
        if self.dest.exists():
            self.dest.rename(old)
        self.tmp.rename(self.dest)
        shutil.rmtree(old, ignore_errors=True)
        self.done = True
        return self.dest

    def _digest(self, windows: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
        """sha256 of what a run sees: the frames, the windows of every split, lengths and channels."""
        import hashlib
        h = hashlib.sha256(json.dumps([meta["in_len"], meta["out_len"], meta.get("channels")]).encode())
        size, at = self.shape[0] * self.frame_bytes, 0
        while at < size:
            block = os.pread(self.file.fileno(), min(_CHUNK_BYTES, size - at), self.offset + at)
            h.update(block)
            at += len(block)
        for split in SPLITS:
            h.update(np.ascontiguousarray(windows[split], dtype=np.int64).tobytes())
        return "sha256:" + h.hexdigest()


class _TrainStats:
    """Per-channel mean / population std (Chan's parallel merge) and per-cell mean, in float64."""

    def __init__(self, frame_shape: tuple[int, ...]):
        c = frame_shape[0]
        self.count, self.mean, self.m2 = 0, np.zeros(c), np.zeros(c)
        self.cell_sum, self.n_frames = np.zeros(frame_shape), 0

    def add(self, block: np.ndarray) -> None:
        b = block.astype(np.float64)
        n = b.shape[0] * b.shape[2] * b.shape[3]
        mean = b.mean(axis=(0, 2, 3))
        m2 = ((b - mean[:, None, None]) ** 2).sum(axis=(0, 2, 3))
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta ** 2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.cell_sum += b.sum(axis=0)
        self.n_frames += len(b)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.mean, np.sqrt(self.m2 / self.count), (self.cell_sum / self.n_frames).astype(np.float32)


def write_prepared(dest: Path, frames: np.ndarray, windows: dict[str, np.ndarray], meta: dict[str, Any], *,
                   times: FrameTimes | None = None) -> Path:
    """Write in-memory float frames (small sources); large sources use PreparedWriter directly."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 4:
        raise ValueError(f"frames must be (N, C, H, W), got shape {frames.shape}")
    with PreparedWriter(dest, len(frames), frames.shape[1], frames.shape[2:]) as writer:
        writer.write(0, frames, source=meta.get("name", Path(dest).name))
        return writer.finish(windows, meta, times=times)


@dataclass
class Batch:
    x: np.ndarray        # (B, in_len, C, H, W) physical units
    y: np.ndarray        # (B, out_len, C, H, W) physical units
    index: np.ndarray    # window start frames


class PreparedDataset:
    """A prepared dataset opened read-only; frames stay memory-mapped."""

    def __init__(self, path: Path):
        self.path = Path(path)
        hint = f"run `svqbench prepare {self.path.name}` to (re)build it"
        try:
            self.meta = json.loads((self.path / "meta.json").read_text())
            self.frames = np.load(self.path / "frames.npy", mmap_mode="r")
            self.climatology = np.load(self.path / "climatology.npy")
            self.splits = {s: np.load(self.path / f"windows_{s}.npy") for s in SPLITS}
        except FileNotFoundError as e:
            raise UserError(f"prepared dataset {self.path} is missing {Path(e.filename).name}; {hint}") from None
        except (ValueError, OSError, json.JSONDecodeError, EOFError) as e:
            raise UserError(f"prepared dataset {self.path} is corrupt ({e}); {hint}") from None
        m = self.meta
        if m.get("format_version") != FORMAT_VERSION or list(self.frames.shape) != m.get("shape"):
            raise UserError(f"prepared dataset {self.path} does not match its meta.json; {hint}")
        self._mapped = self.frames.view(np.ndarray)  # same mapped memory, without np.memmap's per-op overhead
        self.in_len, self.out_len = int(m["in_len"]), int(m["out_len"])
        self.channels = list(m["channels"])
        self.kind = m.get("kind", "weather")
        self.frame_scale = m.get("frame_scale")
        if (self.frames.dtype == np.uint8) != (self.frame_scale is not None):
            raise UserError(f"prepared dataset {self.path}: {self.frames.dtype} frames and frame_scale "
                            f"{self.frame_scale} disagree; {hint}")
        self.mean = np.asarray(m["stats"]["mean"], dtype=np.float32)
        self.std = np.asarray(m["stats"]["std"], dtype=np.float32)
        grid = m.get("grid") or {}
        # 1-D latitude of the rows (regular grid), or 2-D latitude of every cell (rotated/curvilinear
        # grid, meta grid "lat2d"); both None when the grid has no latitude (pixels, metres)
        lat, lat2d = grid.get("lat"), grid.get("lat2d")
        self.lat = None if lat is None else np.asarray(lat, dtype=np.float64)
        self.lat2d = None if lat2d is None else np.asarray(lat2d, dtype=np.float64)
        if (self.lat is not None and self.lat.shape != self.frames.shape[2:3]) or \
                (self.lat2d is not None and self.lat2d.shape != self.frames.shape[2:]):
            raise UserError(f"prepared dataset {self.path}: grid latitudes do not match the frames; {hint}")
        self.digest = m.get("digest")  # content digest of frames + windows (older datasets: None)
        self.mask = None  # (H, W) bool, True = valid cell; None = every cell is valid
        if m.get("mask"):
            try:
                self.mask = np.load(self.path / m["mask"]["file"])
            except (OSError, ValueError) as e:
                raise UserError(f"prepared dataset {self.path}: cannot read its mask ({e}); {hint}") from None
            if self.mask.dtype != bool or self.mask.shape != self.frames.shape[2:]:
                raise UserError(f"prepared dataset {self.path}: mask.npy does not match the frames; {hint}")
        for s, w in self.splits.items():
            if len(w) and (w.min() < 0 or w.max() + self.in_len + self.out_len > len(self.frames)):
                raise UserError(f"prepared dataset {self.path}: split {s} points past the frames; {hint}")

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.frames.shape[2:])

    @functools.cached_property
    def times(self) -> FrameTimes | None:
        """Every frame's real time as prepare stored it (times.npy); None when the dataset stores none
        (no calendar times, or prepared before svqbench stored them)."""
        described = self.meta.get("frame_times")
        if not isinstance(described, dict) or not described.get("file"):
            return None
        hint = f"run `svqbench prepare {self.path.name}` to (re)build it"
        try:
            values = np.load(self.path / Path(described["file"]).name)
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"prepared dataset {self.path}: cannot read its frame times ({e}); {hint}") from None
        if values.shape != (len(self.frames),) or not np.isfinite(values).all():
            raise UserError(f"prepared dataset {self.path}: {described['file']} does not hold one time per frame; "
                            f"{hint}")
        return FrameTimes(values.astype(np.float64), str(described["units"]), str(described["calendar"]))

    def _physical(self, stored: np.ndarray) -> np.ndarray:
        if self.frame_scale is None:
            return stored
        return np.multiply(stored, np.float32(self.frame_scale), dtype=np.float32)

    @functools.cached_property
    def input_frames(self) -> np.ndarray | None:
        """The frames the *inputs* of every window are read from, memory-mapped, when meta["input_frames"]
        names a second frames file (e.g. inputs.npy: noisy observations, docs/synthetic.md); targets
        always come from frames.npy. None when the inputs are frames.npy too."""
        name = self.meta.get("input_frames")
        if not name:
            return None
        hint = f"run `svqbench prepare {self.path.name}` to (re)build it"
        if Path(name).name != name:
            raise UserError(f"prepared dataset {self.path}: input_frames {name!r} must be a file name in the "
                            f"dataset folder; {hint}")
        try:
            inputs = np.load(self.path / name, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"prepared dataset {self.path}: cannot read its input frames {name} ({e}); {hint}") from None
        if inputs.shape != self.frames.shape or inputs.dtype != self.frames.dtype:
            raise UserError(f"prepared dataset {self.path}: {name} {inputs.dtype}{list(inputs.shape)} does not match "
                            f"frames.npy {self.frames.dtype}{list(self.frames.shape)}; {hint}")
        return inputs.view(np.ndarray)

    def window(self, split: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = int(self.splits[split][i])
        source = self.frames if self.input_frames is None else self.input_frames
        return (self._physical(np.asarray(source[s: s + self.in_len])),
                self._physical(np.asarray(self.frames[s + self.in_len: s + self.in_len + self.out_len])))

    def gather(self, split: str, positions: np.ndarray) -> Batch:
        """The windows at `positions` (indices into splits[split]) as one batch: one vectorised read per
        frames file (inputs from `input_frames` when the dataset has them)."""
        idx = np.asarray(self.splits[split][np.asarray(positions, dtype=np.int64)])
        # np.take reads a memmap ~1.5x faster than fancy indexing
        if self.input_frames is None:
            frames = self._physical(np.take(self._mapped, idx[:, None] + np.arange(self.in_len + self.out_len), axis=0))
            return Batch(frames[:, : self.in_len], frames[:, self.in_len:], idx)
        x = np.take(self.input_frames, idx[:, None] + np.arange(self.in_len), axis=0)
        y = np.take(self._mapped, idx[:, None] + np.arange(self.in_len, self.in_len + self.out_len), axis=0)
        return Batch(self._physical(x), self._physical(y), idx)

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[Batch]:
        n = len(self.splits[split])
        order = rng.permutation(n) if shuffle else np.arange(n)
        for i in range(0, len(order), batch_size):
            yield self.gather(split, order[i: i + batch_size])

    def normalise(self, batch: Batch, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model-space (x, y) and the offset that `denormalise` adds back.

        global: z-score with the train mean/std per channel.
        window: subtract each window's input mean per channel and grid cell, divide by the train
        std: the model forecasts anomalies, which survives a climate trend past the train years.
        """
        std = self.std[:, None, None]
        if mode == "global":
            offset = np.empty((len(batch.x), *batch.x.shape[2:]), dtype=np.float32)
            offset[:] = self.mean[:, None, None]
            subtract = self.mean[:, None, None]  # broadcast, no per-sample copy
        elif mode == "window":
            offset = batch.x.mean(axis=1).astype(np.float32)
            subtract = offset[:, None]
        else:
            raise UserError(f"unknown norm {mode!r}; choose one of: global, window")
        # one allocation and two in-place passes per array (the loader's hot path)
        x, y = np.subtract(batch.x, subtract, dtype=np.float32), np.subtract(batch.y, subtract, dtype=np.float32)
        np.divide(x, std, out=x)
        np.divide(y, std, out=y)
        return x, y, offset

    def denormalise(self, pred: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Inverse of `normalise` for (B, T, C, H, W) model outputs."""
        return pred * self.std[:, None, None] + offset[:, None]

    def num_batches(self, split: str, batch_size: int) -> int:
        return -(-len(self.splits[split]) // batch_size)


def open_prepared(name: str, root: str | os.PathLike | None = None, *, auto_prepare: bool = True) -> PreparedDataset:
    path = data_root(root) / name
    if not path.exists() and auto_prepare:
        from svqbench.data import prepare
        prepare(name, root=root)
    if not path.exists():
        raise UserError(f"dataset {name!r} is not prepared under {path.parent}; run `svqbench prepare {name}`")
    return PreparedDataset(path)
