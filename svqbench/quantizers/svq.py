"""Sparse vector quantization (SVQ): regression weights W = MLP(z) over a codebook M; z_q = W @ M.

With no activation after the second layer, W @ M = ReLU(zA + a) (B M) + b M, so the default
`factorized` path never builds the (N x K) weight tensor: its cost does not grow with K beyond
one (128 x K) @ (K x C) product per step. The `dense` path is the paper's formulation, kept as a
reference and used automatically when an option breaks the identity (post-ReLU weights).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from svqbench.errors import UserError
from svqbench.quantizers import QuantOut

INITS = ("normal", "kaiming_uniform", "xavier", "sparse", "trunc_normal", "orthogonal")
IMPLS = ("factorized", "dense")


def init_codebook(weight: torch.Tensor, method: str) -> None:
    if method == "normal":
        nn.init.normal_(weight)
    elif method == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # torch's nn.Linear default
    elif method == "xavier":
        nn.init.xavier_uniform_(weight)
    elif method == "sparse":
        nn.init.sparse_(weight, sparsity=0.9)
    elif method == "trunc_normal":
        nn.init.trunc_normal_(weight, std=0.02)
    elif method == "orthogonal":
        nn.init.orthogonal_(weight)
    else:
        raise UserError(f"unknown codebook init {method!r}; choose one of: {', '.join(INITS)}")


class SVQ(nn.Module):
    def __init__(self, *, dim: int, codebook_size: int = 10000, hidden: int = 128, frozen: bool = False,
                 init: str = "kaiming_uniform", impl: str = "factorized"):
        super().__init__()
        if impl not in IMPLS:
            raise UserError(f"unknown SVQ implementation {impl!r}; choose one of: {', '.join(IMPLS)}")
        if codebook_size < 1 or hidden < 1:
            raise UserError(f"codebook size and hidden width must be >= 1, got {codebook_size}, {hidden}")
        self.impl = impl
        self.proj_in = nn.Linear(dim, hidden)            # A, a
        self.proj_out = nn.Linear(hidden, codebook_size)  # B, b
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim), requires_grad=not frozen)  # M
        init_codebook(self.codebook.data, init)

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Regression weights (N, K) for tokens (N, C): for analysis and the dense path."""
        return self.proj_out(torch.relu(self.proj_in(tokens)))

    def forward(self, z: torch.Tensor) -> QuantOut:
        n, c, h, w = z.shape
        tokens = z.permute(0, 2, 3, 1).reshape(-1, c)
        if self.impl == "dense":
            q = self.weights(tokens) @ self.codebook
        else:
            bm = self.proj_out.weight.t() @ self.codebook  # (hidden, C)
            bias = self.proj_out.bias @ self.codebook      # (C,)
            q = torch.addmm(bias, torch.relu(self.proj_in(tokens)), bm)
        z_q = q.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return QuantOut(z_q, z.new_zeros(()), {})
