"""Checkpoint files of a run folder, each with a content digest.

checkpoint.pt / checkpoint.prev.pt  resume state (model, optimiser, scheduler, scaler, RNGs, loop
                                    state); the newest good one is used, a corrupt one skipped
best.pt                             the best-by-validation weights, evaluated at the end

A digest (sha256 over the tensor bytes and plain values) catches a flipped bit that torch.load
would read without complaint. Writes go through `svqbench.atomic`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import torch

from svqbench.atomic import CannotWrite, save_torch
from svqbench.errors import UserError

CHECKPOINT, PREVIOUS_CHECKPOINT, BEST = "checkpoint.pt", "checkpoint.prev.pt", "best.pt"
CHECKPOINT_FORMAT = "svqbench-checkpoint-1"
BEST_FORMAT = "svqbench-best-1"


def state_digest(obj: Any) -> str:
    """sha256 over the content of a checkpoint payload (tensor bytes, dtypes, shapes, plain values)."""
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=repr):
                feed(k)
                feed(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                feed(v)
            h.update(b"]")
        else:
            h.update(f"{type(o).__name__}:{o!r};".encode())
    feed(obj)
    return h.hexdigest()


def _sealed(payload: dict, fmt: str) -> dict:
    payload = dict(payload, format=fmt)
    payload["digest"] = state_digest({k: v for k, v in payload.items() if k != "digest"})
    return payload


def _load(path: Path, fmt: str) -> dict:
    """Load and verify one file; ValueError with the reason when it is unusable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, UnicodeDecodeError...
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise ValueError(f"unreadable ({type(e).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError("not an svqbench checkpoint")
    if payload.get("digest") != state_digest({k: v for k, v in payload.items() if k != "digest"}):
        raise ValueError("content digest mismatch (corrupt)")
    return payload


# ---------------------------------------------------------------- resume state

NEXT_CHECKPOINT = CHECKPOINT + ".next"  # the new checkpoint.pt, complete on disk before the two renames


def check_checkpoint_files(run_dir: Path) -> None:
    """Refuse, before training, a run folder where a checkpoint file is something else (a folder a
    user or a broken copy put there): resuming would fall back past it, and the first save could not
    replace it. The run folder is the user's: nothing in it is moved or deleted for them."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT, NEXT_CHECKPOINT, BEST):
        path = Path(run_dir) / name
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is a folder, not a checkpoint file; svqbench writes its checkpoints there: "
                            f"move it out of the run folder, then resume")


def save_checkpoint(payload: dict, run_dir: Path) -> Path:
    """Write checkpoint.pt atomically and keep the one before it as checkpoint.prev.pt. A failure is
    one line (CannotWrite) that keeps the last good checkpoint and leaves no temp file behind."""
    import os
    path = Path(run_dir) / CHECKPOINT
    previous, tmp = path.with_name(PREVIOUS_CHECKPOINT), path.with_name(NEXT_CHECKPOINT)
    for target in (path, previous):  # a folder in the way: refuse before writing anything
        if target.exists() and not target.is_file():
            raise CannotWrite(target, "a folder is in the way of this checkpoint file; move it out of the run folder")
    save_torch(tmp, _sealed(payload, CHECKPOINT_FORMAT))
    try:
        if path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CannotWrite(path, e) from None
    return path


def read_checkpoint(path: Path) -> dict:
    return _load(path, CHECKPOINT_FORMAT)


def load_latest_checkpoint(run_dir: Path, note: Callable[[str], None]) -> tuple[dict, str] | None:
    """The newest good checkpoint of a run and its file name; corrupt files are reported via
    `note` and skipped (the previous one is used). None when there is no usable checkpoint."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = Path(run_dir) / name
        try:
            return read_checkpoint(path), name
        except FileNotFoundError:
            continue
        except ValueError as e:
            note(f"checkpoint {path} is {e}; falling back to the previous one")
    return None


def has_checkpoint(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).is_file() for name in (CHECKPOINT, PREVIOUS_CHECKPOINT))


# ---------------------------------------------------------------- best weights

def save_best(run_dir: Path, *, model_state: dict, epoch: int, val_loss: float, config: dict) -> Path:
    return save_torch(Path(run_dir) / BEST, _sealed({"model": model_state, "epoch": epoch, "val_loss": val_loss,
                                                     "config": config}, BEST_FORMAT))


def read_weights(path: Path) -> dict:
    """A best.pt (digest checked) or a resume checkpoint, as {"model": state, "epoch", "config", ...};
    one-line UserError naming the file when it is missing, unreadable or corrupt.

    best.pt files written before digests existed (no "format" key) are accepted as they are."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; the run has no best weights (did it finish an epoch?)") from None
    except PermissionError:
        raise UserError(f"{path} cannot be read: permission denied") from None
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: truncated or corrupt); "
                        "re-run or resume the run to write it again") from None
    if not isinstance(raw, dict) or "model" not in raw:
        raise UserError(f"{path} holds no model state; pass a checkpoint written by svqbench (best.pt)")
    fmt = raw.get("format")
    if fmt in (BEST_FORMAT, CHECKPOINT_FORMAT):
        if raw.get("digest") != state_digest({k: v for k, v in raw.items() if k != "digest"}):
            raise UserError(f"{path} is corrupt (content digest mismatch); re-run or resume the run to write it again")
    return raw
