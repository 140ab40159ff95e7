"""The one way svqbench writes a file: into a temp file beside it, fsync, rename over it.

A crash, a kill or a full disk leaves either the old file or the new one, never half of one; a
failure is one line, `cannot write PATH: reason` (CannotWrite, a UserError). Parent folders of an
output are created. Temp files are named `.NAME.tmp-PID`: a SIGKILL leaves one behind, and the next
write of NAME removes it once that PID is no longer running (`remove_stale_temps`).

    write_json(path, obj)        write_text(path, text)        write_csv(path, rows)
    save_torch(path, obj)        save_figure(path, fig)        atomic_write(path, fill)
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from svqbench.errors import UserError


class CannotWrite(UserError):
    """An output could not be written (disk full, read-only folder, a file where a folder is expected)."""

    def __init__(self, path: Path, error: OSError | str):
        # an OSError without errno (numpy's short write on a full disk: "N requested and M written") keeps its text
        reason = error if isinstance(error, str) else (error.strerror or str(error) or type(error).__name__)
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason, self.error = path, reason, error


def ensure_dir(path: Path) -> Path:
    """Create a folder (and its parents) or fail with one line when something is in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CannotWrite(path, "a file is in the way of this folder") from None
    except OSError as e:
        raise CannotWrite(path, e) from None
    return path


def stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """The `.NAME.tmp-PID` / `.NAME.old-PID` files and folders in `folder` (of `name` only, when given)
    that a killed process left: those whose PID is no longer running. A PID that is alive, or that
    this process may not signal, keeps its temp (it may be a writer at work)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    pattern = re.compile(rf"\.{re.escape(name) if name else '.+'}\.(?:tmp|old)-(\d+)")
    out = []
    for p in entries:
        m = pattern.fullmatch(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # still running
        except ProcessLookupError:
            out.append(p)
        except (PermissionError, OverflowError):
            continue
    return out


def remove_stale_temps(folder: Path, name: str | None = None) -> None:
    """Delete what `stale_temps` finds."""
    for p in stale_temps(folder, name):
        with contextlib.suppress(OSError):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, fill: Callable[[IO], None], *, binary: bool = True) -> Path:
    """Call `fill(handle)` on a temp file next to `path`, fsync it and rename it over `path`."""
    path = Path(path)
    if path.is_dir():
        raise CannotWrite(path, "it is a folder; give a file name")
    ensure_dir(path.parent)
    remove_stale_temps(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # per process: concurrent writers never share one
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause = _os_error(e)
        if cause is not None:
            raise CannotWrite(path, cause) from None
        raise
    return path


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write (torch.save wraps it in a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, default=str))


def write_csv(path, rows: list[dict]) -> Path:
    def fill(f):
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write(path, fill, binary=False)


def write_frame(path, table, **to_csv) -> Path:
    """A pandas DataFrame as CSV."""
    return atomic_write(path, lambda f: table.to_csv(f, index=False, **to_csv), binary=False)


def save_torch(path, obj: Any) -> Path:
    import torch
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_figure(path, fig, **savefig) -> Path:
    """A matplotlib figure as PNG; the figure is closed."""
    import matplotlib.pyplot as plt
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", **savefig))
    finally:
        plt.close(fig)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a path (numpy, netCDF): yields a temp path, renamed over `path` on success."""
    path = Path(path)
    ensure_dir(path.parent)
    remove_stale_temps(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CannotWrite(path, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
