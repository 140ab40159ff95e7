"""Codebook usage over a whole split, streamed (never the last batch alone).

Hard quantizers (one code per token and code stream) report the perplexity exp(H(p)) of their
code histogram, averaged over streams (residual layers, heads, groups), and the fraction of codes
used. Sparse quantizers (SVQ, SVQ-raw: real-valued weights over K codes) report, after Appendix A.4,
the thresholded perplexity: z-score every weight with one scalar mean and std over the split, count
|z| > theta as an active use of its code, p_k = active uses of code k / all active uses,
perplexity = exp(-sum p log p), for theta 2 and 3. They also report the excess kurtosis (Fisher:
a normal distribution has 0) of the weights and of the codebook (Table 8, Fig. 5; z-scoring does not
change kurtosis) and the fraction of near-zero weights, |w| < 0.1 std(W).
The sparse figures need the split's mean and std before thresholding, so the split's quantizer
inputs are visited twice (kept in memory when they fit, the forward stopped at the quantizer).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

THETAS = (2.0, 3.0)
NEAR_ZERO = 0.1        # in units of the weights' standard deviation
HIST_RANGE = 10.0      # histograms of z-scored values cover +-10 std
HIST_BINS = 200
CHUNK_ELEMENTS = 1 << 22  # weights are built a few million at a time: (N x K) never exists whole
CACHE_BYTES = 1 << 29     # quantizer inputs kept between the two visits up to 512 MiB, else recomputed


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


class _Captured(Exception):
    """Raised by the hook to stop a forward once the quantizer's input is in hand."""


Progress = Callable[[int, int], None]  # progress(batches done, batches in all)


class QuantizerInputs:
    """The quantizer's inputs (N, C, H, W) over a split, re-iterable.

    The forward stops at the quantizer (the translator and decoder it skips are most of a pass)
    when the model calls it once per forward, which the first batch, run in full, shows (a
    SimVP roll-out or a recurrent model calls it several times: every call is then kept, as
    before). The inputs are kept in memory after the first pass when they fit in `cache_bytes`,
    else a later pass runs the (stopped) forward again. `progress` ticks once per batch and pass."""

    def __init__(self, model, batches: Callable[[], Iterable[torch.Tensor]], *, passes: int,
                 total_batches: int | None = None, progress: Progress | None = None,
                 cache_bytes: int = CACHE_BYTES):
        self.model, self.batches, self.progress, self.cache_bytes = model, batches, progress, cache_bytes
        self.total = None if total_batches is None else total_batches * passes
        self.done = 0
        self.cache: list[list[torch.Tensor]] | None = None  # per batch, after a complete first pass
        self.calls_per_forward: int | None = None

    def _tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total or self.done)

    @torch.no_grad()
    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.cache is not None:
            for zs in self.cache:
                yield from zs
                self._tick()
            return
        kept: list[list[torch.Tensor]] | None = []
        kept_bytes = 0
        for x in self.batches():
            zs = self._inputs_of(x)
            if kept is not None:
                kept_bytes += sum(z.numel() * z.element_size() for z in zs)
                kept = kept if kept_bytes <= self.cache_bytes else None
                if kept is not None:
                    kept.append(zs)
            yield from zs
            self._tick()
        self.cache = kept

    def _inputs_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        captured: list[torch.Tensor] = []
        stop = self.calls_per_forward == 1

        def hook(module, args):
            captured.append(args[0])
            if stop:
                raise _Captured

        handle = self.model.quantizer.register_forward_pre_hook(hook)
        try:
            self.model.eval()
            self.model(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if self.calls_per_forward is None:
            self.calls_per_forward = len(captured)
        return captured


@torch.no_grad()
def hard_usage(model, inputs: Iterable[torch.Tensor], *, detail: bool = False) -> dict:
    q = model.quantizer
    counts: torch.Tensor | None = None
    tokens = 0
    for z in inputs:
        idx = q.code_indices(z).cpu()
        if counts is None:
            counts = torch.zeros(idx.shape[1], q.codebook_size, dtype=torch.int64)
        for s in range(idx.shape[1]):
            counts[s] += torch.bincount(idx[:, s], minlength=q.codebook_size)[: q.codebook_size]
        tokens += idx.shape[0]
    per_stream = [perplexity(c) for c in counts]
    out = {"kind": "hard", "tokens": tokens, "codebook_size": q.codebook_size, "streams": len(per_stream),
           "perplexity": float(np.mean(per_stream)), "perplexity_by_stream": per_stream,
           "used_code_fraction": float((counts > 0).double().mean())}
    if detail:
        out["code_counts"] = counts.tolist()
    return out


def _affine_moments(head, inputs: Iterable[torch.Tensor]) -> tuple[int, float, float]:
    """Count, mean and std of all weights W = F(tokens) B^T + b without building W: per token,
    sum_k W = F.(B^T 1) + sum(b) and sum_k W^2 = F (B^T B) F^T + 2 F.(B^T b) + |b|^2 (float64)."""
    features, weight, bias = head
    b_mat, b_vec = weight.detach().double(), bias.detach().double()
    gram, col_sum, cross = b_mat.t() @ b_mat, b_mat.sum(0), b_mat.t() @ b_vec
    k = b_mat.shape[0]
    n = 0
    s1 = s2 = 0.0
    for z in inputs:
        f = features(tokens_of(z)).double()
        n += f.shape[0]
        s1 += float((f @ col_sum).sum()) + f.shape[0] * float(b_vec.sum())
        s2 += float(((f @ gram) * f).sum() + 2 * (f @ cross).sum()) + f.shape[0] * float(b_vec @ b_vec)
    count = n * k
    mean = s1 / count
    return count, mean, math.sqrt(max(s2 / count - mean * mean, 0.0))


def _plain_moments(q, inputs: Iterable[torch.Tensor]) -> tuple[int, float, float]:
    """Count, mean and std of all weights, computing them (a head that is not affine)."""
    n, s1, s2 = 0, 0.0, 0.0
    for z in inputs:
        for chunk in _chunks(tokens_of(z), q.codebook_size):
            w = q.weights(chunk)
            n += w.numel()
            s1 += float(w.sum(dtype=torch.float64))
            s2 += float((w * w).sum(dtype=torch.float64))
    mean = s1 / max(1, n)
    return n, mean, math.sqrt(max(s2 / max(1, n) - mean * mean, 0.0))


@torch.no_grad()
def sparse_usage(model, inputs: Iterable[torch.Tensor], *, detail: bool = False) -> dict:
    """Thresholded code use, kurtosis and near-zero fraction of the weights over every input.

    The z-scores need the mean and std of all weights first. For SVQ's affine head (W = F B^T + b)
    they come exactly from the features F (a (hidden x hidden) Gram matrix of B), so the (N x K)
    weights are computed once; another head (post-ReLU, svq-raw) computes them twice. The
    kurtosis uses central moments about that mean (float64 sums of chunk sums)."""
    q = model.quantizer
    k = q.codebook_size
    head = getattr(q, "weight_head", lambda: None)()
    count, mean, std = _affine_moments(head, inputs) if head is not None else _plain_moments(q, inputs)
    active = {t: torch.zeros(k, dtype=torch.int64) for t in THETAS}
    near_zero, tokens, c2, c4 = 0, 0, 0.0, 0.0
    hist = torch.zeros(HIST_BINS, dtype=torch.float64)
    for z in inputs:
        for chunk in _chunks(tokens_of(z), k):
            w = q.weights(chunk).float()
            tokens += chunk.shape[0]
            near_zero += int(torch.count_nonzero(w.abs() < NEAR_ZERO * std))
            d = w.sub_(mean)  # w is not needed any more: centred in place
            d2 = d * d
            c2 += float(d2.sum())  # torch sums a chunk pairwise: float32 loses ~1e-7 here, not 1e-3
            c4 += float((d2 * d2).sum())
            for t in THETAS:  # |z| > t  <=>  (w - mean)^2 > (t std)^2
                active[t] += torch.count_nonzero(d2 > (t * std) ** 2, dim=0).cpu()
            if detail:
                zs = d / std if std > 0 else torch.zeros_like(d)
                hist += torch.histc(zs.cpu(), HIST_BINS, -HIST_RANGE, HIST_RANGE).double()
    kurtosis = (c4 / count) / (c2 / count) ** 2 - 3.0 if count and c2 > 0 else float("nan")
    codebook = q.codebook.detach().float().cpu()
    out = {"kind": "sparse", "tokens": tokens, "codebook_size": k,
           **{f"perplexity_theta{t:g}": perplexity(active[t]) for t in THETAS},
           **{f"active_fraction_theta{t:g}": float(active[t].sum()) / max(1, count) for t in THETAS},
           "weight_kurtosis": kurtosis, "codebook_kurtosis": excess_kurtosis(codebook),
           "near_zero_fraction": near_zero / max(1, count), "weight_mean": mean, "weight_std": std}
    if detail:
        cb = (codebook - codebook.mean()) / codebook.std()
        out["weight_histogram"] = hist.tolist()
        out["codebook_histogram"] = torch.histc(cb.double(), HIST_BINS, -HIST_RANGE, HIST_RANGE).tolist()
        out["histogram_edges"] = torch.linspace(-HIST_RANGE, HIST_RANGE, HIST_BINS + 1).tolist()
        out["active_counts_theta2"] = active[2.0].tolist()
    return out


def codebook_usage(model, batches: Callable[[], Iterable[torch.Tensor]], *, detail: bool = False,
                   total_batches: int | None = None, progress: Progress | None = None) -> dict:
    """Usage figures of `model.quantizer` over every input batch that `batches()` yields (called
    once per forward pass over the split); {} for quantizers without a codebook (none, mlp).
    `progress(done, total)` ticks once per batch and pass (`total_batches` per pass)."""
    kind = usage_kind(model.quantizer)
    out: dict = {}
    if kind is not None:
        inputs = QuantizerInputs(model, batches, passes=2 if kind == "sparse" else 1,
                                 total_batches=total_batches, progress=progress)
        out = (hard_usage if kind == "hard" else sparse_usage)(model, inputs, detail=detail)
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
                   detail: bool = False, progress: Progress | None = None) -> dict:
    model.to(device)
    return codebook_usage(model, model_inputs(ds, cfg, split=split, device=device), detail=detail,
                          total_batches=-(-len(ds.splits[split]) // cfg.batch_size), progress=progress)
