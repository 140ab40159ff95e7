"""Translator registry: name -> build(*, channels_in, hidden, depth, input_resolution, drop_path, mlp_ratio).

Every translator maps (B, T*C, H, W) -> (B, T*C, H, W). Every `build` takes exactly these keyword
arguments (a family ignores the ones it has no use for, e.g. IncepU's drop_path) and nothing else,
so a misspelt option is a TypeError, never silently dropped. Adding one = a file + a line in `_MODULES`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from svqbench.errors import UserError

# name -> "module:attribute"; modules are imported on first use so `svqbench --help` stays fast.
_MODULES: dict[str, str] = {
    "gsta": "svqbench.models.translators.gsta:build",
    "incepu": "svqbench.models.translators.incepu:build",
    "convmixer": "svqbench.models.translators.convmixer:build",
    "convnext": "svqbench.models.translators.convnext:build",
    "hornet": "svqbench.models.translators.hornet:build",
    "moganet": "svqbench.models.translators.moganet:build",
    "vit": "svqbench.models.translators.vit:build",
    "swin": "svqbench.models.translators.swin:build",
    "uniformer": "svqbench.models.translators.uniformer:build",
    "poolformer": "svqbench.models.translators.poolformer:build",
    "van": "svqbench.models.translators.van:build",
    "mlpmixer": "svqbench.models.translators.mlpmixer:build",
    "tau": "svqbench.models.translators.tau:build",
}


def translator_names() -> list[str]:
    return sorted(_MODULES)


def build_translator(name: str, **kwargs) -> Any:
    if name not in _MODULES:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(translator_names())}")
    module, attr = _MODULES[name].split(":")
    constructor: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return constructor(**kwargs)
