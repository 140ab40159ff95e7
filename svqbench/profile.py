"""What a model costs: parameters, codebook buffers, MACs/FLOPs, step times, peak memory.

MACs and FLOPs come from torch's own flop counter (torch.utils.flop_counter, attention included)
run on a copy of the model on the `meta` device, so counting is shape-only, instant at any size and
the same on every device (a model that cannot run on `meta` is counted on the CPU, batch 1). They
are per sample for one full forecast (all roll-out passes); the published figures (OpenSTL, fvcore)
are per pass, so `macs_per_pass_g` is the column to compare with them. fvcore also counts norm
layers: torch's counter reads 0.3-0.8% lower. A recurrent model's forecast is one pass: its
in_len + out_len - 1 steps over the whole sequence, predictions fed back (eval mode), which is what
Table 12 counts for them (docs/models.md).
"""
from __future__ import annotations

import csv
import itertools
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from svqbench.config import RunConfig
from svqbench.errors import UserError
from svqbench.models import ForecastShape, build_model


def dataset_shape(name: str, data_dir: str | os.PathLike | None = None) -> ForecastShape:
    """The paper shape of a registered dataset (known before `prepare`), else the shape of a
    prepared (e.g. netcdf) dataset under `data_dir`."""
    from svqbench.data import dataset_names, dataset_spec
    if name in dataset_names():
        return dataset_spec(name).shape
    from svqbench.data.prepared import open_prepared
    return ForecastShape.of(open_prepared(name, data_dir, auto_prepare=False))


def count_sizes(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and frozen parameters, and the quantizer's buffers (e.g. EMA codebooks)."""
    quantizer = getattr(model, "quantizer", None)
    return {"params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params_frozen": sum(p.numel() for p in model.parameters() if not p.requires_grad),
            "codebook_buffers": sum(b.numel() for b in quantizer.buffers()) if quantizer is not None else 0}


def count_macs(cfg: RunConfig, shape: ForecastShape) -> float:
    """Multiply-accumulates of one forecast of one sample (eval mode). Counted on the meta device
    (no compute); a model that cannot run there (the vector-quantize-pytorch baselines call .item())
    is counted on the CPU instead, where torch's counter needs to be told about CPU attention."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def count_on(device: str) -> float:
        mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
        with torch.random.fork_rng(devices=[]), torch.device(device):  # leaves the caller's RNG alone
            torch.manual_seed(cfg.seed)
            model = build_model(cfg, shape).eval()
            x = torch.randn(1, shape.in_len, shape.channels, shape.height, shape.width)
            with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
                model(x)
        return counter.get_total_flops() / 2

    try:
        return count_on("meta")
    except (RuntimeError, NotImplementedError):
        return count_on("cpu")


def training_step(model, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator | None = None) -> None:
    """One optimiser step as the loop takes it (target and step given: a recurrent model teacher-forces):
    L1 forecast loss + the model's aux loss + the translator's regulariser."""
    import torch.nn.functional as F
    pred, aux = model(x, target=y, step=0, generator=generator)
    loss = F.l1_loss(pred, y) + aux + model.regularizer(pred, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _peak_memory_bytes(device: torch.device, step) -> int:
    """Peak memory allocated while `step()` runs, above what was allocated when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    # CPU: replay every allocation and free that torch.profiler recorded, in time order. Its C++
    # tracer (kineto) logs its start/stop and, on a machine without a GPU, "gpuGetDeviceCount
    # failed" to stderr: level 6 keeps it quiet unless the user set KINETO_LOG_LEVEL (read at its start).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    changes, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            changes.append((node.start_time_ns, node.extra_fields.alloc_size))  # negative: a free
        stack.extend(node.children)
    return max(itertools.accumulate((size for _, size in sorted(changes)), initial=0))


def _median_seconds(fn, steps: int, device: torch.device) -> float:
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(cfg: RunConfig, shape: ForecastShape, *, device: str = "cpu", batch_size: int | None = None,
            steps: int = 3) -> dict[str, Any]:
    """One profile row for `cfg` (its quantizer with its own `svq_impl`). Before anything is
    allocated the step's memory is estimated (svqbench.memory): a `batch_size` given that does not
    fit is refused in one line; without one, on the CPU, the preset's batch is lowered to one that
    fits (a CPU that runs out is killed by the kernel, without a message)."""
    from svqbench import memory
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    dev = torch.device(device)
    batch = batch_size or cfg.batch_size
    if batch_size is None and dev.type == "cpu":
        batch = memory.fitting_batch(cfg, shape, batch, device)
    else:
        memory.check_batch(cfg, shape, batch, device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, shape).to(dev)
    sizes = count_sizes(model)
    macs = count_macs(cfg, shape)
    x = torch.randn(batch, shape.in_len, shape.channels, shape.height, shape.width, device=dev)
    y = torch.randn(batch, shape.out_len, shape.channels, shape.height, shape.width, device=dev)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    generator = torch.Generator().manual_seed(cfg.seed)

    def train_step():
        training_step(model, opt, x, y, generator)

    @torch.no_grad()
    def forward():
        model(x)

    with memory.out_of_memory_as_failure(batch):
        model.train()
        train_step()  # warm-up; creates Adam's state, so the peak below is one ordinary step
        # the warm-up's gradients are freed before the measured step, not inside it: a free of a block
        # allocated before the profiler started is an unknown size to it (and a c10 warning on stderr)
        opt.zero_grad(set_to_none=True)
        peak = _peak_memory_bytes(dev, train_step)
        train_s = _median_seconds(train_step, steps, dev)
        model.eval()
        forward()
        forward_s = _median_seconds(forward, steps, dev)
    weights = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
    return {
        "dataset": cfg.dataset, "scale": cfg.scale, "model": cfg.model,
        "backbone": cfg.backbone if cfg.model == "simvp" else "", "quantizer": cfg.quantizer,
        "svq_impl": cfg.svq_impl if cfg.quantizer == "svq" else "",
        "codebook_size": cfg.codebook_size if cfg.quantizer != "none" else "",
        "shape": f"{shape.in_len}->{shape.out_len} x {shape.channels}x{shape.height}x{shape.width}",
        "hid_s/hid_t/n_t/n_s": f"{cfg.hid_s}/{cfg.hid_t}/{cfg.n_t}/{cfg.n_s}" if cfg.model == "simvp" else "",
        "rnn_hidden/layers/filter/patch": "" if cfg.model == "simvp" else
        f"{cfg.rnn_hidden}/{cfg.rnn_layers}/{cfg.filter_size}/{cfg.patch_size}",
        **sizes,
        "params_m": round((sizes["params_trainable"] + sizes["params_frozen"]) / 1e6, 4),
        "passes": model.passes,
        "macs_per_pass_g": round(macs / model.passes / 1e9, 4),
        "macs_g": round(macs / 1e9, 4), "flops_g": round(2 * macs / 1e9, 4),
        "device": device, "threads": torch.get_num_threads(), "batch_size": batch, "steps": steps,
        "forward_ms": round(forward_s * 1e3, 2), "train_step_ms": round(train_s * 1e3, 2),
        "train_samples_per_s": round(batch / train_s, 2), "forward_samples_per_s": round(batch / forward_s, 2),
        "weights_mb": round(weights / 2**20, 2), "peak_step_memory_mb": round(peak / 2**20, 2),
        "torch": torch.__version__,
    }


def paper_name(cfg: RunConfig) -> str:
    """The row name the paper's cost table (Table 12) gives the model `cfg` builds."""
    from svqbench.models import TITLES
    if cfg.model != "simvp":
        return TITLES.get(cfg.model, cfg.model)
    if cfg.backbone == "tau":
        return "TAU"
    return "SimVP (w/o VQ)" if cfg.quantizer == "none" else "SimVP+SVQ"


def recipe_costs(name: str, scale: str = "paper", data_dir: str | os.PathLike | None = None,
                 cells: list[str] | None = None) -> list[dict[str, Any]]:
    """Parameters and MACs per pass (counted, nothing timed or trained) of every cell of recipe `name`
    at `scale` (or of the cells labelled in `cells`), beside the published figures of its paper table
    where it has them (params_m, macs_g in svqbench/resources/paper/table<N>.csv; "" where the paper
    prints none). Per pass, as Table 12 counts: a recurrent model's one pass is its whole sequence."""
    from svqbench.config import resolve
    from svqbench.recipes import load_recipe
    from svqbench.results import load_paper
    recipe = load_recipe(name)
    paper = load_paper()
    paper = paper[paper["table"] == str(recipe.table)]
    rows = []
    chosen = recipe.cells(scale)
    unknown = sorted(set(cells or ()) - {c.label for c in chosen})
    if unknown:
        raise UserError(f"recipe {recipe.name} ({scale}) has no cell {', '.join(unknown)}; "
                        f"`svqbench sweep {recipe.name} --scale {scale} --dry-run` lists them")
    for cell in chosen:
        if cells and cell.label not in cells:
            continue
        cfg = resolve(recipe=cell.overrides, data_dir=data_dir)
        shape = dataset_shape(cfg.dataset, data_dir)
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = build_model(cfg, shape)
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(cfg, shape) / model.passes
        mine = paper[(paper["model"] == paper_name(cfg)) & (paper["dataset"] == cfg.dataset)]

        def published(metric: str) -> str:
            return next(iter(mine.loc[mine["metric"] == metric, "value"]), "")
        rows.append({"recipe": recipe.name, "cell": cell.label, "dataset": cfg.dataset, "model": cfg.model,
                     "backbone": cfg.backbone if cfg.model == "simvp" else "", "quantizer": cfg.quantizer,
                     "shape": f"{shape.in_len}->{shape.out_len} x {shape.channels}x{shape.height}x{shape.width}",
                     "params": params, "params_m": round(params / 1e6, 4), "paper_params_m": published("params_m"),
                     "svq_impl": cfg.svq_impl if cfg.quantizer == "svq" else "",
                     "macs_per_pass_g": round(macs / 1e9, 4), "paper_macs_g": published("macs_g"),
                     "torch": torch.__version__})
    return rows


def profile_rows(cfg: RunConfig, shape: ForecastShape, *, other_impl: bool = False,
                 **kwargs: Any) -> list[dict[str, Any]]:
    """The chosen configuration; with `other_impl`, for SVQ also the other path (factorized default
    vs the paper's dense N x K formulation), so the paper's cost claim and ours stand side by side.
    Opt-in: the dense path's (N x K) weights make it the slow, memory-hungry row (5.9 GB at the
    embedded quick preset, K 10000)."""
    rows = [measure(cfg, shape, **kwargs)]
    if cfg.quantizer == "svq" and other_impl:
        other = "dense" if cfg.svq_impl == "factorized" else "factorized"
        rows.append(measure(replace(cfg, svq_impl=other), shape, **kwargs))
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Append rows to a CSV atomically (temp file + rename, under a lock); new columns are added."""
    from svqbench.atomic import atomic_write, ensure_dir
    from svqbench.results import locked
    path = Path(path)
    ensure_dir(path.parent)
    with locked(path):
        old: list[dict[str, Any]] = []
        if path.exists():
            with open(path, newline="") as f:
                old = list(csv.DictReader(f))
        columns = list(dict.fromkeys(itertools.chain.from_iterable(r.keys() for r in old + rows)))

        def fill(f):
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(old + rows)
        atomic_write(path, fill, binary=False)
    return path
