"""Issue 7 GPU figures: the WeatherBench-S paper-shape training step (12 x 1 x 32 x 64, gSTA
32/256/8/2, batch 16) with and without SVQ (K 10000, factorized), in fp32 and bf16 autocast.

Prints samples/second, the SVQ overhead ratio (SVQ step time / plain step time, same precision),
the bf16 speed-up and the peak GPU memory of each variant. Step = forward (autocast) + L1 loss +
backward + Adam step, exactly as svqbench.train runs it. Variants are timed in interleaved rounds in
one process (median over rounds) so clock and thermal drift hit all alike: read the ratios.

With --short-run it also trains the quick embedded job for a few epochs in fp32 and in bf16 on the
GPU (svqbench.experiment.run_experiment) and prints both test MAEs and their relative difference
(bf16 should match fp32 within a few percent on a short run).

Needs a CUDA GPU; without one it says so and exits with code 2 (nothing is measured on CPU).

    .venv/bin/python benchmarks/gpu_step.py [--steps 20] [--rounds 5] [--channels-last] [--compile]
                                            [--short-run --epochs 5 --results-dir /tmp/gpu-step]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from svqbench.models.simvp import SimVP
from svqbench.train import autocast

SHAPE = dict(in_len=12, out_len=12, channels=1, height=32, width=64)


def make(quantizer: str) -> SimVP:
    kwargs = dict(codebook_size=10000, init="normal", impl="factorized") if quantizer == "svq" else {}
    return SimVP(**SHAPE, hid_s=32, hid_t=256, n_s=2, n_t=8, backbone="gsta", mlp_ratio=8.0, drop_path=0.1,
                 quantizer=quantizer, quantizer_kwargs=kwargs)


class Variant:
    def __init__(self, quantizer: str, precision: str, batch: int, device: torch.device, *,
                 channels_last: bool, compile: bool):
        self.name = f"{'gSTA + SVQ' if quantizer == 'svq' else 'gSTA':10s} {precision}"
        self.quantizer, self.precision, self.batch, self.device = quantizer, precision, batch, device
        self.model = make(quantizer).to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.x = torch.randn(batch, 12, 1, 32, 64, generator=g).to(device)
        self.y = torch.randn(batch, 12, 1, 32, 64, generator=g).to(device)
        self.seconds: list[float] = []
        self.peak_mb = 0.0

    def step(self) -> None:
        with autocast(self.device, self.precision):
            pred, aux = self.forward(self.x)
        loss = F.l1_loss(pred.float(), self.y) + aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def time(self, steps: int) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        torch.cuda.synchronize(self.device)
        self.seconds.append((time.perf_counter() - t0) / steps)
        self.peak_mb = max(self.peak_mb, torch.cuda.max_memory_allocated(self.device) / 2 ** 20)

    @property
    def step_s(self) -> float:
        return statistics.median(self.seconds)


def short_run(epochs: int, results_dir: Path, device: str) -> None:
    from svqbench.config import resolve
    from svqbench.experiment import run_experiment
    from svqbench.train import TrainOptions
    maes = {}
    for precision in ("fp32", "bf16"):
        cfg = resolve(cli={"epochs": epochs})
        stamp = time.strftime("%Y%m%d-%H%M%S")
        metrics = run_experiment(cfg, results_dir=results_dir, run_id=f"gpu-short-{precision}-{stamp}", device=device,
                                 options=TrainOptions(precision=precision))
        maes[precision] = metrics["test"]["mae_per_pixel"]
        print(f"short run ({epochs} epochs, embedded quick job) {precision}: test MAE {maes[precision]:.4f} K, "
              f"best val loss {metrics['best_val_loss']:.5f}")
    diff = abs(maes["bf16"] - maes["fp32"]) / maes["fp32"]
    print(f"bf16 vs fp32 test MAE: relative difference {diff:.2%} (target: within a few percent)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--short-run", action="store_true")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/svqbench-gpu-step"))
    a = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_step.py needs a CUDA GPU and torch.cuda.is_available() is False here: nothing measured",
              file=sys.stderr)
        sys.exit(2)
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, batch {a.batch_size}, "
          f"channels_last {a.channels_last}, compile {a.compile}")
    variants = [Variant(q, p, a.batch_size, device, channels_last=a.channels_last, compile=a.compile)
                for p in ("fp32", "bf16") for q in ("none", "svq")]
    for v in variants:
        for _ in range(a.warmup):
            v.step()
    for _ in range(a.rounds):  # interleaved: drift hits every variant alike
        for v in variants:
            v.time(a.steps)
    by = {(v.quantizer, v.precision): v for v in variants}
    for v in variants:
        print(f"{v.name}: {v.batch / v.step_s:8.1f} samples/s  step {v.step_s * 1e3:7.2f} ms  "
              f"peak memory {v.peak_mb:8.1f} MiB")
    for p in ("fp32", "bf16"):
        print(f"SVQ overhead ratio ({p}): {by['svq', p].step_s / by['none', p].step_s:.3f}x step time, "
              f"{by['svq', p].peak_mb / by['none', p].peak_mb:.3f}x peak memory")
    for q in ("none", "svq"):
        print(f"bf16 speed-up ({q}): {by[q, 'fp32'].step_s / by[q, 'bf16'].step_s:.2f}x")
    if a.short_run:
        short_run(a.epochs, a.results_dir, a.device)


if __name__ == "__main__":
    main()
