"""Training-step time of every translator at the quick scale of the embedded dataset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/translator_steps.py [--steps 3] [--batch-size 16]

SimVP with the embedded quick preset (10 -> 5 years, 1 x 37 x 49, hid 16/64, N_T 4, SVQ K 10000,
factorized) and each translator in turn; one warm-up step each, then `--steps` rounds in which every
translator takes one step, so load from other jobs spreads over all of them. Prints the median step
time, samples per second and the ratio to gSTA (the figure to compare across machines).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from svqbench.config import resolve
from svqbench.models.translators import translator_names
from svqbench.data import dataset_spec
from svqbench.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dataset", default="embedded")
    args = ap.parse_args()
    shape = dataset_spec(args.dataset).shape
    x = torch.randn(args.batch_size, shape.in_len, shape.channels, shape.height, shape.width)
    y = torch.randn(args.batch_size, shape.out_len, shape.channels, shape.height, shape.width)
    runs = {}
    for name in translator_names():
        torch.manual_seed(0)
        cfg = resolve(cli=dict(dataset=args.dataset, scale="quick", backbone=name))
        model = build_model(cfg, shape).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-6)
        runs[name] = (model, opt, sum(p.numel() for p in model.parameters()), [])

    def step(model, opt) -> float:
        t0 = time.perf_counter()
        pred, aux = model(x)
        loss = F.l1_loss(pred, y) + aux + model.regularizer(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for model, opt, _, _ in runs.values():
        step(model, opt)  # warm-up
    for _ in range(args.steps):
        for model, opt, _, times in runs.values():
            times.append(step(model, opt))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.dataset} quick "
          f"({cfg.hid_s}/{cfg.hid_t}/{cfg.n_t}/{cfg.n_s}, {cfg.quantizer} K {cfg.codebook_size}), "
          f"batch {args.batch_size}, median of {args.steps} steps")
    gsta = statistics.median(runs["gsta"][3])
    print(f"{'translator':11s} {'params':>9s} {'step ms':>9s} {'samples/s':>10s} {'vs gSTA':>8s}")
    for name, (_, _, params, times) in runs.items():
        med = statistics.median(times)
        print(f"{name:11s} {params:9d} {med * 1e3:9.1f} {args.batch_size / med:10.1f} {med / gsta:7.2f}x")


if __name__ == "__main__":
    main()
