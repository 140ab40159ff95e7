"""SVQ-raw (paper Table 4): sparse coding of each latent vector by LISTA, as in SC-VAE.

Sparse code s (1 x K) of a token x (1 x C) over a dictionary M (K x C), min ||x - sM||^2/2 + lam|s|_1,
by ISTA unrolled for `iterations` steps (Gregor & LeCun 2010) with learned matrices:

    s_0 = soft(x W, theta),   s_{t+1} = soft(x W + s_t S, theta),   z_q = s_T M

W (C x K) and S (K x K) start at ISTA's values for the initial dictionary (W = M^T / L,
S = I - M M^T / L, L = ||M||_2^2) and are then learned, as is the per-code threshold theta
(starting at lam / L) and, unless frozen, M. The K x K matrix S makes parameters, memory and
compute grow quadratically with K: the reason the paper replaces this with SVQ. Like SVQ there is
no auxiliary loss; everything is trained end to end by the forecast loss.
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.errors import UserError
from svqbench.quantizers.base import QuantOut
from svqbench.quantizers.svq import init_codebook

DEFAULT_CODEBOOK_SIZE = 1024  # K^2 = 10^8 parameters at SVQ's K = 10000 would not fit a useful budget


def soft_threshold(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.relu(x.abs() - theta)


class LISTA(nn.Module):
    def __init__(self, *, dim: int, codebook_size: int = DEFAULT_CODEBOOK_SIZE, iterations: int = 5,
                 sparsity: float = 0.1, init: str = "kaiming_uniform", frozen: bool = False):
        super().__init__()
        if codebook_size < 1 or iterations < 0 or sparsity < 0:
            raise UserError(f"svq-raw needs codebook size >= 1, iterations >= 0 and sparsity >= 0; got "
                            f"{codebook_size}, {iterations}, {sparsity}")
        self.iterations = iterations
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim), requires_grad=not frozen)  # M
        init_codebook(self.codebook.data, init)
        with torch.no_grad():
            m = self.codebook.data
            lipschitz = torch.linalg.matrix_norm(m, ord=2) ** 2
            self.encode = nn.Parameter(m.t() / lipschitz)                                      # W
            self.mutual = nn.Parameter(torch.eye(codebook_size) - m @ m.t() / lipschitz)      # S
            self.theta = nn.Parameter(torch.full((codebook_size,), sparsity / float(lipschitz)))

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def describe(self) -> dict:
        return {"iterations": self.iterations, "codebook_size": self.codebook_size}

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """The sparse codes (N, K) of tokens (N, C)."""
        b = tokens @ self.encode
        theta = self.theta.abs()
        s = soft_threshold(b, theta)
        for _ in range(self.iterations):
            s = soft_threshold(torch.addmm(b, s, self.mutual), theta)
        return s

    def forward(self, z: torch.Tensor) -> QuantOut:
        n, c, h, w = z.shape
        tokens = z.permute(0, 2, 3, 1).reshape(-1, c)
        q = self.weights(tokens) @ self.codebook
        return QuantOut(q.reshape(n, h, w, c).permute(0, 3, 1, 2), z.new_zeros(()), {})
