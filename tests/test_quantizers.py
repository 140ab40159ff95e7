"""The quantizer zoo: SVQ ablations, the mlp control, SVQ-raw (LISTA), the library baselines, config
defaults, and one end-to-end run per quantizer on the embedded dataset."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch

from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.quantizers import build_quantizer, quantizer_kwargs, quantizer_names, quantizer_spec
from svqbench.quantizers.baselines import METHODS, PINNED_VERSION

BASELINES = tuple(METHODS)
TABLE_11 = {"vq": 512, "rvq": 1024, "grvq": 1024, "mhvq": 1024, "rvq-stochastic": 1024, "rfsq": 600, "lfq": 8192,
            "rlfq": 256}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# --- SVQ ablation options -------------------------------------------------------------------------

def test_post_relu_switches_to_the_dense_path_and_says_so():
    torch.manual_seed(0)
    q = build_quantizer("svq", dim=8, codebook_size=50, post_relu=True, impl="factorized")
    assert q.impl == "dense" and "post-ReLU" in q.describe()["impl_note"]
    z = torch.randn(2, 8, 3, 3)
    tokens = z.permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.relu(q.proj_out(torch.relu(q.proj_in(tokens)))) @ q.codebook
    assert torch.allclose(q(z).z_q.permute(0, 2, 3, 1).reshape(-1, 8), expected, atol=1e-6)
    assert (q.weights(tokens) >= 0).all()
    assert "impl_note" not in build_quantizer("svq", dim=8, codebook_size=50).describe()


def test_one_layer_bucket_and_frozen_projection_shapes():
    one = build_quantizer("svq", dim=32, codebook_size=10000, one_layer=True)
    assert one.proj_in is None and sum(p.numel() for p in one.parameters()) == 32 * 10000 + 10000 + 10000 * 32
    bucket = build_quantizer("svq", dim=32, codebook_size=1280, hidden=1280)
    assert bucket.proj_in.out_features == 1280 and bucket.proj_out.weight.shape == (1280, 1280)
    frozen = build_quantizer("svq", dim=8, codebook_size=16, frozen_projection=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"codebook"}
    both = build_quantizer("svq", dim=8, codebook_size=16, frozen_projection=True, frozen=True)
    assert not any(p.requires_grad for p in both.parameters())


def test_codebook_inits_follow_the_reference_code():
    torch.manual_seed(0)
    k, c = 20000, 32
    kaiming = build_quantizer("svq", dim=c, codebook_size=k, init="kaiming_uniform").codebook.detach()
    assert math.isclose(float(kaiming.abs().max()), math.sqrt(6 / c), rel_tol=1e-3)  # a = 0, fan_in = C
    xavier = build_quantizer("svq", dim=c, codebook_size=k, init="xavier").codebook.detach()
    assert math.isclose(float(xavier.abs().max()), math.sqrt(2) * math.sqrt(6 / (k + c)), rel_tol=1e-3)
    trunc = build_quantizer("svq", dim=c, codebook_size=k, init="trunc_normal").codebook.detach()
    assert float(trunc.abs().max()) <= 2.0 and 0.85 < float(trunc.std()) < 0.91  # std 1 cut at +-2: 0.88
    sparse = build_quantizer("svq", dim=c, codebook_size=k, init="sparse").codebook.detach()
    assert math.isclose(float((sparse == 0).float().mean()), 0.9, abs_tol=1e-3)


def test_mlp_control_is_svq_with_the_codebook_multiplied_in():
    """ReLU(zA + a)(BM) + bM: loading (A, a, BM, bM) into the control reproduces SVQ exactly."""
    torch.manual_seed(0)
    svq = build_quantizer("svq", dim=16, codebook_size=500).double()
    mlp = build_quantizer("mlp", dim=16, hidden=128).double()
    with torch.no_grad():
        mlp.proj_in.load_state_dict(svq.proj_in.state_dict())
        mlp.proj_out.weight.copy_((svq.proj_out.weight.t() @ svq.codebook).t())
        mlp.proj_out.bias.copy_(svq.proj_out.bias @ svq.codebook)
    z = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    assert rel_err(mlp(z).z_q, svq(z).z_q) < 1e-12
    assert sum(p.numel() for p in mlp.parameters()) == 16 * 128 + 128 + 128 * 16 + 16


# --- SVQ-raw (LISTA) -------------------------------------------------------------------------------

def ista(x: torch.Tensor, m: torch.Tensor, lam: float, steps: int) -> torch.Tensor:
    """Plain ISTA for min ||x - sM||^2 / 2 + lam |s|_1, written independently of lista.py."""
    lip = float(torch.linalg.svdvals(m)[0] ** 2)
    shrink = lambda v: torch.sign(v) * torch.clamp(v.abs() - lam / lip, min=0)  # noqa: E731
    s = shrink(x @ m.t() / lip)
    for _ in range(steps):
        s = shrink(s - (s @ m - x) @ m.t() / lip)
    return s


def test_lista_starts_as_ista_and_its_cost_is_quadratic_in_k():
    torch.manual_seed(0)
    q = build_quantizer("svq-raw", dim=8, codebook_size=40, iterations=7, sparsity=0.05).double()
    x = torch.randn(30, 8, dtype=torch.float64)
    codes = q.weights(x)
    assert rel_err(codes, ista(x, q.codebook.detach(), 0.05, 7)) < 1e-5  # W, S were built in float32
    assert (codes == 0).any()  # soft thresholding gives exact zeros
    z = torch.randn(2, 8, 3, 5)
    out = build_quantizer("svq-raw", dim=8, codebook_size=40)(z)
    assert out.z_q.shape == z.shape and float(out.aux_loss) == 0.0
    for k in (64, 128):
        n = sum(p.numel() for p in build_quantizer("svq-raw", dim=8, codebook_size=k).parameters())
        assert n == k * k + 2 * k * 8 + k


# --- library baselines -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", BASELINES)
def test_baseline_wraps_the_library(name):
    torch.manual_seed(0)
    q = build_quantizer(name, dim=16)
    assert q.codebook_size == TABLE_11[name]
    z = torch.randn(2, 16, 3, 4, requires_grad=True)
    q.train()
    out = q(z)
    assert out.z_q.shape == z.shape and out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    (out.z_q.sum() + out.aux_loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    idx = q.code_indices(z.detach())
    streams = {"vq": 1, "lfq": 1, "grvq": 16}.get(name, 8)
    assert idx.shape == (2 * 3 * 4, streams) and idx.dtype == torch.long
    assert 0 <= int(idx.min()) and int(idx.max()) < q.codebook_size


def test_aux_losses_are_summed_over_quantizers_and_groups():
    torch.manual_seed(0)
    q = build_quantizer("grvq", dim=16, codebook_size=32).train()
    twin = copy.deepcopy(q)
    z = torch.randn(2, 16, 3, 4)
    torch.manual_seed(1)
    ours = q(z).aux_loss
    torch.manual_seed(1)
    _, _, losses = twin.vq(z.permute(0, 2, 3, 1).reshape(2, 12, 16))
    assert losses.numel() == 16 and torch.allclose(ours, losses.sum())


def test_ema_codebooks_are_buffers_that_move_only_in_training():
    torch.manual_seed(0)
    q = build_quantizer("vq", dim=8, codebook_size=16)
    assert not list(q.parameters())  # the optimiser never sees an EMA codebook
    before = q.codebook_vectors().clone()
    q.eval()(torch.randn(2, 8, 4, 4))
    q.code_indices(torch.randn(2, 8, 4, 4))
    assert torch.equal(q.codebook_vectors(), before)
    q.train()(torch.randn(2, 8, 4, 4))
    assert not torch.equal(q.codebook_vectors(), before)


def test_baseline_codebook_size_errors():
    with pytest.raises(UserError, match="power-of-2"):
        build_quantizer("lfq", dim=8, codebook_size=1000)
    with pytest.raises(UserError, match="rfsq's codebook size is fixed"):
        build_quantizer("rfsq", dim=8, codebook_size=1024)
    assert build_quantizer("rvq", dim=8, codebook_size=1024).codebook_size == 1024
    # refused when the config is resolved, before any run folder exists
    with pytest.raises(UserError, match="rlfq needs a power-of-2 codebook size, got 1000; try 1024"):
        resolve(cli={"quantizer": "rlfq", "codebook_size": 1000})
    with pytest.raises(UserError, match="rfsq's codebook size is fixed"):
        resolve(cli={"quantizer": "rfsq", "codebook_size": 64})


def test_library_version_is_guarded(monkeypatch):
    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.27.0")
    with pytest.raises(UserError, match=f"pinned to {PINNED_VERSION}"):
        build_quantizer("vq", dim=8)


def test_a_patch_release_of_the_pinned_series_is_accepted(monkeypatch):
    """pyproject.toml declares >=1.32.0,<1.33: the run-time check accepts exactly that series."""
    import importlib.metadata
    from svqbench.quantizers.baselines import check_library_version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.32.7")
    check_library_version()
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.33.0")
    with pytest.raises(UserError, match=f"pinned to {PINNED_VERSION}"):
        check_library_version()


# --- configuration ---------------------------------------------------------------------------------

def test_codebook_size_defaults_per_method_and_override():
    # the embedded preset sets codebook_size 10000: SVQ's K, not the baselines'
    assert resolve(cli={"quantizer": "svq"}).codebook_size == 10000
    for name, k in TABLE_11.items():
        assert resolve(cli={"quantizer": name}).codebook_size == k
    assert resolve(cli={"quantizer": "svq-raw"}).codebook_size == 1024
    assert resolve(cli={"quantizer": "rvq", "codebook_size": 1024}).codebook_size == 1024
    assert resolve(recipe={"quantizer": "vq", "codebook_size": 1024}).codebook_size == 1024
    assert quantizer_kwargs(resolve(cli={"quantizer": "vq"})) == {"codebook_size": 512}


def test_svq_ablation_flags_reach_the_module_and_are_refused_elsewhere():
    cfg = resolve(cli={"quantizer": "svq", "svq_one_layer": True, "svq_frozen_projection": True,
                       "svq_post_relu": True, "codebook_size": 64})
    q = build_quantizer("svq", dim=8, **quantizer_kwargs(cfg))
    assert q.proj_in is None and q.post_relu and q.impl == "dense"
    with pytest.raises(UserError, match="--svq-post-relu applies to svq only, not --quantizer vq"):
        resolve(cli={"quantizer": "vq", "svq_post_relu": True})


def test_every_registered_name_builds():
    assert set(quantizer_names()) == {"none", "svq", "svq-raw", "mlp", *BASELINES}
    for name in quantizer_names():
        sized = "codebook_size" in quantizer_spec(name).reads
        cfg = resolve(cli={"quantizer": name, **({"codebook_size": 600 if name == "rfsq" else 64} if sized else {})})
        assert build_quantizer(name, dim=8, **quantizer_kwargs(cfg)) is not None



def test_every_registry_entry_matches_its_class():
    """The registry declares what each quantizer reads without importing it (`--print-config` needs no
    torch): each declared keyword is a keyword-only argument of the class, every option the class
    takes besides `dim` and its fixed options is declared, and a declared own K is the class's default."""
    import inspect
    from svqbench.config import RunConfig
    for name in quantizer_names():
        spec = quantizer_spec(name)
        params = inspect.signature(spec.constructor()).parameters
        assert all(p.kind is p.KEYWORD_ONLY for p in params.values()), name
        assert set(spec.reads) <= set(RunConfig.__dataclass_fields__), name
        declared = set(spec.reads.values()) | set(spec.options) | {"dim"}
        assert declared <= set(params), (name, declared - set(params))
        # options the class has that no config field reaches keep their defaults (e.g. LISTA's iterations)
        undeclared = {k for k in params if k not in declared}
        assert all(params[k].default is not inspect.Parameter.empty for k in undeclared), name
        k = spec.reads.get("codebook_size")
        if spec.codebook_size is not None and params[k].default is not None:
            assert params[k].default == spec.codebook_size, name

# --- end to end: every quantizer trains on the embedded dataset and reaches compare -----------------

MICRO = dict(hid_s=4, hid_t=8, n_t=2, n_s=4, mlp_ratio=2.0, epochs=1, batch_size=64, warmup_epochs=0, patience=5)


@pytest.mark.parametrize("name", sorted(set(quantizer_names()) - {"none"}))
def test_quantizer_trains_end_to_end_and_reports_usage(name, embedded_root, tmp_path):
    from svqbench.experiment import run_experiment
    from svqbench.results import compare_table, load_leaderboards
    sized = {"codebook_size": 600 if name == "rfsq" else 64} if name != "mlp" else {}
    cfg = resolve(cli={**MICRO, "quantizer": name, **sized})
    metrics = run_experiment(cfg, results_dir=tmp_path, data_dir=embedded_root, run_id=name)
    assert math.isfinite(metrics["test"]["mse_per_pixel"])
    usage = metrics["codebook_usage"]
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    row = board.iloc[0]
    log = pd.read_csv(tmp_path / name / "log.csv")
    assert "aux_loss" in log.columns and row["train_aux_loss"] == pytest.approx(log["aux_loss"].iloc[0])
    if name in BASELINES:
        assert usage["kind"] == "hard" and 1 <= usage["perplexity"] <= usage["codebook_size"]
        assert row["perplexity"] == pytest.approx(usage["perplexity"])
        if name in ("vq", "rvq", "grvq", "mhvq", "rvq-stochastic"):
            assert row["train_aux_loss"] > 0  # commitment loss, summed
    elif name in ("svq", "svq-raw"):
        assert usage["kind"] == "sparse" and usage["codebook_size"] == 64
        assert usage["tokens"] > 0 and 0 <= usage["near_zero_fraction"] <= 1
        assert row["weight_kurtosis"] == pytest.approx(usage["weight_kurtosis"]) and row["train_aux_loss"] == 0
    else:
        assert usage == {} and row["train_aux_loss"] == 0
    table = compare_table(load_leaderboards(tmp_path))
    mine = table[table["method"] == name].iloc[0]
    assert "train_aux_loss" in table.columns and mine["train_aux_loss"] == pytest.approx(row["train_aux_loss"])
    details = json.loads((tmp_path / name / "config.json").read_text()).get("quantizer_details", {})
    if name == "svq":
        assert details["impl"] == "factorized"


def test_post_relu_run_records_the_dense_path(embedded_root, tmp_path):
    from svqbench.experiment import run_experiment
    cfg = resolve(cli={**MICRO, "quantizer": "svq", "codebook_size": 32, "svq_post_relu": True})
    metrics = run_experiment(cfg, results_dir=tmp_path, data_dir=embedded_root, run_id="relu")
    assert metrics["codebook_usage"]["impl"] == "dense" and "post-ReLU" in metrics["codebook_usage"]["impl_note"]
    details = json.loads((tmp_path / "relu" / "config.json").read_text())["quantizer_details"]
    assert details["impl"] == "dense"


def test_frozen_codebook_is_refused_where_it_means_nothing():
    with pytest.raises(UserError, match="--frozen-codebook applies to svq and svq-raw"):
        resolve(cli={"quantizer": "rvq", "frozen_codebook": True})
    assert resolve(cli={"quantizer": "none", "frozen_codebook": False}).quantizer == "none"
    assert not build_quantizer("svq-raw", dim=4, codebook_size=8, frozen=True).codebook.requires_grad
