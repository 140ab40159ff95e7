"""Quantizer registry. Every quantizer maps z (N, C, H, W) -> QuantOut(z_q, aux_loss, stats).

`aux_loss` is a scalar tensor (0 when none) added to the forecast loss; `stats` are cheap
per-batch floats. Adding a quantizer = a file + a line in `_MODULES` + a test.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

import torch
from torch import nn

from svqbench.errors import UserError


class QuantOut(NamedTuple):
    z_q: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict


class NoQuantizer(nn.Module):
    def forward(self, z: torch.Tensor) -> QuantOut:
        return QuantOut(z, z.new_zeros(()), {})


def _none(dim: int, **_):
    return NoQuantizer()


# name -> "module:attribute" (imported lazily)
_MODULES: dict[str, str] = {
    "none": "svqbench.quantizers:_none",
    "svq": "svqbench.quantizers.svq:SVQ",
    "svq-raw": "svqbench.quantizers.lista:LISTA",
    "mlp": "svqbench.quantizers.mlp:MLPBottleneck",
    "vq": "svqbench.quantizers.baselines:vq",
    "rvq": "svqbench.quantizers.baselines:rvq",
    "grvq": "svqbench.quantizers.baselines:grvq",
    "mhvq": "svqbench.quantizers.baselines:mhvq",
    "rvq-stochastic": "svqbench.quantizers.baselines:rvq_stochastic",
    "rfsq": "svqbench.quantizers.baselines:rfsq",
    "lfq": "svqbench.quantizers.baselines:lfq",
    "rlfq": "svqbench.quantizers.baselines:rlfq",
}


def default_codebook_size(name: str) -> int | None:
    """The method's own K when neither a recipe nor the command line gives one (Table 11 for the
    baselines), or None where the dataset preset's `codebook_size` (SVQ's K) applies."""
    from svqbench.quantizers import baselines, lista
    if name == "svq-raw":
        return lista.DEFAULT_CODEBOOK_SIZE
    return baselines.default_codebook_size(name) if name in baselines.METHODS else None


def quantizer_names() -> list[str]:
    return sorted(_MODULES)


def build_quantizer(name: str, *, dim: int, **kwargs) -> nn.Module:
    if name not in _MODULES:
        raise UserError(f"unknown quantizer {name!r}; choose one of: {', '.join(quantizer_names())}")
    module, attr = _MODULES[name].split(":")
    return getattr(importlib.import_module(module), attr)(dim=dim, **kwargs)
