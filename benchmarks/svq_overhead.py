"""Issue 2 targets for SVQ at K = 10000 on the WeatherBench-S grid (12 x 1 x 32 x 64, paper model):
the default (factorized) training step costs at most 1.10x the step without a quantizer, the dense
reference path at least 2x, and the default path's peak memory does not grow with K.

Step = svqbench.profile.training_step: forward + L1 loss + backward + Adam step. Timings interleave the three variants in one
process (median of --steps repetitions each) so machine noise hits all alike; peak memory is the
peak resident memory (VmHWM) of a fresh child process per variant (CPU) running the same steps.

    .venv/bin/python benchmarks/svq_overhead.py [--batch-size 16] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from svqbench.models.simvp import SimVP
from svqbench.profile import training_step


def make(quantizer: str, impl: str, k: int) -> SimVP:
    kwargs = dict(codebook_size=k, impl=impl, init="normal") if quantizer == "svq" else {}
    return SimVP(in_len=12, out_len=12, channels=1, height=32, width=64, hid_s=32, hid_t=256, n_s=2, n_t=8,
                 backbone="gsta", drop_path=0.1, quantizer=quantizer, quantizer_kwargs=kwargs)


def stepper(model: SimVP, batch: int):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = torch.randn(batch, 12, 1, 32, 64), torch.randn(batch, 12, 1, 32, 64)

    def step() -> float:
        t0 = time.perf_counter()
        training_step(model, opt, x, y)
        return time.perf_counter() - t0
    return step


def child(variant: str, k: int, batch: int, steps: int) -> None:
    quantizer, impl = ("none", "") if variant == "none" else ("svq", variant)
    step = stepper(make(quantizer, impl, k), batch)
    for _ in range(steps):
        step()
    # VmHWM is this process's own peak: ru_maxrss would carry the parent's peak across fork + exec
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"max_rss_mb": hwm_kb / 1024}))


def peak_mb(variant: str, k: int, batch: int, steps: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--k", str(k), "--batch-size", str(batch),
                          "--steps", str(steps)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["max_rss_mb"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--k", type=int, default=10000)
    p.add_argument("--child", default=None)
    p.add_argument("--memory-ks", default="1024,10000,100000")
    a = p.parse_args()
    if a.child:
        return child(a.child, a.k, a.batch_size, a.steps)
    torch.manual_seed(0)
    variants = {"none": make("none", "", a.k), "factorized": make("svq", "factorized", a.k),
                "dense": make("svq", "dense", a.k)}
    steps = {name: stepper(m, a.batch_size) for name, m in variants.items()}
    for s in steps.values():  # warm-up
        s()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for i in range(a.steps):  # rotate the order every round so no variant always follows the dense one
        for name in names[i % 3:] + names[: i % 3]:
            times[name].append(steps[name]())
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"WeatherBench-S paper shape, gSTA, batch {a.batch_size}, K={a.k}, {torch.get_num_threads()} threads, "
          f"median of {a.steps} interleaved steps")
    for name, v in med.items():
        print(f"  {name:10s} {v:7.3f} s/step")
    print(f"  ratio factorized/none = {med['factorized'] / med['none']:.3f}  (target <= 1.10)")
    print(f"  ratio dense/none      = {med['dense'] / med['none']:.3f}  (target >= 2)")
    del variants, steps
    print("peak resident memory (VmHWM) of a fresh process running the same steps (MB):")
    print(f"  none: {peak_mb('none', a.k, a.batch_size, 1):.0f}")
    for k in [int(x) for x in a.memory_ks.split(",")]:
        print(f"  K={k:6d} factorized: {peak_mb('factorized', k, a.batch_size, 1):.0f}")
    print(f"  K={a.k:6d} dense:      {peak_mb('dense', a.k, a.batch_size, 1):.0f}")


if __name__ == "__main__":
    main()
