"""Issue 11 GPU figures: svqbench's own training loop on the WeatherBench-S t2m paper shape.

The paper configuration (`--dataset weatherbench-s-t2m --scale paper`: gSTA 32/256/8/2, batch 16,
12 -> 12 frames of 1 x 32 x 64) with SVQ (K 10000) and without a quantizer, in fp32 and bf16,
with and without torch.compile, trained by svqbench.train (setup, train_step, read_steps: device-
resident data, fused Adam, cudnn.benchmark, reads every 50 steps) on a temp dataset of random frames.
One more variant runs the bf16 SVQ step with the host prefetch loader instead of device data.

Per variant: samples/s, step time, GPU utilisation (torch.cuda.utilization, sampled every 0.1 s
while timing; needs pynvml), peak memory, and host syncs per step (torch.cuda sync debug mode over
a few steps). Then the SVQ overhead ratio (SVQ / none step time) and the projected wall time of the
paper-scale run: 50 epochs x 52.5k windows (training steps only; validation not included), against
the one-GPU-hour target (about 730 windows/s).

Needs CUDA; without it prints one line and exits 2. Stops starting variants after --budget-s.

    .venv/bin/python benchmarks/gpu_loop.py [--steps 60] [--warmup 15] [--no-compile] [--channels-last]
                                            [--budget-s 420]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from bench_common import IN_LEN, OUT_LEN, random_t2m
EPOCH_WINDOWS, EPOCHS, TARGET_S = 52_500, 50, 3600.0


class Utilisation:
    """Mean of torch.cuda.utilization() sampled in a thread (None without pynvml)."""

    def __init__(self, device):
        self.device, self.samples, self.stop = device, [], threading.Event()
        try:
            torch.cuda.utilization(device)
            self.ok = True
        except Exception:  # noqa: BLE001 - pynvml missing or unsupported
            self.ok = False

    def __enter__(self):
        if self.ok:
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
        return self

    def run(self):
        while not self.stop.wait(0.1):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc):
        self.stop.set()
        if self.ok:
            self.thread.join()

    @property
    def mean(self):
        return sum(self.samples) / len(self.samples) if self.samples else None


def variant(ds, device, *, quantizer: str, precision: str, compile: bool, data: str, steps: int, warmup: int,
            channels_last: bool) -> dict:
    from svqbench import train as tr
    from svqbench.config import resolve
    from svqbench.distributed import SINGLE
    from svqbench.models import build_model
    cfg = resolve(cli={"dataset": "weatherbench-s-t2m", "scale": "paper", "quantizer": quantizer})
    torch.manual_seed(0)
    model = build_model(cfg, ds)
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-loop-"))
    options = tr.TrainOptions(precision=precision, compile=compile, data_on_device=data, checkpoint_every=0,
                              channels_last=channels_last)
    t = tr.setup(cfg, ds, model, run_dir, device=device, options=options, dist=SINGLE)
    tr.wrap_model(t)
    t.model.train()
    t.state.order = t.rng.permutation(len(ds.splits["train"]))
    sync_steps = 4
    total = warmup + steps + sync_steps
    assert total <= t.steps_per_epoch, "dataset too small for the steps asked"
    batches = t.loader.batches("train", t.state.order, [tr.step_rows(t, s)[:2] for s in range(total)])
    t0 = time.perf_counter()
    for _ in range(warmup):  # compile, cudnn autotuning, allocator
        tr.train_step(t, *next(batches))
    tr.read_steps(t)
    torch.cuda.synchronize(device)
    warm_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats(device)
    with Utilisation(device) as util:
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step(t, *next(batches))
            if len(t.pending) >= t.options.log_every:
                tr.read_steps(t)
        tr.read_steps(t)
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    with warnings.catch_warnings(record=True) as caught:  # host syncs inside the step itself
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(sync_steps):
                tr.train_step(t, *next(batches))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught) / sync_steps
    tr.read_steps(t)
    batches.close()
    out = dict(quantizer=quantizer, precision=precision, compile=compile, data=t.paths.data, adam=t.paths.adam,
               step_s=seconds / steps, samples_s=steps * cfg.batch_size / seconds, util=util.mean,
               peak_mib=torch.cuda.max_memory_allocated(device) / 2 ** 20, syncs=syncs, warm_s=warm_s)
    del t, model, batches
    shutil.rmtree(run_dir, ignore_errors=True)
    if compile:
        torch._dynamo.reset()
    torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--channels-last", action="store_true", help="every variant with --channels-last")
    parser.add_argument("--budget-s", type=float, default=420, help="start no variant after this many seconds")
    parser.add_argument("--device", default="cuda")
    a = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_loop.py needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured", file=sys.stderr)
        sys.exit(2)
    device = torch.device(a.device)
    start = time.perf_counter()
    plan = [dict(quantizer=q, precision=p, compile=False, data="yes") for p in ("fp32", "bf16") for q in ("none", "svq")]
    plan.append(dict(quantizer="svq", precision="bf16", compile=False, data="no"))
    if not a.no_compile:
        plan += [dict(quantizer=q, precision=p, compile=True, data="yes") for p in ("bf16", "fp32") for q in ("none", "svq")]
    work = Path(tempfile.mkdtemp(prefix="svqbench-gpu-loop-"))
    from svqbench.data.prepared import PreparedDataset
    ds = PreparedDataset(random_t2m(work / "ds", 16 * (a.warmup + a.steps + 4) + IN_LEN + OUT_LEN + 16, val=64,
                                    name="gpu-loop"))
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, paper-shape gSTA (weatherbench-s-t2m "
          f"--scale paper), batch 16, {a.steps} timed steps after {a.warmup} warm-up steps, "
          f"channels_last {a.channels_last}", flush=True)
    results, skipped = [], []
    try:
        for v in plan:
            if time.perf_counter() - start > a.budget_s:
                skipped.append(v)
                continue
            r = variant(ds, device, steps=a.steps, warmup=a.warmup, channels_last=a.channels_last, **v)
            results.append(r)
            util = "n/a" if r["util"] is None else f"{r['util']:.0f}%"
            print(f"{r['quantizer']:4s} {r['precision']} compile={'on ' if r['compile'] else 'off'} data={r['data']:13s} "
                  f"adam={r['adam']}: {r['samples_s']:7.1f} samples/s  step {r['step_s'] * 1e3:6.2f} ms  GPU util {util}  "
                  f"peak {r['peak_mib']:7.0f} MiB  host syncs/step {r['syncs']:.1f}  (warm-up {r['warm_s']:.0f} s)",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {(r["quantizer"], r["precision"], r["compile"], r["data"]): r for r in results}
    for p in ("fp32", "bf16"):
        for c in (False, True):
            if ("svq", p, c, "device") in by and ("none", p, c, "device") in by:
                svq, none = by["svq", p, c, "device"], by["none", p, c, "device"]
                print(f"SVQ overhead ratio {p} compile={'on' if c else 'off'}: {svq['step_s'] / none['step_s']:.3f}x step "
                      f"time, {svq['peak_mib'] / none['peak_mib']:.3f}x peak memory")
    for r in results:
        if r["quantizer"] == "svq":
            hours = EPOCHS * EPOCH_WINDOWS / r["samples_s"] / 3600
            print(f"projected paper run (gSTA+SVQ, 50 epochs x 52.5k windows, training steps only) with {r['precision']} "
                  f"compile={'on' if r['compile'] else 'off'} data={r['data']}: {hours:.2f} h "
                  f"({'meets' if hours * 3600 <= TARGET_S else 'misses'} the 1 GPU-hour target, "
                  f"{EPOCHS * EPOCH_WINDOWS / TARGET_S:.0f} windows/s needed)")
    for v in skipped:
        print(f"skipped (over --budget-s): {v}")


if __name__ == "__main__":
    main()
