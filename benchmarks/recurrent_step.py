"""Training-step time of each recurrent model at the WeatherBench-S paper shape (12 -> 12 frames of
1 x 32 x 64, the weatherbench-s-t2m paper preset's sizes), CPU: svqbench's step against a plain
re-implementation of the reference loop (OpenSTL's) around the same model cells.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recurrent_step.py [--models convlstm,predrnn] \
        [--repeats 2] [--batch-size 4] [--threads 1]

Paper-size steps are slow on a CPU (ConvLSTM about 31 s of CPU per step at batch 4 on one thread;
PredRNN about twice that): the default (ConvLSTM, PredRNN, PredRNN.V2, 2 repeats) is ~15 CPU-minutes.

svqbench step: `model(x, target=y, step=s, generator=g)` (the loop's call: the teacher-forcing mask is
drawn from a torch generator in one call and broadcast), forecast MSE + aux, backward, Adam step.
Reference step, as OpenSTL's methods do it each iteration: the mask built in Python (numpy
`random_sample`, then a loop over samples and frames appending all-ones / all-zeros
(H/p, W/p, p*p*C) arrays, `np.array`, reshape; reverse scheduled sampling for PredRNN.V2), then
`torch.FloatTensor(mask).to(device)`, `torch.cat` of input and target frames, the patch reshape, the
same model's `rollout` (same cells, same weights), the MSE over all T-1 next frames plus the model's
own extra loss, backward, Adam step. The two arms alternate (A B, B A, A B ...) after one warm-up step each,
so load from other jobs hits both alike; the table gives the medians and svqbench / reference, in
process CPU time (one thread: the step's own work, robust on a shared machine) and in wall time.

PhyDNet, PredNet and DMVFN build no per-step mask in the reference (PhyDNet draws one coin per batch,
the others none): there is no reference overhead to compare, so only their svqbench step is timed.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import build_model
from svqbench.models.recurrent import Recurrent, reshape_patch, reverse_probs, sampling_mask, teacher_forcing_prob

DATASET = "weatherbench-s-t2m"
ALL = ("convlstm", "predrnn", "predrnnpp", "predrnnv2", "mim", "e3dlstm", "mau", "phydnet", "prednet", "dmvfn")
DEFAULT = ("convlstm", "predrnn", "predrnnv2")


def reference_mask(model: Recurrent, step: int, batch: int, grid: tuple[int, int, int]) -> np.ndarray:
    """The teacher-forcing flags as the reference's schedule functions build them: numpy's global
    random state, one Python append per sample and frame."""
    s, in_len, out_len = model.sampling, model.in_len, model.out_len
    ones, zeros = np.ones(grid), np.zeros(grid)
    flags = []
    if s.kind == "reverse":
        r_eta, eta = reverse_probs(s, step)
        r_true = np.random.random_sample((batch, in_len - 1)) < r_eta
        true = np.random.random_sample((batch, out_len - 1)) < eta
        for i in range(batch):
            for j in range(in_len + out_len - 2):
                hit = r_true[i, j] if j < in_len - 1 else true[i, j - (in_len - 1)]
                flags.append(ones if hit else zeros)
        return np.reshape(np.array(flags), (batch, in_len + out_len - 2, *grid))
    eta = teacher_forcing_prob(s, step)
    true = np.random.random_sample((batch, out_len - 1)) < eta
    for i in range(batch):
        for j in range(out_len - 1):
            flags.append(ones if true[i, j] else zeros)
    return np.reshape(np.array(flags), (batch, out_len - 1, *grid))


def reference_step(model: Recurrent, opt, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
    p = model.patch_size
    b, _, c, h, w = x.shape
    grid = (h // p, w // p, p * p * c)
    mask = torch.FloatTensor(reference_mask(model, step, b, grid)).to(x.device)
    frames = reshape_patch(torch.cat([x, y], dim=1), p)
    model._aux = []
    next_frames = model.rollout(frames, mask)
    loss = F.mse_loss(next_frames, frames[:, 1:]) + model.extra_loss(next_frames, frames)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def svqbench_step(model, opt, x: torch.Tensor, y: torch.Tensor, step: int, gen: torch.Generator) -> None:
    pred, aux = model(x, target=y, step=step, generator=gen)
    loss = F.mse_loss(pred, y) + aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def overhead_ms(model: Recurrent, x: torch.Tensor, y: torch.Tensor, rounds: int = 50) -> tuple[float, float]:
    """Median milliseconds (process CPU) of the per-step work around the cells alone, (svqbench,
    reference): the frames' concatenation and patch reshape and the mask (svqbench: `sampling_mask`
    from a torch generator; reference: `reference_mask` + `torch.FloatTensor(...).to(device)`)."""
    p, (b, _, c, h, w) = model.patch_size, x.shape
    grid = (h // p, w // p, p * p * c)
    gen = torch.Generator().manual_seed(0)

    def ours(step: int) -> None:
        frames = reshape_patch(torch.cat([x, y], 1), p)
        sampling_mask(model.sampling, batch=b, in_len=model.in_len, out_len=model.out_len, shape=frames.shape[2:],
                      step=step, generator=gen, device=x.device)

    def ref(step: int) -> None:
        torch.FloatTensor(reference_mask(model, step, b, grid)).to(x.device)
        reshape_patch(torch.cat([x, y], dim=1), p)

    t_ours, t_ref = [], []
    for step in range(rounds):
        t_ours.append(timed(ours, step)[0])
        t_ref.append(timed(ref, step)[0])
    return 1e3 * statistics.median(t_ours), 1e3 * statistics.median(t_ref)


def timed(fn, *args) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call. With one thread the CPU time is the
    step's own work, which other jobs on a shared machine barely disturb; wall time is given too."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - c0, time.perf_counter() - w0


def bench(name: str, batch: int, repeats: int) -> dict:
    shape = dataset_spec(DATASET).shape
    cfg = resolve(cli=dict(model=name, dataset=DATASET, scale="paper"))
    torch.manual_seed(0)
    ours = build_model(cfg, shape).train()
    has_mask = type(ours).rollout is not Recurrent.rollout  # PhyDNet, PredNet, DMVFN: forward only
    ref = copy.deepcopy(ours) if has_mask else None
    x = torch.randn(batch, shape.in_len, shape.channels, shape.height, shape.width)
    y = torch.randn(batch, shape.out_len, shape.channels, shape.height, shape.width)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-6)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-6) if ref is not None else None
    gen = torch.Generator().manual_seed(0)
    np.random.seed(0)
    t_ours, t_ref = [], []
    for step in range(repeats + 1):  # step 0 is the warm-up of both arms
        # the arm that goes first alternates (A B, B A, ...), so neither always runs on a warm cache
        if ref is not None and step % 2:
            r = timed(reference_step, ref, opt_ref, x, y, step)
            a = timed(svqbench_step, ours, opt_ours, x, y, step, gen)
        else:
            a = timed(svqbench_step, ours, opt_ours, x, y, step, gen)
            r = timed(reference_step, ref, opt_ref, x, y, step) if ref is not None else None
        if step > 0:
            t_ours.append(a)
            if r is not None:
                t_ref.append(r)
    params = sum(q.numel() for q in ours.parameters())
    over = overhead_ms(ours, x, y) if has_mask else (None, None)
    med = lambda ts, k: statistics.median(t[k] for t in ts) if ts else None  # noqa: E731
    return dict(model=name, params=params, ours=med(t_ours, 0), ref=med(t_ref, 0),
                ours_wall=med(t_ours, 1), ref_wall=med(t_ref, 1), over_ours=over[0], over_ref=over[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT), help=f"comma-separated, or 'all' ({','.join(ALL)})")
    ap.add_argument("--repeats", type=int, default=2, help="timed steps per arm after one warm-up")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    names = ALL if args.models == "all" else tuple(m.strip() for m in args.models.split(","))
    unknown = [m for m in names if m not in ALL]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; {DATASET} paper preset sizes, "
          f"batch {args.batch_size}, median of {args.repeats} interleaved steps per arm (after 1 warm-up)")
    print("step seconds: process CPU time (the ratio's basis) and, in brackets, wall time; overhead ms: the "
          "per-step work around the cells alone (concatenation, patches, mask), median of 50, svqbench / reference")
    print(f"{'model':10s} {'params':>11s} {'svqbench s':>18s} {'reference s':>18s} {'ratio':>6s} {'(wall)':>7s} "
          f"{'overhead ms':>15s}")
    for name in names:
        r = bench(name, args.batch_size, args.repeats)
        ours = f"{r['ours']:8.2f} ({r['ours_wall']:7.2f})"
        if r["ref"] is None:
            ref, ratio = f"{'-':>18s}", f"{'n/a':>6s} {'':>7s}"
        else:
            ref = f"{r['ref']:8.2f} ({r['ref_wall']:7.2f})"
            ratio = f"{r['ours'] / r['ref']:6.3f} ({r['ours_wall'] / r['ref_wall']:5.3f})"
        over = f"{r['over_ours']:6.2f} / {r['over_ref']:6.2f}" if r["over_ref"] is not None else f"{'-':>15s}"
        print(f"{name:10s} {r['params']:11,d} {ours:>18s} {ref} {ratio} {over:>15s}", flush=True)


if __name__ == "__main__":
    main()
