"""Dataset registry: name -> DatasetSpec, declared once in the dataset's own module.

A spec says how the dataset is prepared, its presets at both scales, the shape the paper used
(so `svqbench profile` works before `prepare`) and its help line. The CLI, `config.resolve`
and `profile` read it. Adding a dataset = one module with a `DatasetSpec` + one line in
`_DATASETS` + its tests. Modules are imported on first use.
"""
from __future__ import annotations

import errno
import importlib
import inspect
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from svqbench.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    prepare: Callable[..., Any]              # prepare(dest, **options) -> Path
    presets: dict[str, dict[str, Any]]       # scale ("paper", "quick") -> RunConfig overrides
    shape: Any                               # svqbench.models.ForecastShape of the paper's task
    help: str                                # one line for `svqbench datasets` / `prepare --help`


# name -> "module:attribute" of its DatasetSpec
_DATASETS: dict[str, str] = {
    "embedded": "svqbench.data.embedded:EMBEDDED",
    "embedded-e1": "svqbench.data.embedded:EMBEDDED_E1",
    "weatherbench-s-t2m": "svqbench.data.weatherbench:S_T2M",
    "weatherbench-s-r": "svqbench.data.weatherbench:S_R",
    "weatherbench-s-uv10": "svqbench.data.weatherbench:S_UV10",
    "weatherbench-s-tcc": "svqbench.data.weatherbench:S_TCC",
    "weatherbench-m": "svqbench.data.weatherbench:M",
    "taxibj": "svqbench.data.taxibj:TAXIBJ",
    "kth": "svqbench.data.video:KTH",
    "kitticaltech": "svqbench.data.video:KITTICALTECH",
    "human36m": "svqbench.data.video:HUMAN36M",
    "synthetic-advection": "svqbench.data.synthetic:SYNTHETIC_ADVECTION",
}
# Names that are not one dataset: a group of them, or a converter whose output the user names.
_CONVERTERS: dict[str, str] = {
    "weatherbench-s": "svqbench.data.weatherbench:prepare_s_all",
    "netcdf": "svqbench.data.netcdf:prepare",
}


def _load(target: str) -> Any:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def prepare_names() -> list[str]:
    """What `svqbench prepare NAME` accepts: every dataset, the groups and the converters."""
    return sorted({*_DATASETS, *_CONVERTERS})


def reserved_names() -> set[str]:
    """Names a user's own dataset may not take."""
    return set(_DATASETS) | set(_CONVERTERS)


def dataset_spec(name: str) -> DatasetSpec:
    if name not in _DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
    return _load(_DATASETS[name])


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Where prepared datasets live: `path`, else $SVQBENCH_DATA, else ./data."""
    return Path(path or os.environ.get("SVQBENCH_DATA", "data"))


def prepare(name: str, root: str | os.PathLike | None = None, **options) -> Path | list[Path]:
    """Prepare dataset `name` under `root`; a group (weatherbench-s) returns every path it wrote."""
    if name in _DATASETS:
        func = dataset_spec(name).prepare
    elif name in _CONVERTERS:
        func = _load(_CONVERTERS[name])
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(prepare_names())}")
    accepted = inspect.signature(func).parameters
    if "progress" not in accepted:  # --quiet means nothing to a source without a progress bar
        options.pop("progress", None)
    extra = sorted(k for k in options if k not in accepted or k in ("dest", "task_name"))
    if extra:
        flag = {"from_paths": "--from", "output_name": "--name"}
        flags = ", ".join(flag.get(k, "--" + k.replace("_", "-")) for k in extra)
        raise UserError(f"option(s) {flags} do not apply to dataset {name!r}")
    try:
        return func(data_root(root) / name, **options)
    except (UserError, OSError) as e:  # CannotWrite (a UserError) or a raw OSError from a source's own writer
        out_of_space = _out_of_space(e, data_root(root))
        if out_of_space is None:
            raise
        raise out_of_space from None


# a full disk, a full quota, or a file-size limit (ulimit -f)
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _out_of_space(error: BaseException, root: Path) -> UserError | None:
    """One line for a prepare that ran out of space: the dataset folder it was writing, the reason and
    the space left there. The writer has removed its temp folder (PreparedWriter), so nothing
    half-written is left and an earlier dataset of that name is untouched."""
    from svqbench.atomic import CannotWrite
    cause = error.error if isinstance(error, CannotWrite) else error
    # a failed write without errno is numpy's short write ("N requested and M written"): a full disk
    short_write = isinstance(error, CannotWrite) and isinstance(cause, OSError) and cause.errno is None
    if not isinstance(cause, OSError) or not (cause.errno in _NO_SPACE or short_write):
        return None
    path = Path(error.path if isinstance(error, CannotWrite) else (cause.filename or root))
    for i, part in enumerate(path.parts):  # .NAME.tmp-PID: the temp folder of dataset NAME
        temp = re.fullmatch(r"\.(.+)\.tmp-\d+", part)
        if temp:
            path = Path(*path.parts[:i], temp.group(1))
            break
    reason = error.reason if isinstance(error, CannotWrite) else (cause.strerror or str(cause) or "OSError")
    if cause.errno == errno.EFBIG:
        reason += " (a file-size limit: ulimit -f, or the file system's largest file)"
    where = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(where).free
        left = f"{free / 1e6:.1f} MB" if free < 1e9 else f"{free / 1e9:.1f} GB"
        left = f"; {left} free now in {where}"
    except OSError:
        left = ""
    return UserError(f"cannot write {path}: {reason}{left}; free disk space or prepare under another --data-dir")
