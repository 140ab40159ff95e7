"""Where a SimVP training step spends its time, and what the channels-last layout saves on CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/simvp_profile.py [--batch-size 16] [--steps 2] [--profile]

gSTA at the WeatherBench-S t2m paper shape (12 x 1 x 32 x 64, hid 32/256, N_T 8). The same model
and batch are timed in NCHW layout (the layout before the speed work) and in channels-last layout
(the CPU default since), alternating step by step so load from other jobs hits both alike; the
ratio is the figure to read. --profile prints the operators with the most CPU time (torch.profiler)
for each layout.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from svqbench.models.simvp import SimVP
from svqbench.profile import training_step


def timed_step(model: SimVP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    t0 = time.perf_counter()
    training_step(model, opt, x, y)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--backbone", default="gsta")
    ap.add_argument("--quantizer", default="none")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = SimVP(in_len=12, out_len=12, channels=1, height=32, width=64, hid_s=32, hid_t=256, n_s=2, n_t=8,
                  backbone=args.backbone, drop_path=0.1, quantizer=args.quantizer).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: both layouts see the same weights
    x, y = torch.randn(args.batch_size, 12, 1, 32, 64), torch.randn(args.batch_size, 12, 1, 32, 64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.backbone}+{args.quantizer}, "
          f"batch {args.batch_size}")
    layouts = {"NCHW (before)": False, "channels-last (after)": True}
    for channels_last in layouts.values():  # warm-up
        model.channels_last = channels_last
        training_step(model, opt, x, y)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for name, channels_last in layouts.items():
            model.channels_last = channels_last
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                training_step(model, opt, x, y)
            print(name)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    times = {name: [] for name in layouts}
    for _ in range(args.steps):
        for name, channels_last in layouts.items():
            model.channels_last = channels_last
            times[name].append(timed_step(model, opt, x, y))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, m in med.items():
        print(f"{name:22s} training step median {m:7.3f} s  ({args.batch_size / m:6.2f} samples/s, "
              f"{args.steps} steps)")
    before, after = med.values()
    print(f"speed-up (before / after): {before / after:.2f}x")


if __name__ == "__main__":
    main()
