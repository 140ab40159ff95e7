"""Codebook usage over a whole split (streaming), its golden values, and `svqbench analyze`."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from svqbench.quantizers import build_quantizer
from svqbench.quantizers.analysis import Moments, codebook_usage, excess_kurtosis, perplexity, tokens_of


class Holder(torch.nn.Module):
    """The smallest model with a `quantizer` slot: analysis only needs model(x) to call it."""

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x):
        return self.quantizer(x)


def test_perplexity_golden_values():
    assert perplexity(torch.ones(64)) == pytest.approx(64)
    assert perplexity(torch.tensor([0, 0, 7, 0])) == pytest.approx(1)
    assert perplexity(torch.tensor([1, 1, 2])) == pytest.approx(math.exp(1.5 * math.log(2)))
    assert math.isnan(perplexity(torch.zeros(5)))


def test_streamed_moments_equal_scipy():
    torch.manual_seed(0)
    x = torch.distributions.StudentT(5.0).sample((20000,)) * 3 + 1
    m = Moments()
    for part in x.split(777):
        m.update(part)
    assert m.mean == pytest.approx(float(x.double().mean()))
    assert m.std == pytest.approx(float(x.double().std(unbiased=False)))
    assert m.excess_kurtosis == pytest.approx(stats.kurtosis(x.numpy().astype(np.float64)), rel=1e-9)
    assert excess_kurtosis(torch.rand(200000)) == pytest.approx(-1.2, abs=0.02)  # uniform


def reference_thresholded_perplexity(w: np.ndarray, theta: float) -> float:
    """Appendix A.4 written out on the full (N, K) matrix."""
    z = np.abs((w - w.mean()) / w.std())
    active = (z > theta).sum(0).astype(np.float64)
    p = active[active > 0] / active.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def test_sparse_usage_streams_the_whole_split():
    torch.manual_seed(0)
    q = build_quantizer("svq", dim=8, codebook_size=300).eval()
    model = Holder(q)
    # batches that differ in scale, so the last batch alone gives different figures
    batches = [torch.randn(3, 8, 4, 5) * s for s in (0.5, 1.0, 4.0)]
    usage = codebook_usage(model, lambda: iter(batches), detail=True)
    with torch.no_grad():
        w = torch.cat([q.weights(tokens_of(b)) for b in batches]).double().numpy()
        last = q.weights(tokens_of(batches[-1])).double().numpy()
    assert usage["tokens"] == w.shape[0] == 3 * 60
    for theta in (2, 3):
        assert usage[f"perplexity_theta{theta}"] == pytest.approx(reference_thresholded_perplexity(w, theta), rel=1e-9)
    assert usage["perplexity_theta2"] != pytest.approx(reference_thresholded_perplexity(last, 2), rel=1e-3)
    assert usage["weight_kurtosis"] == pytest.approx(stats.kurtosis(w.ravel()), rel=1e-6)
    assert usage["codebook_kurtosis"] == pytest.approx(stats.kurtosis(q.codebook.detach().double().numpy().ravel()),
                                                       rel=1e-6)
    assert usage["near_zero_fraction"] == pytest.approx(float((np.abs(w) < 0.1 * w.std()).mean()), abs=1e-6)
    assert sum(usage["weight_histogram"]) == pytest.approx(float((np.abs((w - w.mean()) / w.std()) <= 10).sum()))
    assert usage["impl"] == "factorized"


def test_sparse_usage_does_not_build_the_whole_weight_matrix(monkeypatch):
    """Large K is processed a few tokens at a time (a cap on each (n x K) block)."""
    import svqbench.quantizers.analysis as analysis
    monkeypatch.setattr(analysis, "CHUNK_ELEMENTS", 1000)
    torch.manual_seed(0)
    q = build_quantizer("svq", dim=4, codebook_size=200).eval()
    seen = []
    original = q.weights
    monkeypatch.setattr(q, "weights", lambda t: seen.append(t.shape[0]) or original(t))
    usage = codebook_usage(Holder(q), lambda: iter([torch.randn(2, 4, 5, 5)]))
    assert max(seen) * 200 <= 1000 and usage["tokens"] == 50


def test_hard_usage_counts_every_token_of_every_stream():
    torch.manual_seed(0)
    q = build_quantizer("rvq", dim=8, codebook_size=16).eval()
    batches = [torch.randn(2, 8, 3, 3), torch.randn(1, 8, 3, 3) + 3]
    usage = codebook_usage(Holder(q), lambda: iter(batches), detail=True)
    idx = torch.cat([q.code_indices(b) for b in batches])
    expected = np.mean([perplexity(torch.bincount(idx[:, s], minlength=16)) for s in range(idx.shape[1])])
    assert usage["kind"] == "hard" and usage["streams"] == 8 and usage["tokens"] == 27
    assert usage["perplexity"] == pytest.approx(expected)
    assert np.asarray(usage["code_counts"]).sum() == 27 * 8


def test_no_codebook_no_usage():
    assert codebook_usage(Holder(build_quantizer("mlp", dim=4)), lambda: iter([torch.randn(1, 4, 2, 2)])) == {}


# --- svqbench analyze --------------------------------------------------------------------------------

def cli(*args, data_root, cwd):
    env = dict(os.environ, SVQBENCH_DATA=str(data_root), OMP_NUM_THREADS="1", COLUMNS="250")  # rich wraps at 80
    return subprocess.run([sys.executable, "-m", "svqbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


MICRO = ["--hid-s", "4", "--hid-t", "8", "--n-t", "2", "--n-s", "4", "--epochs", "1", "--batch-size", "64",
         "--quiet"]


def test_analyze_writes_figures_for_svq_and_refuses_none(embedded_root, tmp_path):
    from svqbench.analyze import analyze_run
    from svqbench.config import resolve
    from svqbench.experiment import run_experiment
    micro = dict(hid_s=4, hid_t=8, n_t=2, n_s=4, epochs=1, batch_size=64, warmup_epochs=0)
    run_experiment(resolve(cli={**micro, "quantizer": "svq", "codebook_size": 128}), results_dir=tmp_path,
                   data_dir=embedded_root, run_id="s")
    out, usage, figures = analyze_run("s", results_dir=tmp_path, data_dir=embedded_root)
    assert {p.name for p in figures} == {"weights_codebook_distribution.png", "codebook_pca.png", "code_usage.png"}
    for p in figures:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "analysis.json").exists() and usage["codebook_size"] == 128
    assert not list(out.glob("*.tmp"))
    run_experiment(resolve(cli={**micro, "quantizer": "none"}), results_dir=tmp_path, data_dir=embedded_root,
                   run_id="n")
    done = cli("analyze", "n", "--results-dir", str(tmp_path), data_root=embedded_root, cwd=tmp_path)
    assert done.returncode == 2 and "has no codebook to analyze" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    missing = cli("analyze", "nope", "--results-dir", str(tmp_path), data_root=embedded_root, cwd=tmp_path)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_analyze_cli_on_a_hard_vq_run(embedded_root, tmp_path):
    done = cli("run", *MICRO, "--quantizer", "vq", "--codebook-size", "32", "--name", "v", "--results-dir",
               str(tmp_path), data_root=embedded_root, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = cli("analyze", "v", "--results-dir", str(tmp_path), data_root=embedded_root, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "perplexity" in shown.stdout and (tmp_path / "v" / "analysis" / "codebook_pca.png").exists()
    table = cli("compare", str(tmp_path), data_root=embedded_root, cwd=tmp_path)
    assert table.returncode == 0 and "aux loss" in table.stdout and "perplexity" in table.stdout


class UniformWeights(torch.nn.Module):
    """Weights spread evenly in [-1, 1): no |z| reaches 2, so no code is ever 'active'."""

    codebook_size = 10

    def __init__(self):
        super().__init__()
        self.codebook = torch.nn.Parameter(torch.randn(10, 2))

    def weights(self, tokens):
        return torch.linspace(-1, 1, tokens.shape[0] * 10).reshape(-1, 10)

    def forward(self, z):
        return z


def test_undefined_perplexity_is_recorded_as_none():
    usage = codebook_usage(Holder(UniformWeights()), lambda: iter([torch.randn(1, 2, 5, 5)]))
    assert usage["perplexity_theta2"] is None and usage["perplexity_theta3"] is None
    assert usage["near_zero_fraction"] == pytest.approx(0.1 / math.sqrt(3), abs=0.005)  # |w| < 0.1 std, std 1/sqrt(3)


# --- one visit of the weights: the same figures as the former two full passes -----------------------

def former_two_pass_sparse_usage(model, batches) -> dict:
    """The implementation this module replaced (two full forwards of the model over the split, the
    weights computed in both, raw float64 power sums): the reference the new figures must equal."""
    from svqbench.quantizers.analysis import NEAR_ZERO, THETAS, _chunks
    q, k = model.quantizer, model.quantizer.codebook_size

    def stream(visit):
        handle = q.register_forward_pre_hook(lambda module, args: visit(args[0]) and None)
        try:
            model.eval()
            with torch.no_grad():
                for x in batches():
                    model(x)
        finally:
            handle.remove()
    moments = Moments()
    stream(lambda z: [moments.update(q.weights(c)) for c in _chunks(tokens_of(z), k)] and None)
    mean, std = moments.mean, moments.std
    active = {t: torch.zeros(k, dtype=torch.int64) for t in THETAS}
    near = [0]

    def second(z):
        for c in _chunks(tokens_of(z), k):
            w = q.weights(c).float()
            zs = (w - mean) / std
            for t in THETAS:
                active[t] += (zs.abs() > t).sum(0)
            near[0] += int((w.abs() < NEAR_ZERO * std).sum())
    with torch.no_grad():
        stream(second)
    return {"active": active, "perplexity_theta2": perplexity(active[2.0]), "perplexity_theta3": perplexity(active[3.0]),
            "weight_kurtosis": moments.excess_kurtosis, "near_zero_fraction": near[0] / moments.n,
            "weight_mean": mean, "weight_std": std, "n": moments.n}


def tiny_simvp(out_len: int, **svq):
    from svqbench.models.simvp import SimVP
    torch.manual_seed(0)
    shape = dict(in_len=3, out_len=out_len, channels=1, height=12, width=16)
    return SimVP(**shape, hid_s=8, hid_t=16, n_s=2, n_t=2, quantizer="svq",
                 quantizer_kwargs=dict(codebook_size=500, **svq)), shape


@pytest.mark.parametrize("out_len, svq", [(3, {}), (6, {}), (3, {"post_relu": True}), (3, {"one_layer": True})],
                         ids=["one-pass", "roll-out", "post-relu", "one-layer"])
def test_sparse_usage_equals_the_former_two_full_passes(out_len, svq, monkeypatch):
    """Tolerances: the mean and std come from the features' Gram matrix (float64) instead of the
    float32 weights, and the kurtosis from central moments: figures agree to 1e-6 relative; an
    active count may differ by a weight lying within float32 rounding of a threshold (<= 1e-6 of all)."""
    import svqbench.quantizers.analysis as analysis
    monkeypatch.setattr(analysis, "CHUNK_ELEMENTS", 20_000)  # several chunks per batch
    model, shape = tiny_simvp(out_len, **svq)
    batches = [torch.randn(b, 3, 1, 12, 16) * s for b, s in ((4, 1.0), (3, 2.0), (2, 0.5))]
    old = former_two_pass_sparse_usage(model, lambda: iter(batches))
    new = codebook_usage(model, lambda: iter(batches))
    assert new["tokens"] * 500 == old["n"]
    for key in ("perplexity_theta2", "perplexity_theta3", "weight_kurtosis", "near_zero_fraction", "weight_mean",
                "weight_std"):
        assert new[key] == pytest.approx(old[key], rel=1e-6, abs=1e-9), key
    for t in (2, 3):
        assert new[f"active_fraction_theta{t}"] * old["n"] == pytest.approx(float(old["active"][float(t)].sum()),
                                                                           abs=max(1.0, 1e-6 * old["n"]))


def test_usage_stops_the_forward_at_the_quantizer_unless_it_rolls_out():
    """One call per forward: the translator runs for the first batch only (which shows that); a
    roll-out calls the quantizer on the decoder's output, so every forward runs in full."""
    from svqbench.quantizers.analysis import QuantizerInputs
    for out_len, translated in ((3, 1), (6, 2 * 3)):
        model, _ = tiny_simvp(out_len)
        calls = []
        model.translator.register_forward_pre_hook(lambda m, a: calls.append(1) and None)
        batches = [torch.randn(2, 3, 1, 12, 16) for _ in range(3)]
        ticks = []
        inputs = QuantizerInputs(model, lambda: iter(batches), passes=2, total_batches=3,
                                 progress=lambda done, total: ticks.append((done, total)))
        first, second = [z.clone() for z in inputs], list(inputs)
        assert len(calls) == translated, out_len
        assert len(first) == 3 * (out_len // 3) and all(torch.equal(a, b) for a, b in zip(first, second))
        assert ticks == [(i, 6) for i in range(1, 7)]


def test_inputs_beyond_the_cache_budget_are_recomputed():
    from svqbench.quantizers.analysis import QuantizerInputs
    model, _ = tiny_simvp(3)
    batches = [torch.randn(2, 3, 1, 12, 16) for _ in range(2)]
    seen = []
    inputs = QuantizerInputs(model, lambda: seen.append(1) or iter(batches), passes=2, cache_bytes=100)
    assert [torch.equal(a, b) for a, b in zip(list(inputs), list(inputs))] == [True, True]
    assert len(seen) == 2 and inputs.cache is None
