"""Quantizer registry. Every quantizer maps z (N, C, H, W) -> QuantOut(z_q, aux_loss, stats).

A quantizer is a class (or factory) with keyword-only arguments `dim` plus its options. Its entry
here says, without importing it (so that `svqbench run --print-config` needs no torch): `reads`,
the RunConfig fields it takes and the keyword argument each becomes (e.g. {"svq_hidden": "hidden"});
`codebook_size`, the method's own K (Table 11) where the dataset preset's K (SVQ's) does not apply;
and `check`, which refuses bad option values before a run folder exists. The config knows no
quantizer by name: `quantizer_kwargs(cfg)` reads a quantizer's fields for it, and a field a quantizer
does not read is refused when switched on for it. tests/test_quantizers.py checks every entry
against its class's signature.

Adding a quantizer = one file + one `register_quantizer` line (or an entry in `_REGISTRY`) + a test.
Modules are imported on first use, so `svqbench --help` stays fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from svqbench.errors import UserError
from svqbench.quantizers import methods


@dataclass(frozen=True)
class QuantizerSpec:
    target: str | Callable[..., Any]      # "module:attribute" (imported lazily) or the constructor itself
    options: dict[str, Any] = field(default_factory=dict)  # fixed keyword arguments, e.g. a baseline's method
    reads: dict[str, str] = field(default_factory=dict)    # RunConfig field -> keyword argument
    codebook_size: int | None = None      # the method's own K; None: the dataset preset's (SVQ's K)
    check: Callable[..., None] | None = None  # check(**options, **read values), raises UserError

    def constructor(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


def _baseline(method: str) -> QuantizerSpec:
    return QuantizerSpec("svqbench.quantizers.baselines:LibraryQuantizer", {"method": method},
                         reads={"codebook_size": "codebook_size"}, codebook_size=methods.default_codebook_size(method),
                         check=methods.check_codebook_size)


_CODEBOOK = {"codebook_size": "codebook_size", "codebook_init": "init", "frozen_codebook": "frozen"}
_REGISTRY: dict[str, QuantizerSpec] = {
    "none": QuantizerSpec("svqbench.quantizers.base:NoQuantizer"),
    "svq": QuantizerSpec("svqbench.quantizers.svq:SVQ", reads={
        **_CODEBOOK, "svq_hidden": "hidden", "svq_impl": "impl", "svq_one_layer": "one_layer",
        "svq_post_relu": "post_relu", "svq_frozen_projection": "frozen_projection", "svq_hidden_cap": "cap_hidden",
        "svq_hid_relu": "hid_relu"}),
    # K^2 = 10^8 parameters at SVQ's K = 10000 would not fit a useful budget: LISTA's own K is 1024
    "svq-raw": QuantizerSpec("svqbench.quantizers.lista:LISTA", reads=_CODEBOOK, codebook_size=1024),
    "mlp": QuantizerSpec("svqbench.quantizers.mlp:MLPBottleneck", reads={"svq_hidden": "hidden"}),
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


def register_quantizer(name: str, target: str | Callable[..., Any], *, reads: dict[str, str] | None = None,
                       codebook_size: int | None = None, check: Callable[..., None] | None = None,
                       **options: Any) -> None:
    """Make `--quantizer NAME` build `target(dim=..., **options, **the config fields it reads)`."""
    _REGISTRY[name] = QuantizerSpec(target, dict(options), dict(reads or {}), codebook_size, check)


def quantizer_names() -> list[str]:
    return sorted(_REGISTRY)


def quantizer_spec(name: str) -> QuantizerSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown quantizer {name!r}; choose one of: {', '.join(quantizer_names())}")
    return _REGISTRY[name]


def quantizer_kwargs(cfg) -> dict[str, Any]:
    """The keyword arguments the configured quantizer takes from `cfg`."""
    return {kw: getattr(cfg, name) for name, kw in quantizer_spec(cfg.quantizer).reads.items()}


def default_codebook_size(name: str) -> int | None:
    """The method's own K when neither a recipe nor the command line gives one (Table 11 for the
    baselines), or None where the dataset preset's `codebook_size` (SVQ's K) applies."""
    return quantizer_spec(name).codebook_size


def quantizer_fields() -> dict[str, list[str]]:
    """Every RunConfig field some quantizer reads -> the quantizers that read it."""
    readers: dict[str, list[str]] = {}
    for name in quantizer_names():
        for f in _REGISTRY[name].reads:
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
