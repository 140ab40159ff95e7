"""A quantizer that lives outside svqbench: one file, registered with one line (see test_quantizer_registry)."""
from __future__ import annotations

import torch
from torch import nn

from svqbench.quantizers.base import QuantOut


class RoundToGrid(nn.Module):
    """Rounds each latent value to a grid of step 1/levels (straight-through gradient); reads
    `codebook_size` as its number of levels per unit (registered with reads={"codebook_size": "levels"})."""

    def __init__(self, *, dim: int, levels: int):
        super().__init__()
        self.levels = levels
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, z: torch.Tensor) -> QuantOut:
        s = self.scale.view(1, -1, 1, 1)
        rounded = torch.round(z * s * self.levels) / self.levels / s
        return QuantOut(z + (rounded - z).detach(), (self.scale - 1).pow(2).sum(), {})
