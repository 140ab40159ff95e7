"""Issue 11, CPU proxy: the host overhead of one training step, old loop vs new loop.

Host overhead per step = time per optimiser step of the full training loop (svqbench.train.train,
batches, loss, backward, Adam, bookkeeping) minus the model's own forward + backward + Adam step on a
fixed batch. Measured at batch 16 on the WeatherBench-S shape (12 -> 12 frames of 1 x 32 x 64) on a
prepared dataset of random frames written to a temp folder with `write_prepared`. The model is `Tiny`
(pred = x * w + b, two parameters) so that its own time (about a millisecond) does not bury the
loop's; `--simvp` uses the quick-scale SimVP instead (its time then dominates and varies more).

The old loop is the training loop of another checkout (default /tmp/before11, made with
`git worktree add /tmp/before11 17e4dc6`, the last commit before the new loop): its train.py,
data/batches.py and data/prepared.py are loaded by path next to this checkout's and run on the same
data in the same process. Old epoch, new
epoch and model-only timings are interleaved in rounds (median over rounds), so drift from other
jobs on the machine hits all alike. Target: new loop overhead under 2 ms per step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loop_overhead.py [--old /tmp/before11] [--rounds 5]
                                                       [--norm window] [--simvp]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from bench_common import IN_LEN, OUT_LEN, random_t2m  # noqa: E402
from bench_common import load_by_path as load  # noqa: E402
from svqbench import train as new_train  # noqa: E402
from svqbench.config import resolve  # noqa: E402
from svqbench.data.prepared import PreparedDataset  # noqa: E402
from svqbench.models import build_model  # noqa: E402

N_FRAMES, BATCH = 1200, 16
RUN = dict(quantizer="none", batch_size=BATCH, warmup_epochs=0, max_val_windows=16, patience=100)
SIMVP = dict(hid_s=16, hid_t=64, n_t=4, n_s=2, mlp_ratio=4.0)  # the quick scale's model


class Tiny(torch.nn.Module):
    """The smallest model the loop can train: the forecast is the input scaled and shifted."""

    def __init__(self):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(torch.ones(())), torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, **model_inputs):  # the loop passes target, step, generator (docs/models.md)
        return x * self.w + self.b, x.new_zeros(())

    def regularizer(self, pred, target):
        return pred.new_zeros(())


def old_modules(root: Path):
    """The old prepared/batches/train modules, wired to each other (not to this checkout's)."""
    prepared = load("old_svqbench_prepared", root / "svqbench/data/prepared.py")
    batches = load("old_svqbench_batches", root / "svqbench/data/batches.py")
    batches.Batch, batches.PreparedDataset = prepared.Batch, prepared.PreparedDataset
    train = load("old_svqbench_train", root / "svqbench/train.py")
    for name in ("inject_noise", "read_batch", "split_batches", "to_tensors"):
        setattr(train, name, getattr(batches, name))
    return prepared, batches, train


class Seconds:
    """Reporter collecting each epoch's step time (the loop's own `seconds`, validation excluded)."""

    def __init__(self):
        self.rows = []

    def start(self, total_steps): ...
    def step(self, epoch, loss, lr, global_step): ...
    def flush(self): ...
    def stop(self): ...
    def note(self, message): ...

    def epoch(self, row):
        self.rows.append(row["seconds"])


def make_model(cfg, ds, simvp: bool):
    torch.manual_seed(0)
    return build_model(cfg, ds) if simvp else Tiny()


def loop_step_seconds(module, ds, cfg, work: Path, tag: str, options, simvp: bool) -> list[float]:
    model = make_model(cfg, ds, simvp)
    run = Path(tempfile.mkdtemp(prefix=tag, dir=work))
    rep = Seconds()
    module.train(cfg, ds, model, run, device=torch.device("cpu"), reporter=rep, options=options)
    shutil.rmtree(run, ignore_errors=True)
    return [s / cfg.max_steps_per_epoch for s in rep.rows[1:]]  # the first epoch warms up


def model_step_seconds(ds, cfg, steps: int, simvp: bool) -> float:
    """Forward + L1 loss + backward + Adam on one fixed batch: the model's own time per step."""
    model = make_model(cfg, ds, simvp).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, IN_LEN, 1, 32, 64)
    y = torch.randn(BATCH, OUT_LEN, 1, 32, 64)

    def step():
        pred, aux = model(x)
        loss = torch.nn.functional.l1_loss(pred, y) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=Path("/tmp/before11"), help="checkout with the old loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per epoch")
    parser.add_argument("--norm", default="global", choices=["global", "window"])
    parser.add_argument("--simvp", action="store_true", help="the quick-scale SimVP instead of the tiny model")
    a = parser.parse_args()
    if not (a.old / "svqbench/train.py").exists():
        print(f"no old checkout at {a.old} (git worktree add {a.old} <commit>)", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    old_prepared, _, old_train = old_modules(a.old)
    work = Path(tempfile.mkdtemp(prefix="svqbench-loop-overhead-"))
    try:
        path = random_t2m(work / "ds", N_FRAMES, val=64, name="loop-bench")
        ds_new, ds_old = PreparedDataset(path), old_prepared.PreparedDataset(path)
        cfg = resolve(cli={**RUN, **SIMVP, "epochs": 3, "max_steps_per_epoch": a.steps, "norm": a.norm})
        old, new, model = [], [], []
        for _ in range(a.rounds):
            old += loop_step_seconds(old_train, ds_old, cfg, work, "old", old_train.TrainOptions(checkpoint_every=0),
                                     a.simvp)
            new += loop_step_seconds(new_train, ds_new, cfg, work, "new", new_train.TrainOptions(checkpoint_every=0),
                                     a.simvp)
            model.append(model_step_seconds(ds_new, cfg, a.steps, a.simvp))
        m = statistics.median(model)
        o, n = statistics.median(old), statistics.median(new)
        paths = new_train.fast_paths(new_train.TrainOptions(), ds_new, torch.device("cpu"))
        model_name = "quick SimVP" if a.simvp else "Tiny"
        print(f"CPU, 1 thread, batch {BATCH}, 12 -> 12 frames of 1 x 32 x 64, norm {a.norm}, model {model_name} "
              f"({sum(p.numel() for p in make_model(cfg, ds_new, a.simvp).parameters())} parameters), "
              f"{a.rounds} rounds x {2 * a.steps} timed steps per loop; new loop data path: {paths.data}")
        print(f"model forward+backward+Adam: {m * 1e3:7.2f} ms/step")
        print(f"old loop: {o * 1e3:7.2f} ms/step -> host overhead {(o - m) * 1e3:6.2f} ms/step")
        print(f"new loop: {n * 1e3:7.2f} ms/step -> host overhead {(n - m) * 1e3:6.2f} ms/step (target < 2 ms)")
        print(f"spread (min..max ms/step): model {min(model) * 1e3:.2f}..{max(model) * 1e3:.2f}, "
              f"old {min(old) * 1e3:.2f}..{max(old) * 1e3:.2f}, new {min(new) * 1e3:.2f}..{max(new) * 1e3:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
