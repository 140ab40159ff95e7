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
}


def source_names() -> list[str]:
    return sorted(_SOURCES)


def prepare(name: str, root: str | os.PathLike | None = None, **options) -> Path:
    from svqbench.data.prepared import data_root
    if name not in _SOURCES:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(source_names())}")
    module, attr = _SOURCES[name].split(":")
    return getattr(importlib.import_module(module), attr)(data_root(root) / name, **options)
