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


@pytest.mark.parametrize("options", [dict(frozen=False), dict(frozen=True), dict(one_layer=True),
                                     dict(frozen_projection=True), dict(hidden=40, frozen=True),
                                     dict(hid_relu=False)])
def test_factorized_equals_dense_outputs_and_gradients(options):
    """The one equivalence test: every factorizable option, outputs and every gradient, float64."""
    dense, fact = _pair(codebook_size=1000, init="normal", **options)
    assert fact.impl == "factorized" and dense.impl == "dense"
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
    assert len(grads[0]) == len(grads[1])
    if set(options) == {"frozen"}:  # z, A, a, B, b (and M when learnable)
        assert len(grads[0]) == (4 if options["frozen"] else 5) + 1
    for gd, gf in zip(*grads):
        assert rel_err(gf, gd) < 1e-5


def test_factorized_equals_dense_in_float32():
    dense, fact = _pair(codebook_size=10000, init="normal")
    dense, fact = dense.float(), fact.float()
    z = torch.randn(2, 32, 8, 8)
    assert rel_err(fact(z).z_q, dense(z).z_q) < 1e-5


def test_svq_replaces_the_latent_and_counts_paper_parameters():
    q = build_quantizer("svq", dim=32, codebook_size=10000)
    # C*128+128 + 128*K+K + K*C (docs/reference.md): 1.614M at K=10000, C=32
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


def test_reference_switches_hidden_cap_and_hid_relu():
    """The reference caps the hidden width at K when K < 128 (K=10: 760 parameters at C=32) and can
    drop the ReLU after the first layer; both are off by default."""
    from svqbench.config import resolve
    from svqbench.quantizers import quantizer_kwargs
    size = lambda q: sum(p.numel() for p in q.parameters())  # noqa: E731
    assert size(build_quantizer("svq", dim=32, codebook_size=10)) == 5834
    capped = build_quantizer("svq", dim=32, codebook_size=10, cap_hidden=True)
    assert size(capped) == 760 and capped.describe()["hidden"] == 10
    assert build_quantizer("svq", dim=32, codebook_size=1000, cap_hidden=True).proj_in.out_features == 128
    cfg = resolve(cli={"quantizer": "svq", "codebook_size": 10, "svq_hidden_cap": True, "svq_hid_relu": False})
    q = build_quantizer("svq", dim=32, **quantizer_kwargs(cfg))
    z = torch.randn(2, 32, 3, 3)
    tokens = z.permute(0, 2, 3, 1).reshape(-1, 32)
    linear = (q.proj_out(q.proj_in(tokens)) @ q.codebook).reshape(2, 3, 3, 32).permute(0, 3, 1, 2)
    assert torch.allclose(q(z).z_q, linear, atol=1e-5) and size(q) == 760


def test_table6_k10_cells_use_the_reference_cap():
    from svqbench.recipes import load_recipe
    cells = {c.label: c.overrides for c in load_recipe("table6").cells("paper")}
    assert cells["frozen-K10"]["svq_hidden_cap"] and cells["learnable-K10"]["svq_hidden_cap"]
    assert not cells["frozen-K1000"].get("svq_hidden_cap", False)
