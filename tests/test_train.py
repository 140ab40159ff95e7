"""The training loop's schedules against torch's own, and its step helpers."""
from __future__ import annotations

import math

import pytest
import torch

from svqbench.config import resolve
from svqbench.train import lr_lambda


def _lrs(scheduler_factory, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = scheduler_factory(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_matches_torch_onecycle():
    cfg = resolve(cli={"schedule": "onecycle", "epochs": 4, "lr": 1e-2})
    steps = 4 * 25
    ours = _lrs(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(cfg, 25)), steps)
    # ours ramps up for int(0.3 * total) steps and reaches the floor at step `total`; torch's phases
    # end at pct_start * total_steps - 1 and total_steps - 1: the same curve for these arguments
    up = int(0.3 * steps)
    ref = _lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=1e-2, total_steps=steps + 1, pct_start=(up + 1) / (steps + 1), anneal_strategy="cos",
        cycle_momentum=False, div_factor=25, final_div_factor=1e4), steps)
    assert ours[0] == pytest.approx(1e-2 / 25) and max(ours) == pytest.approx(1e-2)
    assert ours == pytest.approx(ref, rel=1e-9)


def test_cosine_after_warmup_matches_torch_cosine_annealing():
    cfg = resolve(cli={"schedule": "cosine", "epochs": 6, "lr": 1e-2, "warmup_epochs": 2, "warmup_lr": 1e-4,
                       "min_lr": 1e-5})
    per_epoch, warm = 10, 20
    ours = _lrs(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(cfg, per_epoch)), 60)
    assert ours[0] == pytest.approx(1e-4) and ours[warm // 2] == pytest.approx((1e-4 + 1e-2) / 2)
    ref = _lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=60 - warm, eta_min=1e-5), 60 - warm)
    assert ours[warm:] == pytest.approx(ref, rel=1e-9)


def test_constant_schedule():
    cfg = resolve(cli={"schedule": "constant", "lr": 3e-3})
    assert all(math.isclose(lr_lambda(cfg, 7)(s), 1.0) for s in range(100))
