"""Codebook usage over a whole split, streamed (never the last batch alone).

Hard quantizers (one code per token and code stream) report the perplexity exp(H(p)) of their
code histogram, averaged over streams (residual layers, heads, groups), and the fraction of codes
used. Sparse quantizers (SVQ, SVQ-raw: real-valued weights over K codes) report, after Appendix A.4,
the thresholded perplexity: z-score every weight with one scalar mean and std over the split, count
|z| > theta as an active use of its code, p_k = active uses of code k / all active uses,
perplexity = exp(-sum p log p), for theta 2 and 3. They also report the excess kurtosis (Fisher:
a normal distribution has 0) of the weights and of the codebook (Table 8, Fig. 5; z-scoring does not
change kurtosis) and the fraction of near-zero weights, |w| < 0.1 std(W).
The sparse figures need the split's mean and std before thresholding: two passes.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch

THETAS = (2.0, 3.0)
NEAR_ZERO = 0.1        # in units of the weights' standard deviation
HIST_RANGE = 10.0      # histograms of z-scored values cover +-10 std
HIST_BINS = 200
CHUNK_ELEMENTS = 1 << 22  # weights are built a few million at a time: (N x K) never exists whole


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of the distribution proportional to `counts` (1 for all-zero counts)."""
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


class Moments:
    """Streaming mean, std and excess kurtosis (float64 power sums)."""

    def __init__(self):
        self.n, self.s1, self.s2, self.s3, self.s4 = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        self.n += x.numel()
        x2 = x * x
        self.s1 += float(x.sum())
        self.s2 += float(x2.sum())
        self.s3 += float((x2 * x).sum())
        self.s4 += float((x2 * x2).sum())

    @property
    def mean(self) -> float:
        return self.s1 / self.n

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(max(self.s2 / self.n - m * m, 0.0))

    @property
    def excess_kurtosis(self) -> float:
        m, n = self.mean, self.n
        var = self.s2 / n - m * m
        if var <= 0:
            return float("nan")
        m4 = self.s4 / n - 4 * m * self.s3 / n + 6 * m * m * self.s2 / n - 3 * m ** 4
        return m4 / var ** 2 - 3.0


def excess_kurtosis(x: torch.Tensor) -> float:
    m = Moments()
    m.update(x)
    return m.excess_kurtosis


def _chunks(tokens: torch.Tensor, codebook_size: int) -> Iterable[torch.Tensor]:
    step = max(1, CHUNK_ELEMENTS // max(1, codebook_size))
    return tokens.split(step)


def tokens_of(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def usage_kind(quantizer) -> str | None:
    if hasattr(quantizer, "weights"):
        return "sparse"
    if hasattr(quantizer, "code_indices"):
        return "hard"
    return None


@torch.no_grad()
def _stream_inputs(model, batches: Callable[[], Iterable[torch.Tensor]], visit: Callable[[torch.Tensor], None]) -> None:
    """Run the model over every batch and hand each quantizer input (N, C, H, W) to `visit`."""
    handle = model.quantizer.register_forward_pre_hook(lambda module, args: visit(args[0]))
    try:
        model.eval()
        for x in batches():
            model(x)
    finally:
        handle.remove()


@torch.no_grad()
def hard_usage(model, batches, *, detail: bool = False) -> dict:
    q = model.quantizer
    counts: torch.Tensor | None = None
    tokens = 0

    def visit(z):
        nonlocal counts, tokens
        idx = q.code_indices(z).cpu()
        if counts is None:
            counts = torch.zeros(idx.shape[1], q.codebook_size, dtype=torch.int64)
        for s in range(idx.shape[1]):
            counts[s] += torch.bincount(idx[:, s], minlength=q.codebook_size)[: q.codebook_size]
        tokens += idx.shape[0]

    _stream_inputs(model, batches, visit)
    per_stream = [perplexity(c) for c in counts]
    out = {"kind": "hard", "tokens": tokens, "codebook_size": q.codebook_size, "streams": len(per_stream),
           "perplexity": float(np.mean(per_stream)), "perplexity_by_stream": per_stream,
           "used_code_fraction": float((counts > 0).double().mean())}
    if detail:
        out["code_counts"] = counts.tolist()
    return out


@torch.no_grad()
def sparse_usage(model, batches, *, detail: bool = False) -> dict:
    """Two passes over `batches`: moments of all weights, then thresholded code use (and, with
    `detail`, histograms of the z-scored weights and codebook and per-code active counts)."""
    q = model.quantizer
    k = q.codebook_size
    moments = Moments()
    tokens = 0

    def first(z):
        nonlocal tokens
        for chunk in _chunks(tokens_of(z), k):
            moments.update(q.weights(chunk))
            tokens += chunk.shape[0]

    _stream_inputs(model, batches, first)
    mean, std = moments.mean, moments.std
    active = {t: torch.zeros(k, dtype=torch.int64) for t in THETAS}
    near_zero = 0
    hist = torch.zeros(HIST_BINS, dtype=torch.float64)

    def second(z):
        nonlocal near_zero, hist
        for chunk in _chunks(tokens_of(z), k):
            w = q.weights(chunk).float()
            zs = (w - mean) / std if std > 0 else torch.zeros_like(w)
            for t in THETAS:
                active[t] += (zs.abs() > t).sum(0).cpu()
            near_zero += int((w.abs() < NEAR_ZERO * std).sum())
            if detail:
                hist += torch.histc(zs.cpu(), HIST_BINS, -HIST_RANGE, HIST_RANGE).double()

    _stream_inputs(model, batches, second)
    codebook = q.codebook.detach().float().cpu()
    out = {"kind": "sparse", "tokens": tokens, "codebook_size": k,
           **{f"perplexity_theta{t:g}": perplexity(active[t]) for t in THETAS},
           **{f"active_fraction_theta{t:g}": float(active[t].sum()) / max(1, moments.n) for t in THETAS},
           "weight_kurtosis": moments.excess_kurtosis, "codebook_kurtosis": excess_kurtosis(codebook),
           "near_zero_fraction": near_zero / max(1, moments.n), "weight_mean": mean, "weight_std": std}
    if detail:
        cb = (codebook - codebook.mean()) / codebook.std()
        out["weight_histogram"] = hist.tolist()
        out["codebook_histogram"] = torch.histc(cb.double(), HIST_BINS, -HIST_RANGE, HIST_RANGE).tolist()
        out["histogram_edges"] = torch.linspace(-HIST_RANGE, HIST_RANGE, HIST_BINS + 1).tolist()
        out["active_counts_theta2"] = active[2.0].tolist()
    return out


def codebook_usage(model, batches: Callable[[], Iterable[torch.Tensor]], *, detail: bool = False) -> dict:
    """Usage figures of `model.quantizer` over every input batch that `batches()` yields (call it
    once per pass); {} for quantizers without a codebook (none, mlp)."""
    kind = usage_kind(model.quantizer)
    out: dict = {}
    if kind == "hard":
        out = hard_usage(model, batches, detail=detail)
    elif kind == "sparse":
        out = sparse_usage(model, batches, detail=detail)
    describe = getattr(model.quantizer, "describe", None)
    if describe is not None and out:
        out.update(describe())
    # undefined figures (no weight past a threshold) are None: metrics.json stays strict JSON
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


# The figures that go into the leaderboard row and the compare table.
LEADERBOARD_KEYS = ("perplexity", "perplexity_theta2", "perplexity_theta3", "weight_kurtosis",
                    "codebook_kurtosis", "near_zero_fraction")


def model_inputs(ds, cfg, *, split: str, device) -> Callable[[], Iterable[torch.Tensor]]:
    """A re-iterable source of normalised model inputs for one split."""
    from svqbench.data.batches import to_tensors

    def batches():
        for batch in ds.batches(split, cfg.batch_size):
            x, _, _ = to_tensors(ds, batch, cfg.norm, device)
            yield x
    return batches


def usage_on_split(model, ds, cfg, *, split: str = "test", device=torch.device("cpu"),
                   detail: bool = False) -> dict:
    model.to(device)
    return codebook_usage(model, model_inputs(ds, cfg, split=split, device=device), detail=detail)
