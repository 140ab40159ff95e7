"""Issue 4 targets: the training-step time and peak memory of every quantizer against `none`, for
K in {1024, 4096, 10000}. SVQ's default (factorized) path should stay within 1.10x at every K;
svq-raw (LISTA, a K x K matrix) should show its quadratic growth.

Step = forward + L1 loss + aux loss + backward + Adam step of a whole SimVP (gSTA). Every K's
variants are built in one process and their steps interleaved (median of --steps each), so machine
noise (other jobs on a shared CPU) hits all alike: read the ratios, not the seconds. Peak memory is
measured in one fresh child process per K that runs the same steps for each variant in turn:
`train MB` = peak RSS (the kernel's mark, reset before each variant) minus the RSS before the model
was built, i.e. parameters, gradients, optimiser state and activations, so the interpreter and
torch themselves do not dilute the ratio (Linux only). On CUDA it comes from the allocator.

Baselines get K as their codebook size (Table 13 style) where the method allows it: rfsq's size is
fixed by its levels (600), lfq/rlfq need a power of 2 (K=10000 runs as 8192; the table says so).
svq-raw is skipped where its estimated LISTA cost exceeds --lista-gmac-budget (the estimate, which
grows as K^2, is printed instead).

    .venv/bin/python benchmarks/quantizer_costs.py [--ks 1024,4096,10000] [--batch-size 2] [--steps 3]
        [--frames 4 --height 32 --width 64 --hid-t 128 --n-t 4]   # the defaults: a small SimVP for CPUs
    .venv/bin/python benchmarks/quantizer_costs.py --frames 12 --hid-t 256 --n-t 8 --batch-size 16 --device cuda
        # the paper's WeatherBench-S model
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import torch

from svqbench.models.simvp import SimVP
from svqbench.profile import training_step
from svqbench.quantizers.methods import FSQ_CODEBOOK_SIZE, METHODS

VARIANTS = ("none", "svq", "svq-dense", "svq-raw", "mlp", *METHODS)
LISTA_ITERATIONS = 5


def quantizer_setup(variant: str, k: int) -> tuple[str, dict, int | None]:
    """(registry name, kwargs, the K actually used)."""
    if variant in ("none", "mlp"):
        return variant, {}, None
    if variant in ("svq", "svq-dense"):
        return "svq", dict(codebook_size=k, impl="dense" if variant == "svq-dense" else "factorized",
                           init="normal"), k
    if variant == "rfsq":
        return "rfsq", {}, FSQ_CODEBOOK_SIZE
    if variant in ("lfq", "rlfq") and not math.log2(k).is_integer():
        k = 2 ** int(math.log2(k))
    return variant, dict(codebook_size=k), k


def lista_gmac(args, k: int) -> float:
    """Forward + backward (3x forward) multiply-adds of svq-raw's LISTA for one step."""
    latent = (args.height // 2) * (args.width // 2)
    tokens = args.batch_size * args.frames * latent
    return 3 * tokens * (2 * k * args.hid_s + LISTA_ITERATIONS * k * k) / 1e9


def make(args, variant: str, k: int) -> SimVP:
    name, kwargs, _ = quantizer_setup(variant, k)
    torch.manual_seed(0)
    return SimVP(in_len=args.frames, out_len=args.frames, channels=1, height=args.height, width=args.width,
                 hid_s=args.hid_s, hid_t=args.hid_t, n_s=2, n_t=args.n_t, backbone="gsta", quantizer=name,
                 quantizer_kwargs=kwargs)


def stepper(args, model: SimVP, device: torch.device):
    model.to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    shape = (args.batch_size, args.frames, 1, args.height, args.width)
    x, y = torch.randn(shape, device=device), torch.randn(shape, device=device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        training_step(model, opt, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    return step


def proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def child(args) -> None:
    """Peak memory of each variant's steps, one after another in this fresh process. Before each,
    the kernel's peak-RSS mark is reset (/proc/self/clear_refs), so peak - RSS before the model =
    what that variant's training needs."""
    import ctypes
    import gc
    warm = stepper(args, make(args, "none", args.k), torch.device("cpu"))  # imports and first-call set-up
    warm()
    del warm
    out = {}
    libc = ctypes.CDLL("libc.so.6")
    for variant in args.variants.split(","):
        gc.collect()
        libc.malloc_trim(0)  # hand freed heap back, so RSS before each variant is what it holds now
        before = proc_status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        step = stepper(args, make(args, variant, args.k), torch.device("cpu"))
        for _ in range(args.steps):
            step()
        out[variant] = {"train_mb": proc_status_mb("VmHWM") - before}
        del step
    print(json.dumps(out))


def child_memory(args, variants: list[str], k: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--k", str(k), "--steps", str(args.steps), "--variants",
           ",".join(variants)]
    for name in ("batch_size", "frames", "height", "width", "hid_s", "hid_t", "n_t"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_k(args, k: int, variants: list[str], device: torch.device) -> dict[str, dict]:
    steps, results = {}, {}
    for v in variants:
        if v == "svq-raw" and lista_gmac(args, k) > args.lista_gmac_budget:
            results[v] = {"skipped": f"est. {lista_gmac(args, k):,.0f} GMAC/step > budget"}
            continue
        if device.type == "cuda":
            torch.cuda.empty_cache()
        model = make(args, v, k)
        steps[v] = (stepper(args, model, device), [])
        results[v] = {"params": sum(p.numel() for p in model.parameters()), "k": quantizer_setup(v, k)[2]}
    for v, (step, _) in steps.items():  # warm-up (first-call allocations, library set-up)
        step()
    for _ in range(args.steps):  # interleaved so load changes hit every variant alike
        for v, (step, times) in steps.items():
            times.append(step())
    for v, (_, times) in steps.items():
        results[v]["step_s"] = statistics.median(times)
    if device.type == "cpu":
        for v, mem in child_memory(args, list(steps), k).items():
            results[v].update(mem)
    else:  # one variant at a time, peak from the allocator
        for v in steps:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step = stepper(args, make(args, v, k), device)
            for _ in range(2):
                step()
            results[v]["train_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="1024,4096,10000")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--hid-s", type=int, default=32)
    p.add_argument("--hid-t", type=int, default=128)
    p.add_argument("--n-t", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lista-gmac-budget", type=float, default=300.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int)
    args = p.parse_args()
    if args.child:
        return child(args)
    variants = args.variants.split(",")
    if "none" not in variants:
        variants.insert(0, "none")
    device = torch.device(args.device)
    print(f"SimVP gSTA {args.frames}x1x{args.height}x{args.width}, hid_s {args.hid_s}, hid_t {args.hid_t}, "
          f"N_T {args.n_t}, batch {args.batch_size}, {device}, torch threads {torch.get_num_threads()}; "
          f"median of {args.steps} interleaved steps; ratios against `none` measured in the same run")
    summary = {}
    for k in (int(s) for s in args.ks.split(",")):
        res = measure_k(args, k, variants, device)
        base = res["none"]
        print(f"\nK = {k}")
        print(f"{'variant':16s} {'K used':>7s} {'params':>11s} {'step s':>8s} {'time x':>7s} {'train MB':>9s} "
              f"{'mem x':>6s}")
        for v, r in res.items():
            if "skipped" in r:
                print(f"{v:16s} {'':>7s} {'':>11s} {'':>8s} {'':>7s}   skipped: {r['skipped']}")
                continue
            t_ratio = r["step_s"] / base["step_s"]
            m_ratio = r["train_mb"] / base["train_mb"]
            print(f"{v:16s} {str(r['k'] or '-'):>7s} {r['params']:>11,d} {r['step_s']:8.3f} {t_ratio:7.2f} "
                  f"{r['train_mb']:9.1f} {m_ratio:6.2f}")
            summary.setdefault(v, {})[k] = (t_ratio, m_ratio)
    if "svq" in summary:
        worst = max(t for t, _ in summary["svq"].values())
        print(f"\nSVQ (factorized) worst step-time ratio over K: {worst:.3f}x "
              f"({'within' if worst <= 1.10 else 'ABOVE'} the 1.10x target)")
    if "svq-raw" in summary and len(summary["svq-raw"]) > 1:
        ks = sorted(summary["svq-raw"])
        growth = ", ".join(f"K {a}->{b}: time x{summary['svq-raw'][b][0] / summary['svq-raw'][a][0]:.1f} "
                           f"(K^2 x{(b / a) ** 2:.1f})" for a, b in zip(ks, ks[1:]))
        print(f"svq-raw growth: {growth}")


if __name__ == "__main__":
    main()
