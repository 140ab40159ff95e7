"""The codebook-free control: z -> Linear(C, 128) -> ReLU -> Linear(128, C), replacing the latent.

SVQ's output is ReLU(zA + a)(BM) + bM, i.e. exactly this bottleneck with its second layer
factored through a K-code codebook. Training both under the same recipe asks whether SVQ's gain
comes from the codebook (its parameterisation and initialisation) or from the bottleneck itself.
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.errors import UserError
from svqbench.quantizers.base import QuantOut


class MLPBottleneck(nn.Module):
    def __init__(self, *, dim: int, hidden: int = 128):
        super().__init__()
        if hidden < 1:
            raise UserError(f"mlp hidden width must be >= 1, got {hidden}")
        self.proj_in = nn.Linear(dim, hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor) -> QuantOut:
        n, c, h, w = z.shape
        tokens = z.permute(0, 2, 3, 1).reshape(-1, c)
        q = self.proj_out(torch.relu(self.proj_in(tokens)))
        return QuantOut(q.reshape(n, h, w, c).permute(0, 3, 1, 2), z.new_zeros(()), {})
