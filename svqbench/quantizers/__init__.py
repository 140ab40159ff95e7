"""Quantizer registry. Every quantizer maps z (N, C, H, W) -> QuantOut(z_q, aux_loss, stats).

A quantizer is a class (or factory) with keyword-only arguments `dim` plus its options, and a
class attribute `config_fields` that maps the RunConfig fields it reads to its keyword arguments
(e.g. {"codebook_size": "codebook_size", "svq_hidden": "hidden"}). The config knows no quantizer
by name: `quantizer_kwargs(cfg)` reads a quantizer's fields for it, and a field a quantizer does not
read is refused when switched on for it. An optional `own_codebook_size(**options)` gives the
method's own K (Table 11) where the dataset preset's K (SVQ's) does not apply, and an optional
`check_options(**options)` refuses bad values before a run folder exists.

Adding a quantizer = one file + one `register_quantizer` line (or an entry in `_REGISTRY`) + a test.
Modules are imported on first use, so `svqbench --help` stays fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from svqbench.errors import UserError


@dataclass(frozen=True)
class QuantizerSpec:
    target: str | Callable[..., Any]      # "module:attribute" (imported lazily) or the constructor itself
    options: dict[str, Any] = field(default_factory=dict)  # fixed keyword arguments, e.g. a baseline's method

    def constructor(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)

    def reads(self) -> dict[str, str]:
        """RunConfig field -> keyword argument, for the fields this quantizer reads."""
        return dict(getattr(self.constructor(), "config_fields", {}))

    def check(self, kwargs: dict[str, Any]) -> None:
        """The quantizer's own check of its options (before anything is built), if it has one."""
        check = getattr(self.constructor(), "check_options", None)
        if check is not None:
            check(**self.options, **kwargs)

    def own_codebook_size(self) -> int | None:
        own = getattr(self.constructor(), "own_codebook_size", None)
        return None if own is None else own(**self.options)


def _baseline(method: str) -> QuantizerSpec:
    return QuantizerSpec("svqbench.quantizers.baselines:LibraryQuantizer", {"method": method})


_REGISTRY: dict[str, QuantizerSpec] = {
    "none": QuantizerSpec("svqbench.quantizers.base:NoQuantizer"),
    "svq": QuantizerSpec("svqbench.quantizers.svq:SVQ"),
    "svq-raw": QuantizerSpec("svqbench.quantizers.lista:LISTA"),
    "mlp": QuantizerSpec("svqbench.quantizers.mlp:MLPBottleneck"),
    # the paper's hard-VQ baselines (vector-quantize-pytorch), bound to their names
    "vq": _baseline("vq"),
    "rvq": _baseline("rvq"),
    "grvq": _baseline("grvq"),
    "mhvq": _baseline("mhvq"),
    "rvq-stochastic": _baseline("rvq-stochastic"),
    "rfsq": _baseline("rfsq"),
    "lfq": _baseline("lfq"),
    "rlfq": _baseline("rlfq"),
}


def register_quantizer(name: str, target: str | Callable[..., Any], **options: Any) -> None:
    """Make `--quantizer NAME` build `target(dim=..., **options, **its config fields)`."""
    _REGISTRY[name] = QuantizerSpec(target, dict(options))


def quantizer_names() -> list[str]:
    return sorted(_REGISTRY)


def quantizer_spec(name: str) -> QuantizerSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown quantizer {name!r}; choose one of: {', '.join(quantizer_names())}")
    return _REGISTRY[name]


def quantizer_kwargs(cfg) -> dict[str, Any]:
    """The keyword arguments the configured quantizer takes from `cfg`."""
    return {kw: getattr(cfg, name) for name, kw in quantizer_spec(cfg.quantizer).reads().items()}


def default_codebook_size(name: str) -> int | None:
    """The method's own K when neither a recipe nor the command line gives one (Table 11 for the
    baselines), or None where the dataset preset's `codebook_size` (SVQ's K) applies."""
    return quantizer_spec(name).own_codebook_size()


def quantizer_fields() -> dict[str, list[str]]:
    """Every RunConfig field some quantizer reads -> the quantizers that read it."""
    readers: dict[str, list[str]] = {}
    for name in quantizer_names():
        for f in _REGISTRY[name].reads():
            readers.setdefault(f, []).append(name)
    return readers


def build_quantizer(name: str, *, dim: int, **kwargs):
    spec = quantizer_spec(name)
    return spec.constructor()(dim=dim, **spec.options, **kwargs)


def __getattr__(name: str):  # QuantOut and NoQuantizer import torch: only when asked for
    if name in ("QuantOut", "NoQuantizer"):
        from svqbench.quantizers import base
        return getattr(base, name)
    raise AttributeError(name)
