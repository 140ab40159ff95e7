"""The prepared-dataset format every source converts to, and the batches training reads from it.

A prepared dataset is a folder a user can open without svqbench:
  frames.npy        float32 (N, C, H, W) in physical units (read memory-mapped)
  windows_<split>.npy  int64 start frame of every window of that split (train / val / test)
  climatology.npy   float32 (C, H, W): mean of the train frames per grid cell
  meta.json         channels, units, grid, times, in/out lengths, split descriptions,
                    train-only normalisation stats, source checksums
A window starting at s is frames[s : s + in_len] -> frames[s + in_len : s + in_len + out_len].
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from svqbench.errors import UserError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def data_root(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("SVQBENCH_DATA", "data"))


def write_prepared(dest: Path, frames: np.ndarray, windows: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write atomically: build in a temp folder beside `dest`, then swap it in.

    Statistics are computed here, from the frames the train windows touch, so no source can
    normalise with anything but train data.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 4:
        raise ValueError(f"frames must be (N, C, H, W), got shape {frames.shape}")
    if not np.isfinite(frames).all():
        raise UserError(f"{meta.get('name', dest.name)}: source data contains NaN or infinite values")
    length = meta["in_len"] + meta["out_len"]
    for split in SPLITS:
        w = np.asarray(windows[split], dtype=np.int64)
        if w.size == 0:
            raise UserError(f"{meta.get('name', dest.name)}: split {split!r} has no windows of {length} frames")
        if w.min() < 0 or w.max() + length > len(frames):
            raise ValueError(f"split {split}: window starts out of range")
    train_frames = np.unique((windows["train"][:, None] + np.arange(length)).ravel())
    train = frames[train_frames]
    meta = dict(meta, format_version=FORMAT_VERSION, shape=list(frames.shape),
                stats={"mean": train.mean(axis=(0, 2, 3), dtype=np.float64).tolist(),
                       "std": train.std(axis=(0, 2, 3), dtype=np.float64).tolist(),
                       "computed_on": "train"},
                windows={s: int(len(windows[s])) for s in SPLITS})
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        np.save(tmp / "frames.npy", frames)
        np.save(tmp / "climatology.npy", train.mean(axis=0, dtype=np.float64).astype(np.float32))
        for split in SPLITS:
            np.save(tmp / f"windows_{split}.npy", np.asarray(windows[split], dtype=np.int64))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


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
        self.in_len, self.out_len = int(m["in_len"]), int(m["out_len"])
        self.channels = list(m["channels"])
        self.mean = np.asarray(m["stats"]["mean"], dtype=np.float32)
        self.std = np.asarray(m["stats"]["std"], dtype=np.float32)
        lat = (m.get("grid") or {}).get("lat")
        self.lat = None if lat is None else np.asarray(lat, dtype=np.float64)
        for s, w in self.splits.items():
            if len(w) and (w.min() < 0 or w.max() + self.in_len + self.out_len > len(self.frames)):
                raise UserError(f"prepared dataset {self.path}: split {s} points past the frames; {hint}")

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.frames.shape[2:])

    def window(self, split: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = int(self.splits[split][i])
        return (np.asarray(self.frames[s: s + self.in_len]),
                np.asarray(self.frames[s + self.in_len: s + self.in_len + self.out_len]))

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[Batch]:
        starts = self.splits[split]
        order = rng.permutation(len(starts)) if shuffle else np.arange(len(starts))
        offsets = np.arange(self.in_len + self.out_len)
        for i in range(0, len(order), batch_size):
            idx = starts[order[i: i + batch_size]]
            frames = self.frames[idx[:, None] + offsets]  # one fancy-indexed read per batch
            yield Batch(frames[:, : self.in_len], frames[:, self.in_len:], idx)

    def normalise(self, batch: Batch, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model-space (x, y) and the offset that `denormalise` adds back.

        global: z-score with the train mean/std per channel.
        window: subtract each window's input mean per channel and grid cell, divide by the train
        std: the model forecasts anomalies, which survives a climate trend past the train years.
        """
        std = self.std[:, None, None]
        if mode == "global":
            offset = np.broadcast_to(self.mean[:, None, None], batch.x.shape[2:])[None].repeat(len(batch.x), 0)
        elif mode == "window":
            offset = batch.x.mean(axis=1)
        else:
            raise UserError(f"unknown norm {mode!r}; choose one of: global, window")
        offset = offset.astype(np.float32)
        return (batch.x - offset[:, None]) / std, (batch.y - offset[:, None]) / std, offset

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
