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


# ---------------------------------------------------------------- the loop: masks, reads, skips, runtime

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from scaling_data import FLAGS, make_tiny_dataset  # noqa: E402
from svqbench.data.batches import Loader, read_batch, to_tensors  # noqa: E402
from svqbench.data.prepared import PreparedDataset, PreparedWriter, open_prepared  # noqa: E402
from svqbench.distributed import SINGLE  # noqa: E402
from svqbench.errors import UserError  # noqa: E402
from svqbench.models import build_model  # noqa: E402
from svqbench.train import (NonFiniteError, Reporter, TrainOptions, masked_loss, read_steps, setup,  # noqa: E402
                            step_rows, train, train_step, use_adam, validation_loss, wrap_model)


@pytest.fixture(scope="module")
def masked_root(tmp_path_factory) -> Path:
    """The tiny dataset with a land mask: a third of the cells are invalid."""
    root = tmp_path_factory.mktemp("masked")
    src = PreparedDataset(make_tiny_dataset(tmp_path_factory.mktemp("src")))
    valid = np.ones((8, 8), dtype=bool)
    valid[:3, :7] = False
    with PreparedWriter(root / "embedded", len(src.frames), 1, (8, 8)) as w:
        w.write(0, np.asarray(src.frames))
        w.finish(src.splits, {k: src.meta[k] for k in ("name", "channels", "units", "in_len", "out_len", "grid")},
                 mask=valid)
    return root


def test_masked_loss_is_the_mean_over_valid_cells():
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(2, 3, 2, 4, 5, generator=g), torch.randn(2, 3, 2, 4, 5, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1:3, 2] = mask[0, 0] = False
    for crit in (F.l1_loss, F.mse_loss):
        per = crit(pred, y, reduction="none").double()
        expected = per[..., mask].mean()
        assert masked_loss(crit, pred, y, mask, int(mask.sum())).item() == pytest.approx(expected.item(), rel=1e-6)
        assert masked_loss(crit, pred, y, mask, 17, reduction="sum").item() == pytest.approx(per[..., mask].sum().item(),
                                                                                              rel=1e-6)
        wild = pred.clone()
        wild[..., ~mask] = 1e6  # errors in invalid cells change nothing
        assert torch.equal(masked_loss(crit, wild, y, mask, int(mask.sum())), masked_loss(crit, pred, y, mask, 17))
        assert torch.equal(masked_loss(crit, pred, y, None), crit(pred, y))  # no mask: exactly as before


def test_validation_loss_averages_valid_cells_only(masked_root):
    cfg = resolve(cli={**FLAGS, "loss": "l2"})
    ds = open_prepared("embedded", masked_root)
    assert ds.mask is not None and ds.mask.sum() == 64 - 21
    torch.manual_seed(0)
    model = build_model(cfg, ds).eval()
    got = validation_loss(model, ds, cfg, torch.device("cpu"))
    errors = []
    with torch.no_grad():
        for i in range(len(ds.splits["val"])):
            x, y, _ = to_tensors(ds, read_batch(ds, "val", np.array([i])), cfg.norm, torch.device("cpu"))
            errors.append(((model(x)[0] - y) ** 2)[..., torch.from_numpy(ds.mask)].double().flatten())
    assert got == pytest.approx(torch.cat(errors).mean().item(), rel=1e-6)
    everywhere = validation_loss(model, ds, cfg, torch.device("cpu"),
                                 loader=Loader(ds, cfg.norm, torch.device("cpu"), on_device=True))
    assert everywhere == got


class Recorder(Reporter):
    def __init__(self):
        self.steps: list[tuple[int, float]] = []
        self.global_steps: list[int] = []

    def step(self, epoch, loss, lr, global_step):
        self.steps.append((epoch, loss))
        self.global_steps.append(global_step)

    def note(self, message):
        pass


def _train(root: Path, tmp: Path, name: str, options: TrainOptions, **overrides):
    cfg = resolve(cli={**FLAGS, **overrides})
    ds = open_prepared("embedded", root)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    model = build_model(cfg, ds)
    (tmp / name).mkdir()
    rec = Recorder()
    result = train(cfg, ds, model, tmp / name, device=torch.device("cpu"), reporter=rec, options=options)
    return result, rec, model


def test_log_every_reads_in_bursts_and_the_data_path_changes_no_number(masked_root, tmp_path):
    """60 windows, batch 16: 4 steps an epoch. Read every step (device-resident data) and every 3
    steps (prefetching host loader): the same epoch logs to the last bit; the reporter still gets one
    call per step, each with that step's own loss and global step, whatever the reads."""
    each, rec1, m1 = _train(masked_root, tmp_path, "each", TrainOptions(log_every=1, data_on_device="yes",
                                                                        checkpoint_every=0), quantizer="vq", epochs=2)
    burst, rec3, m3 = _train(masked_root, tmp_path, "burst", TrainOptions(log_every=3, data_on_device="no",
                                                                          checkpoint_every=0), quantizer="vq", epochs=2)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in each.log]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in burst.log]
    assert all(row["aux_loss"] > 0 for row in each.log)  # vq: a real aux loss went through the reads
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m3.state_dict().values()))
    assert len(rec1.steps) == len(rec3.steps) == 8
    assert rec3.steps == rec1.steps  # each step's own loss, bit for bit, read in bursts or one by one
    assert [epoch for epoch, _ in rec1.steps] == [0] * 4 + [1] * 4
    assert rec1.global_steps == rec3.global_steps == list(range(8))
    assert len({loss for _, loss in rec1.steps}) == 8  # the per-step values really differ


class Poisoned(torch.nn.Module):
    """A model whose next training forward can be made to give a NaN loss or NaN gradients."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.kind = inner, None

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, x, **model_inputs):  # target, step, generator: the forecasting-model interface
        pred, aux = self.inner(x, **model_inputs)
        kind, self.kind = self.kind, None
        if kind == "loss":
            pred = pred * float("nan")
        elif kind == "gradient":
            pred.register_hook(lambda g: g * float("nan"))
        return pred, aux


@pytest.mark.parametrize("adam, kind", [("fused", "loss"), ("fused", "gradient"), ("for-loop", "loss"),
                                        ("for-loop", "gradient")])
def test_non_finite_step_is_skipped_counted_and_named_at_the_read(adam, kind, tiny_root, tmp_path):
    cfg = resolve(cli=FLAGS)
    ds = open_prepared("embedded", tiny_root)
    torch.manual_seed(0)
    model = Poisoned(build_model(cfg, ds))
    t = setup(cfg, ds, model, tmp_path, device=torch.device("cpu"), options=TrainOptions(adam=adam), dist=SINGLE)
    assert t.paths.adam == adam and t.paths.skip == ("device" if adam == "fused" else "host")
    wrap_model(t)
    model.train()
    t.state.order = t.rng.permutation(len(ds.splits["train"]))
    batches = t.loader.batches("train", t.state.order, [step_rows(t, s)[:2] for s in range(4)])

    def snapshot():
        return ([p.detach().clone() for p in t.params],
                [{k: v.clone() for k, v in t.opt.state[p].items()} for p in t.params])

    train_step(t, *next(batches))
    weights, states = snapshot()
    model.kind = kind
    train_step(t, *next(batches))  # the bad step: nothing of it is applied
    after, after_states = snapshot()
    assert all(torch.equal(a, b) for a, b in zip(weights, after))
    assert all(torch.equal(s[k], a[k]) for s, a in zip(states, after_states) for k in s)  # Adam state and step too
    train_step(t, *next(batches))  # a good step after it trains on
    assert not all(torch.equal(a, p) for a, p in zip(weights, t.params))
    model.kind = kind
    train_step(t, *next(batches))
    assert len(t.pending) == 4 and t.state.step == 4
    with pytest.raises(NonFiniteError) as info:
        read_steps(t)
    e = info.value
    assert (e.epoch, e.step, e.what, e.skipped) == (0, 1, kind, 2)
    assert e.record()["skipped_steps"] == 2 and t.state.samples == 0  # nothing of the read was summed


def test_fused_adam_run_stops_at_the_first_bad_step_with_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    from svqbench import experiment
    from svqbench.checkpoint import CHECKPOINT, read_checkpoint
    real = experiment.build_model

    def build(c, d):
        model = Poisoned(real(c, d))
        calls = [0]
        inner_forward = model.forward

        def forward(x, **model_inputs):
            if model.training:
                calls[0] += 1
                if calls[0] in (6, 7):  # epoch 1 steps 1 and 2
                    model.kind = "loss"
            return inner_forward(x, **model_inputs)
        model.forward = forward
        return model
    monkeypatch.setattr(experiment, "build_model", build)
    with pytest.raises(NonFiniteError):
        experiment.run_experiment(resolve(cli=FLAGS), results_dir=tmp_path, data_dir=tiny_root, run_id="nan",
                                  options=TrainOptions(adam="fused", log_every=50, checkpoint_every=0))
    failure = json.loads((tmp_path / "nan" / "metrics.json").read_text())["failure"]
    assert (failure["epoch"], failure["step"], failure["skipped_steps"]) == (1, 1, 2)
    assert failure["last_good_checkpoint"] == CHECKPOINT
    kept = read_checkpoint(tmp_path / "nan" / CHECKPOINT)
    assert (kept["loop"]["epoch"], kept["loop"]["step"]) == (1, 0)


def test_runtime_records_the_options_and_the_paths_taken(tiny_root, tmp_path):
    from svqbench.experiment import run_experiment
    cfg = resolve(cli={**FLAGS, "epochs": 1})
    default = run_experiment(cfg, results_dir=tmp_path, data_dir=tiny_root, run_id="default")
    assert default["runtime"]["paths"] == {"data": "device", "adam": "for-loop", "cudnn_benchmark": False,
                                           "skip": "host"}
    assert (default["runtime"]["data_on_device"], default["runtime"]["log_every"], default["runtime"]["adam"]) == \
        ("auto", 50, "auto")
    run_experiment(cfg, results_dir=tmp_path, data_dir=tiny_root, run_id="asked",
                   options=TrainOptions(data_on_device="no", log_every=7, adam="fused"))
    runtime = json.loads((tmp_path / "asked" / "config.json").read_text())["runtime"]
    assert {k: runtime[k] for k in ("data_on_device", "log_every", "adam")} == \
        {"data_on_device": "no", "log_every": 7, "adam": "fused"}
    assert runtime["paths"] == {"data": "host-prefetch", "adam": "fused", "cudnn_benchmark": False, "skip": "device"}
    assert json.loads((tmp_path / "asked" / "metrics.json").read_text())["runtime"] == runtime


@pytest.mark.parametrize("options, message", [
    (dict(data_on_device="sometimes"), "unknown data-on-device 'sometimes'"),
    (dict(log_every=0), "log-every must be >= 1"),
    (dict(adam="lion"), "unknown adam 'lion'"),
])
def test_bad_runtime_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        TrainOptions(**options)


def test_cli_refuses_a_bad_data_on_device_in_one_line(tmp_path, monkeypatch, capsys):
    from svqbench import cli
    monkeypatch.setattr(sys, "argv", ["svqbench", "run", "--data-on-device", "maybe", "--quiet",
                                      "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "data-on-device" in err[0]


def test_resuming_with_another_adam_implementation_moves_its_step_counters():
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(2, 3))]
    fused = torch.optim.Adam(params, lr=0.1, fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    fused.step()
    saved = fused.state_dict()
    plain = torch.optim.Adam(params, lr=0.1)
    plain.load_state_dict(saved)  # brings fused=True along
    assert plain.param_groups[0]["fused"] is True
    use_adam(plain, "for-loop", torch.device("cpu"))
    assert plain.param_groups[0]["fused"] is None and plain.param_groups[0]["foreach"] is None
    plain.step()
    assert all(plain.state[p]["step"].item() == 2 and plain.state[p]["step"].device.type == "cpu" for p in params)
