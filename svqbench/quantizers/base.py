"""The interface every quantizer follows: z (N, C, H, W) -> QuantOut(z_q, aux_loss, stats)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class QuantOut(NamedTuple):
    z_q: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict


class NoQuantizer(nn.Module):
    """`--quantizer none`: the latent passes through unchanged."""

    def __init__(self, *, dim: int):
        super().__init__()

    def forward(self, z: torch.Tensor) -> QuantOut:
        return QuantOut(z, z.new_zeros(()), {})
