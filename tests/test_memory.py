"""svqbench.memory: a training step's memory estimated before the first batch, and out-of-memory as a run failure."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import cli

from svqbench import memory
from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.models import ForecastShape, build_model
from svqbench.profile import _peak_memory_bytes, measure

SMALL = dict(dataset="embedded", hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, codebook_size=64, batch_size=16)
SHAPE = ForecastShape(in_len=4, out_len=2, channels=1, height=16, width=24)


@pytest.fixture(scope="module")
def small():
    cfg = resolve(cli=SMALL)
    return cfg, memory.estimate_step(cfg, SHAPE)


def test_the_traced_estimate_follows_torchs_own_allocation_record(small):
    """The torch profiler's replay of every CPU allocation and free of a real forward + backward at
    batch 16 (model and gradients as the estimate assumes) against the estimate traced on `meta` at
    batches 2 and 4: at most what torch allocates (the trace sees tensors, not kernels' scratch space)
    and within the slack FIT_FRACTION leaves (13% below here). The part by size (weights, Adam) is exact."""
    cfg, step = small
    model = build_model(cfg, SHAPE).train()
    x, y = torch.randn(16, 4, 1, 16, 24), torch.randn(16, 2, 1, 16, 24)

    def forward_backward():
        pred, aux = model(x, target=y, step=0)
        (F.l1_loss(pred, y) + aux + model.regularizer(pred, y)).backward()
    measured = _peak_memory_bytes(torch.device("cpu"), forward_backward)
    assert step.traced_on == "meta"
    assert memory.FIT_FRACTION * measured <= step.traced(16) <= measured, (step.traced(16), measured)
    params = [p for p in model.parameters() if p.requires_grad]
    assert step.optimizer == 2 * sum(p.numel() * 4 for p in params)  # fp32 weights
    assert step.weights == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def test_the_trial_leaves_the_callers_random_stream_alone(small):
    cfg, _ = small
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    memory.estimate_step(cfg, SHAPE)
    assert torch.equal(torch.rand(5), expected)


def test_a_huge_batch_is_refused_with_the_figures_and_the_largest_batch_that_fits(small):
    cfg, step = small
    free = 64 * 2**20
    with pytest.raises(UserError) as info:
        memory.check_batch(cfg, SHAPE, 100000, "cpu", available=(free, "a 64 MiB figure"), step=step)
    message = str(info.value)
    assert "\n" not in message
    assert re.fullmatch(r"--batch-size 100000: a training step needs about \d+\.\d\d GiB \(estimated\), more than "
                        r"80% of the 0\.06 GiB available \(a 64 MiB figure\) on cpu; the largest batch that fits is "
                        r"\d+; lower --batch-size", message), message
    largest = int(re.search(r"the largest batch that fits is (\d+)", message).group(1))
    assert largest >= 1
    assert memory.check_batch(cfg, SHAPE, largest, "cpu", available=(free, "x"), step=step) is step
    with pytest.raises(UserError, match=f"--batch-size {largest + 1}: "):
        memory.check_batch(cfg, SHAPE, largest + 1, "cpu", available=(free, "x"), step=step)


def test_the_memory_limit_variable_caps_what_is_available(monkeypatch):
    real, source = memory.available_memory("cpu")
    assert real > 2**29 and source in ("MemAvailable", "room under the cgroup memory limit")
    monkeypatch.setenv(memory.LIMIT_ENV, "0.5")
    assert memory.available_memory("cpu") == (2**29, "SVQBENCH_MEMORY_LIMIT=0.5")
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(UserError, match="SVQBENCH_MEMORY_LIMIT='lots': give the memory to use in GiB"):
        memory.available_memory("cpu")


def test_cgroup_limits_lower_the_available_memory(tmp_path):
    """A v1 hierarchy (as on this project's machines) and a v2 one, with the limit set on a parent."""
    v1 = tmp_path / "v1"
    leaf = v1 / "memory" / "jobs" / "run1"
    leaf.mkdir(parents=True)
    (v1 / "memory" / "jobs" / "memory.limit_in_bytes").write_text(f"{3 * 2**30}\n")
    (v1 / "memory" / "jobs" / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory" / "jobs" / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {2**20}\n")
    (leaf / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit of its own
    (leaf / "memory.usage_in_bytes").write_text("4096\n")
    proc = tmp_path / "cgroup1"
    proc.write_text("5:cpu:/\n4:memory:/jobs/run1\n0::/\n")
    assert memory._cgroup_room(v1, proc) == 2 * 2**30 + 2**20
    v2 = tmp_path / "v2"
    (v2 / "user" / "job").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("memory\n")
    (v2 / "user" / "memory.max").write_text(f"{2**30}\n")
    (v2 / "user" / "memory.current").write_text(f"{2**28}\n")
    (v2 / "user" / "job" / "memory.max").write_text("max\n")
    proc.write_text("0::/user/job\n")
    assert memory._cgroup_room(v2, proc) == 3 * 2**28
    proc.write_text("0::/\n")
    assert memory._cgroup_room(v2, proc) is None


def test_run_refuses_a_batch_that_cannot_fit_before_it_creates_anything(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SVQBENCH_DATA", str(data_root))
    monkeypatch.setenv(memory.LIMIT_ENV, "0.25")
    results = tmp_path / "results"
    code, _, err = cli(["run", "--batch-size", "100000", "--epochs", "1", "--quiet", "--results-dir", str(results),
                        "--name", "huge"], monkeypatch, capsys)
    assert code == 2
    assert re.search(r"error: --batch-size 100000 \(steps of 146 windows: the train split holds 146\): a training "
                     r"step needs about \d+\.\d\d GiB \(estimated\), more than 80% of the 0\.25 GiB available "
                     r"\(SVQBENCH_MEMORY_LIMIT=0\.25\) on cpu; the largest batch that fits is \d+; lower --batch-size",
                     err), err
    assert "Traceback" not in err and not (results / "huge").exists()


def test_profile_refuses_a_given_batch_and_lowers_its_default_to_one_that_fits(small, monkeypatch):
    cfg, step = small
    budget = step.at(5) + step.per_sample // 2  # batch 5 fits, 6 does not
    monkeypatch.setenv(memory.LIMIT_ENV, repr(budget / memory.FIT_FRACTION / 2**30))
    with pytest.raises(UserError, match=r"--batch-size 16: a training step needs about .* the largest batch that "
                                        r"fits is 5; lower --batch-size"):
        measure(cfg, SHAPE, batch_size=16, steps=1)
    row = measure(cfg, SHAPE, steps=1)
    assert row["batch_size"] == 5 and cfg.batch_size == 16
    monkeypatch.setenv(memory.LIMIT_ENV, repr(step.at(1) / 2 / 2**30))
    with pytest.raises(UserError, match=r"^a batch of 1: a training step needs about .* not even a batch of 1 fits: "
                                        r"choose a smaller model or free memory$"):
        measure(cfg, SHAPE, steps=1)


OOM_RUN = textwrap.dedent("""
    import resource, sys
    import torch, svqbench.cli, svqbench.experiment, svqbench.memory  # loaded before the cap
    vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
    # an address-space cap 1.5 GiB above what the process maps now: the step of 146 windows
    # (about 4.8 GB by the estimate) cannot be allocated, while the estimate reads MemAvailable
    resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**29, resource.RLIM_INFINITY))
    sys.argv = ["svqbench", *sys.argv[1:]]
    svqbench.cli.main()
""")


def test_out_of_memory_inside_the_loop_is_a_one_line_failure_with_status_failed(data_root, tmp_path):
    env = dict(os.environ, SVQBENCH_DATA=str(data_root), OMP_NUM_THREADS="1", COLUMNS="200")
    env.pop(memory.LIMIT_ENV, None)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-c", OOM_RUN, "run", "--batch-size", "146", "--epochs", "1", "--quiet",
                           "--results-dir", str(results), "--name", "oom"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "run failed: out of memory at batch size 146; lower --batch-size\n" in proc.stderr
    assert "Traceback" not in proc.stderr
    metrics = json.loads((results / "oom" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["failure"]["reason"] == "out of memory"
    assert metrics["failure"]["batch_size"] == 146 and "allocat" in metrics["failure"]["error"].lower()
    assert not (results / "leaderboard.csv").exists() or "oom" not in (results / "leaderboard.csv").read_text()


def test_only_out_of_memory_errors_are_turned_into_the_failure():
    with pytest.raises(memory.OutOfMemory, match=r"^out of memory at batch size 8; lower --batch-size$") as info:
        with memory.out_of_memory_as_failure(8):
            torch.empty(2**62, dtype=torch.uint8)  # a real refusal by the CPU allocator (4 EiB)
    assert "DefaultCPUAllocator: can't allocate memory" in info.value.record()["error"]
    with pytest.raises(memory.OutOfMemory):
        with memory.out_of_memory_as_failure(8):
            raise MemoryError()  # numpy's, when a batch is gathered on the host
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with memory.out_of_memory_as_failure(8):
            raise RuntimeError("shape mismatch")
