"""Dataset sources: name -> function that writes a prepared dataset (see prepared.py).

Adding a source = a module with `prepare(dest, **options)` + a line in `_SOURCES`.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from svqbench.errors import UserError

_SOURCES: dict[str, str] = {
    "embedded": "svqbench.data.embedded:prepare_a1b",
    "embedded-e1": "svqbench.data.embedded:prepare_e1",
    "weatherbench-s-t2m": "svqbench.data.weatherbench:prepare_s_t2m",
    "weatherbench-s-r": "svqbench.data.weatherbench:prepare_s_r",
    "weatherbench-s-uv10": "svqbench.data.weatherbench:prepare_s_uv10",
    "weatherbench-s-tcc": "svqbench.data.weatherbench:prepare_s_tcc",
    "weatherbench-m": "svqbench.data.weatherbench:prepare_m",
    "taxibj": "svqbench.data.taxibj:prepare",
    "kth": "svqbench.data.video:prepare_kth",
    "kitticaltech": "svqbench.data.video:prepare_kitticaltech",
    "human36m": "svqbench.data.video:prepare_human36m",
}
# Names that are not one dataset: a group of them, or a converter whose output the user names.
_CONVERTERS: dict[str, str] = {
    "weatherbench-s": "svqbench.data.weatherbench:prepare_s_all",
    "netcdf": "svqbench.data.netcdf:prepare",
}


def source_names() -> list[str]:
    return sorted(_SOURCES)


def prepare(name: str, root: str | os.PathLike | None = None, **options) -> Path | list[Path]:
    """Prepare dataset `name` under `root`; a group (weatherbench-s) returns every path it wrote."""
    import inspect

    from svqbench.data.prepared import data_root
    target = _SOURCES.get(name) or _CONVERTERS.get(name)
    if target is None:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted({**_SOURCES, **_CONVERTERS}))}")
    module, attr = target.split(":")
    func = getattr(importlib.import_module(module), attr)
    accepted = inspect.signature(func).parameters
    extra = sorted(k for k in options if k not in accepted or k in ("dest", "task_name"))
    if extra:
        flag = {"from_paths": "--from", "output_name": "--name"}
        flags = ", ".join(flag.get(k, "--" + k.replace("_", "-")) for k in extra)
        raise UserError(f"option(s) {flags} do not apply to dataset {name!r}")
    return func(data_root(root) / name, **options)
