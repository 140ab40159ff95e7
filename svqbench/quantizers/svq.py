"""Sparse vector quantization (SVQ): regression weights W = MLP(z) over a codebook M; z_q = W @ M.

With no activation after the second layer, W @ M = ReLU(zA + a) (B M) + b M, so the default
`factorized` path never builds the (N x K) weight tensor: its cost does not grow with K beyond
one (128 x K) @ (K x C) product per step. The `dense` path is the paper's formulation, kept as a
reference and used automatically when an option breaks the identity (post-ReLU weights).

Ablation options (paper Tables 6, 8, 15): a one-layer projection (W = zA + a, also factorizable:
Q = z (A M) + a M), any hidden width (bucket shape: hidden 1280 with K 1280), post-ReLU weights
(W = ReLU(MLP(z)); dense only), a frozen codebook, a frozen projection, six codebook inits.
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.config import CHOICES
from svqbench.errors import UserError
from svqbench.quantizers.base import QuantOut

INITS = CHOICES["codebook_init"]
IMPLS = CHOICES["svq_impl"]


def init_codebook(weight: torch.Tensor, method: str) -> None:
    """The reference code's initialisers, argument for argument (torch defaults unless noted)."""
    if method == "normal":
        nn.init.normal_(weight)
    elif method == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight)  # a=0: U(-sqrt(6/C), sqrt(6/C)), as the reference code calls it
    elif method == "xavier":
        nn.init.xavier_uniform_(weight, gain=nn.init.calculate_gain("relu"))
    elif method == "sparse":
        nn.init.sparse_(weight, sparsity=0.9)
    elif method == "trunc_normal":
        nn.init.trunc_normal_(weight)  # std 1, cut at +-2
    elif method == "orthogonal":
        nn.init.orthogonal_(weight)
    else:
        raise UserError(f"unknown codebook init {method!r}; choose one of: {', '.join(INITS)}")


class SVQ(nn.Module):
    def __init__(self, *, dim: int, codebook_size: int = 10000, hidden: int = 128, frozen: bool = False,
                 init: str = "kaiming_uniform", impl: str = "factorized", one_layer: bool = False,
                 post_relu: bool = False, frozen_projection: bool = False, cap_hidden: bool = False,
                 hid_relu: bool = True):
        super().__init__()
        if cap_hidden:  # the reference code: hidden width K when K < 128 (its Table 6 K=10 rows)
            hidden = min(hidden, codebook_size)
        self.hid_relu = hid_relu
        if impl not in IMPLS:
            raise UserError(f"unknown SVQ implementation {impl!r}; choose one of: {', '.join(IMPLS)}")
        if codebook_size < 1 or hidden < 1:
            raise UserError(f"codebook size and hidden width must be >= 1, got {codebook_size}, {hidden}")
        self.requested_impl = impl
        self.post_relu = post_relu
        # post-ReLU weights break W @ M = ReLU(zA+a)(BM) + bM: only the dense path computes them
        self.impl = "dense" if post_relu else impl
        if one_layer:
            self.proj_in = None
            self.proj_out = nn.Linear(dim, codebook_size)   # W = zA + a
        else:
            self.proj_in = nn.Linear(dim, hidden)            # A, a
            self.proj_out = nn.Linear(hidden, codebook_size)  # B, b
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim), requires_grad=not frozen)  # M
        init_codebook(self.codebook.data, init)
        if frozen_projection:
            for p in self.projection_parameters():
                p.requires_grad_(False)

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def projection_parameters(self) -> list[nn.Parameter]:
        layers = [self.proj_out] if self.proj_in is None else [self.proj_in, self.proj_out]
        return [p for layer in layers for p in layer.parameters()]

    def describe(self) -> dict:
        """What the run record says about the path actually taken."""
        out = {"impl": self.impl, "hidden": None if self.proj_in is None else self.proj_in.out_features,
               "hid_relu": self.hid_relu}
        if self.impl != self.requested_impl:
            out["impl_note"] = "post-ReLU weights break the factorization; the dense (N x K) path was used"
        return out

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.proj_in is None:
            return tokens
        h = self.proj_in(tokens)
        return torch.relu(h) if self.hid_relu else h

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Regression weights (N, K) for tokens (N, C): for analysis and the dense path."""
        w = self.proj_out(self._hidden(tokens))
        return torch.relu(w) if self.post_relu else w

    def weight_head(self):
        """(features, B, b) with weights(tokens) = features(tokens) @ B.T + b, or None when post-ReLU
        breaks that form: codebook-usage analysis takes the weights' mean and std from the features."""
        return None if self.post_relu else (self._hidden, self.proj_out.weight, self.proj_out.bias)

    def forward(self, z: torch.Tensor) -> QuantOut:
        n, c, h, w = z.shape
        tokens = z.permute(0, 2, 3, 1).reshape(-1, c)
        if self.impl == "dense":
            q = self.weights(tokens) @ self.codebook
        else:
            bm = self.proj_out.weight.t() @ self.codebook  # (hidden or C, C)
            bias = self.proj_out.bias @ self.codebook      # (C,)
            q = torch.addmm(bias, self._hidden(tokens), bm)
        z_q = q.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return QuantOut(z_q, z.new_zeros(()), {})
