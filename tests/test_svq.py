"""SVQ: the factorized default path equals the dense (N x K) reference, in outputs and gradients."""
from __future__ import annotations

import pytest
import torch

from svqbench.quantizers import build_quantizer
from svqbench.quantizers.svq import INITS


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


def _pair(**kw):
    torch.manual_seed(0)
    dense = build_quantizer("svq", dim=32, impl="dense", **kw).double()
    fact = build_quantizer("svq", dim=32, impl="factorized", **kw).double()
    fact.load_state_dict(dense.state_dict())
    return dense, fact


@pytest.mark.parametrize("frozen", [False, True])
def test_factorized_equals_dense_outputs_and_gradients(frozen):
    dense, fact = _pair(codebook_size=1000, frozen=frozen, init="normal")
    z = torch.randn(6, 32, 4, 5, dtype=torch.float64)
    outs, grads = [], []
    for q in (dense, fact):
        zi = z.clone().requires_grad_(True)
        out = q(zi).z_q
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        outs.append(out)
        grads.append([zi.grad] + [p.grad for p in q.parameters() if p.requires_grad])
    assert outs[0].shape == z.shape
    assert rel_err(outs[1], outs[0]) < 1e-5
    assert len(grads[0]) == len(grads[1]) == (4 if frozen else 5) + 1
    for gd, gf in zip(*grads):
        assert rel_err(gf, gd) < 1e-5


def test_factorized_equals_dense_in_float32():
    dense, fact = _pair(codebook_size=10000, init="normal")
    dense, fact = dense.float(), fact.float()
    z = torch.randn(2, 32, 8, 8)
    assert rel_err(fact(z).z_q, dense(z).z_q) < 1e-5


def test_svq_replaces_the_latent_and_counts_paper_parameters():
    q = build_quantizer("svq", dim=32, codebook_size=10000)
    # C*128+128 + 128*K+K + K*C (REFERENCE.md): 1.614M at K=10000, C=32
    assert sum(p.numel() for p in q.parameters()) == 32 * 128 + 128 + 128 * 10000 + 10000 + 10000 * 32
    z = torch.randn(3, 32, 2, 2)
    out = q(z)
    assert out.z_q.shape == z.shape and not torch.allclose(out.z_q, z)
    assert float(out.aux_loss) == 0.0


def test_frozen_codebook_is_not_trainable():
    q = build_quantizer("svq", dim=8, codebook_size=16, frozen=True)
    assert not q.codebook.requires_grad
    assert all(p.requires_grad for n, p in q.named_parameters() if n != "codebook")


@pytest.mark.parametrize("init", INITS)
def test_every_codebook_init_builds(init):
    q = build_quantizer("svq", dim=8, codebook_size=64, init=init)
    assert torch.isfinite(q.codebook).all() and q.codebook.abs().sum() > 0
