"""The paper's VQ baselines (Table 4, Table 11) through vector-quantize-pytorch, pinned.

Each works on tokens: the latent (N, C, H, W) is fed as (N, H*W, C), exactly as the reference code
did, and comes back as QuantOut(z_q, aux_loss, stats). Settings follow Table 11 (shared codebooks
for the residual and multi-head variants); `codebook_size` overrides K (Table 13 uses 1024).

Guards against the library's behaviour changes since the paper (which used a late-2023 release):
- auxiliary losses changed shape across versions (scalar, per quantizer, per group): always `.sum()`;
- since ~1.18 the default gradient path is the rotation trick: we ask for the straight-through
  estimator the paper trained with (`rotation_trick=False`);
- LFQ's default commitment weight went from 0.25 to 0: we pass 0.25 explicitly;
- the version itself is checked when a baseline is built: its release series must be `PINNED_VERSION`'s
  (1.32.x), the range pyproject.toml declares; the exact version is recorded with every run.
EMA codebooks are buffers, not parameters: the optimiser never sees them; they move in train().
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.errors import UserError
from svqbench.quantizers.base import QuantOut
from svqbench.quantizers.methods import METHODS, check_codebook_size, default_codebook_size

PINNED_VERSION = "1.32.0"


def _installed_version() -> str:
    from importlib.metadata import version
    return version("vector-quantize-pytorch")


def check_library_version() -> None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        found = version("vector-quantize-pytorch")
    except PackageNotFoundError:
        raise UserError(f"the VQ baselines need vector-quantize-pytorch; "
                        f"pip install vector-quantize-pytorch=={PINNED_VERSION}") from None
    if found.split(".")[:2] != PINNED_VERSION.split(".")[:2]:
        raise UserError(f"vector-quantize-pytorch {found} is installed but the baselines are pinned to "
                        f"{PINNED_VERSION} (loss shapes, gradient path and defaults change between releases); "
                        f"pip install vector-quantize-pytorch=={PINNED_VERSION}")


def _build(name: str, dim: int, codebook_size: int) -> nn.Module:
    import vector_quantize_pytorch as vqp
    kw = dict(METHODS[name].kwargs)
    if name in ("vq", "rvq", "grvq", "mhvq", "rvq-stochastic"):
        kw.update(codebook_size=codebook_size, rotation_trick=False)
    if name == "vq" or name == "mhvq":
        return vqp.VectorQuantize(dim=dim, **kw)
    if name in ("rvq", "rvq-stochastic"):
        return vqp.ResidualVQ(dim=dim, **kw)
    if name == "grvq":
        if dim % kw["groups"]:
            raise UserError(f"grvq splits the latent into {kw['groups']} groups; hid-s {dim} is not divisible")
        return vqp.GroupedResidualVQ(dim=dim, **kw)
    if name == "rfsq":
        return vqp.ResidualFSQ(dim=dim, **kw)
    if name == "lfq":
        return vqp.LFQ(dim=dim, codebook_size=codebook_size, **kw)
    return vqp.ResidualLFQ(dim=dim, codebook_size=codebook_size, **kw)


class LibraryQuantizer(nn.Module):
    """One vector-quantize-pytorch method behind the QuantOut interface (registered by name with
    its `method` in svqbench.quantizers)."""

    def __init__(self, *, dim: int, method: str, codebook_size: int | None = None):
        super().__init__()
        if method not in METHODS:
            raise UserError(f"unknown VQ baseline {method!r}; choose one of: {', '.join(METHODS)}")
        codebook_size = codebook_size or default_codebook_size(method)
        check_codebook_size(method, codebook_size)
        check_library_version()
        self.method, self.codebook_size = method, codebook_size
        self.vq = _build(method, dim, codebook_size)

    def describe(self) -> dict:
        return {"method": METHODS[self.method].title, "codebook_size": self.codebook_size,
                "library": f"vector-quantize-pytorch {_installed_version()}", **METHODS[self.method].kwargs}

    def _quantize(self, z: torch.Tensor):
        n, c, h, w = z.shape
        out = self.vq(z.permute(0, 2, 3, 1).reshape(n, h * w, c))
        quantized, indices = out[0], out[1]
        aux = out[2].sum() if len(out) > 2 else z.new_zeros(())  # shapes differ by method and version
        return quantized.reshape(n, h, w, c).permute(0, 3, 1, 2), indices, aux

    def forward(self, z: torch.Tensor) -> QuantOut:
        z_q, _, aux = self._quantize(z)
        return QuantOut(z_q, aux.to(z.dtype), {})

    @torch.no_grad()
    def code_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Code index of every token in every code stream (layer, head, group): (N*H*W, streams)."""
        _, indices, _ = self._quantize(z)
        if self.method == "grvq":  # (groups, n, hw, layers) -> (n, hw, groups, layers)
            indices = indices.permute(1, 2, 0, 3)
        n, _, h, w = z.shape
        return indices.reshape(n * h * w, -1).long()

    @property
    def codebook_in_latent_space(self) -> bool:
        """False where codes live after a projection (multi-head) or split (groups)."""
        return self.method in ("vq", "rvq", "rvq-stochastic")

    def codebook_vectors(self) -> torch.Tensor | None:
        """The learned codebook (K, d) where one exists in a single space; None for implicit codebooks."""
        if self.method in ("vq", "mhvq"):
            return self.vq.codebook.detach()
        if self.method in ("rvq", "rvq-stochastic"):
            return self.vq.codebooks[0].detach()  # shared by all layers
        return None

