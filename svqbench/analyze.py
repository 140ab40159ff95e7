"""`svqbench analyze RUN`: codebook figures of a finished run, from its best checkpoint.

- weights_codebook_distribution.png (sparse quantizers: svq, svq-raw), like the paper's Fig. 5:
  histograms of the z-scored regression weights W over the whole split and of the codebook M,
  with their excess kurtosis;
- codebook_pca.png, like Fig. 1: the codebook projected on its first two principal components
  (PCA, not the paper's t-SNE: deterministic and fast at K = 10000), codes coloured by how often they
  are used, with a sample of the latent vectors the quantizer received on the same axes;
- code_usage.png: use count of every code, sorted (a flat curve = an evenly used codebook).
Figures go to RUN/analysis/ (with analysis.json, the numbers behind them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from svqbench.atomic import ensure_dir, save_figure, write_json
from svqbench.errors import UserError
from svqbench.plots import readable_log_ticks

MAX_POINTS = 2000  # latent vectors drawn on the codebook embedding


@torch.no_grad()
def sample_latents(model, batches, limit: int = MAX_POINTS) -> torch.Tensor:
    """Up to `limit` quantizer input vectors (C,), evenly spread over the split's batches."""
    from svqbench.quantizers.analysis import tokens_of
    seen: list[torch.Tensor] = []
    handle = model.quantizer.register_forward_pre_hook(lambda m, args: seen.append(tokens_of(args[0]).cpu()))
    try:
        for x in batches():
            model(x)
    finally:
        handle.remove()
    tokens = torch.cat(seen)
    step = max(1, len(tokens) // limit)
    return tokens[::step][:limit]


def codebook_of(quantizer) -> torch.Tensor | None:
    if hasattr(quantizer, "codebook_vectors"):
        return quantizer.codebook_vectors()
    codebook = getattr(quantizer, "codebook", None)
    return None if codebook is None else codebook.detach()


def pca_axes(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and the first two principal directions (C, 2) of `points` (K, C)."""
    mean = points.mean(0)
    _, _, v = torch.linalg.svd(points - mean, full_matrices=False)
    return mean, v[:2].t()


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_figure(path, fig, dpi=120)


def _plot_distributions(usage: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    edges = np.asarray(usage["histogram_edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label, kurt in ((axes[0], "weight_histogram", "regression weights W", usage["weight_kurtosis"]),
                                 (axes[1], "codebook_histogram", "codebook M", usage["codebook_kurtosis"])):
        counts = np.asarray(usage[key], dtype=float)
        density = counts / max(counts.sum() * width, 1e-300)
        ax.fill_between(centres, density, step="mid", alpha=0.6)
        used = np.flatnonzero(counts)
        if len(used):
            ax.set_xlim(edges[used[0]] - 0.5, edges[used[-1] + 1] + 0.5)
        ax.set_yscale("log")
        readable_log_ticks(ax.yaxis)
        ax.set_xlabel("z-scored value (std units)")
        ax.set_title(f"{label}: excess kurtosis " + ("n/a" if kurt is None else f"{kurt:.2f}"))
    axes[0].set_ylabel("density")
    _save(fig, path)


def _plot_embedding(codebook: torch.Tensor, code_use: np.ndarray | None, latents: torch.Tensor | None,
                    title: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    mean, axes2 = pca_axes(codebook.float())
    codes = ((codebook.float() - mean) @ axes2).numpy()
    fig, ax = plt.subplots(figsize=(6, 5.4))
    colour = None if code_use is None else np.log1p(code_use)
    size = float(np.clip(2000 / len(codes), 4, 20))  # a small codebook's few codes stay visible
    sc = ax.scatter(codes[:, 0], codes[:, 1], s=size, c=colour, cmap="viridis", alpha=0.8, edgecolors="none",
                    zorder=3)
    if colour is not None:
        fig.colorbar(sc, ax=ax, label="codes: log(1 + uses)")
    if latents is not None and latents.shape[1] == codebook.shape[1]:
        pts = ((latents.float() - mean) @ axes2).numpy()
        # on top: the latents often fill a small patch of the codebook's plane, which 10^4 codes would hide
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="tab:red", alpha=0.25, zorder=4)
        # a legend only when two kinds of point are drawn; the codes' handle is grey because their
        # colour means uses (the colour bar), not a series
        from matplotlib.lines import Line2D
        ax.legend(handles=[Line2D([], [], ls="", marker="o", color="0.4", label=f"codes ({len(codes)})"),
                           Line2D([], [], ls="", marker="o", color="tab:red", alpha=0.5,
                                  label=f"latent vectors ({len(pts)} sampled)")], loc="best", fontsize=8)
    ax.set_xlabel("PC 1 of the codebook")
    ax.set_ylabel("PC 2 of the codebook")
    ax.set_title(title if latents is not None else f"{title}: codes")
    _save(fig, path)


def _plot_usage(counts: np.ndarray, ylabel: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(np.arange(1, len(counts) + 1), np.sort(counts)[::-1], marker="o" if len(counts) <= 64 else None, ms=2)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("symlog", linthresh=1)  # unused codes (0) stay on the axis
    ax.set_title(f"code usage: {title}, {int(np.count_nonzero(counts))} of {len(counts)} codes used")
    ax.grid(alpha=0.3)
    _save(fig, path)


def analyze_run(run: str | Path, *, results_dir: Path = Path("results"), data_dir: Path | None = None,
                split: str = "test", device: str = "cpu") -> tuple[Path, dict, list[Path]]:
    """Write the figures of one run; returns (output folder, usage figures, figure paths)."""
    import matplotlib
    matplotlib.use("Agg")
    from svqbench.quantizers.analysis import model_inputs, usage_kind, usage_on_split
    from svqbench.device import check_device
    from svqbench.runs import open_run
    check_device(device)
    dev = torch.device(device)
    saved = open_run(run, results_dir=results_dir, data_dir=data_dir)
    run_dir, cfg = saved.dir, saved.config
    if not (run_dir / "best.pt").exists():
        raise UserError(f"{run_dir} has no best.pt; analyze a run that finished at least one epoch")
    ds = saved.dataset(auto_prepare=True)
    model = saved.model(ds, device=device)
    kind = usage_kind(model.quantizer)
    if kind is None:
        raise UserError(f"run {run_dir.name} uses quantizer {cfg.quantizer!r}, which has no codebook to analyze")
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split {split!r}; choose one of: train, val, test")
    usage = usage_on_split(model, ds, cfg, split=split, device=dev, detail=True)
    out = ensure_dir(run_dir / "analysis")
    figures = []
    title = f"{cfg.quantizer}, K={usage['codebook_size']} ({split} split)"
    if kind == "sparse":
        figures.append(out / "weights_codebook_distribution.png")
        _plot_distributions(usage, figures[-1])
        code_use = np.asarray(usage["active_counts_theta2"], dtype=float)
        ylabel = "active uses (|z| > 2)"
    else:
        code_use = np.asarray(usage["code_counts"], dtype=float).sum(0)
        ylabel = "uses (all code streams)"
    codebook = codebook_of(model.quantizer)
    if codebook is not None:
        latents = None
        if getattr(model.quantizer, "codebook_in_latent_space", True):
            latents = sample_latents(model, model_inputs(ds, cfg, split=split, device=dev))
        figures.append(out / "codebook_pca.png")
        _plot_embedding(codebook.cpu(), code_use, latents, title, figures[-1])
    figures.append(out / "code_usage.png")
    _plot_usage(code_use, ylabel, title, figures[-1])
    write_json(out / "analysis.json", {"run_id": run_dir.name, "split": split, **usage})
    return out, usage, figures
