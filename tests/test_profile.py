"""`svqbench profile`: sizes, MACs by torch's flop counter, both SVQ paths, CSV rows, user errors."""
from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from svqbench.cli import app
from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.data import dataset_spec
from svqbench.models import ForecastShape, build_model
from svqbench.profile import count_macs, count_sizes, dataset_shape, measure

SMALL = dict(hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, batch_size=2)
SHAPE = ForecastShape(in_len=3, out_len=3, channels=1, height=8, width=12)


def test_dense_svq_costs_exactly_its_three_products_per_token():
    """MACs(dense SVQ) - MACs(no quantizer) = N (C*h + h*K + K*C) for N = T*H'*W' tokens of one sample."""
    k, hidden = 500, 128
    base = resolve(cli=dict(SMALL, dataset="embedded", quantizer="none"))
    dense = resolve(cli=dict(SMALL, dataset="embedded", quantizer="svq", codebook_size=k, svq_impl="dense"))
    fact = replace(dense, svq_impl="factorized")
    tokens = SHAPE.in_len * (SHAPE.height // 2) * (SHAPE.width // 2)
    c = dense.hid_s
    assert count_macs(dense, SHAPE) - count_macs(base, SHAPE) == tokens * (c * hidden + hidden * k + k * c)
    # factorized: the token MLP's first layer and a (h x C) product per token, plus (h x K)(K x C) and
    # the bias product (K x C) once per pass
    assert count_macs(fact, SHAPE) - count_macs(base, SHAPE) == tokens * 2 * c * hidden + hidden * k * c + k * c


def test_attention_is_counted():
    cfg = resolve(cli=dict(SMALL, dataset="embedded", quantizer="none", backbone="vit"))
    none = resolve(cli=dict(SMALL, dataset="embedded", quantizer="none", backbone="poolformer"))
    n, d = (SHAPE.height // 2) * (SHAPE.width // 2), cfg.hid_t
    # ViT's MACs exceed a pooling mixer's by at least the q k^T and attn v products of its middle block
    assert count_macs(cfg, SHAPE) - count_macs(none, SHAPE) >= 2 * n * n * d


def test_sizes_split_trainable_frozen_and_buffers():
    cfg = resolve(cli=dict(SMALL, dataset="embedded", quantizer="svq", codebook_size=40, frozen_codebook=True))
    sizes = count_sizes(build_model(cfg, SHAPE))
    assert sizes["params_frozen"] == 40 * cfg.hid_s
    assert sizes["codebook_buffers"] == 0
    assert sizes["params_trainable"] > 0


def test_measure_reports_times_memory_and_the_dense_path_costs_more():
    cfg = resolve(cli=dict(SMALL, dataset="embedded", quantizer="svq", codebook_size=4000))
    shape = ForecastShape(in_len=3, out_len=3, channels=1, height=16, width=24)
    fact = measure(cfg, shape, steps=1, batch_size=4)
    dense = measure(replace(cfg, svq_impl="dense"), shape, steps=1, batch_size=4)
    assert fact["params_trainable"] == dense["params_trainable"]
    assert dense["macs_g"] > 5 * fact["macs_g"] and fact["flops_g"] == pytest.approx(2 * fact["macs_g"], abs=2e-4)
    for row in (fact, dense):
        assert row["train_step_ms"] > 0 and row["forward_ms"] > 0 and row["train_samples_per_s"] > 0
    # the dense path keeps an (N x K) weight tensor for backward: 4 x 3 x 8 x 12 tokens x 4000 x 4 bytes = 17.6 MB
    assert dense["peak_step_memory_mb"] > fact["peak_step_memory_mb"] + 17.5


def test_shapes_of_known_and_prepared_datasets(data_root):
    assert dataset_shape("kth") == ForecastShape(10, 20, 1, 128, 128)
    assert dataset_shape("embedded", data_root) == dataset_spec("embedded").shape
    with pytest.raises(UserError, match="not prepared"):
        dataset_shape("my-netcdf-set", data_root)
    with pytest.raises(UserError, match="steps must be >= 1"):
        measure(resolve(cli=dict(SMALL, dataset="embedded")), SHAPE, steps=0)


def test_cli_prints_both_svq_paths_with_other_impl_and_appends_rows(tmp_path):
    out = tmp_path / "p" / "profile.csv"
    args = ["profile", "--dataset", "taxibj", "--backbone", "convnext", "--quantizer", "svq", "--batch-size", "1",
            "--steps", "1", "--codebook-size", "64", "--csv", str(out), "--other-impl"]
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "svq factorized" in result.output and "svq dense" in result.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["svq_impl"] for r in rows] == ["factorized", "dense"] * 2
    assert {r["dataset"] for r in rows} == {"taxibj"} and {r["backbone"] for r in rows} == {"convnext"}
    assert float(rows[1]["macs_g"]) > float(rows[0]["macs_g"])


def test_cli_rejects_an_unknown_backbone_in_one_line():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "svqbench", "profile", "--backbone", "resnet"], capture_output=True,
                          text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 2
    assert "resnet" in proc.stderr and "Traceback" not in proc.stderr


def test_baselines_that_cannot_run_on_meta_are_counted_on_cpu_with_attention_and_buffers():
    vit = resolve(cli=dict(SMALL, dataset="embedded", quantizer="vq", codebook_size=32, backbone="vit"))
    pool = replace(vit, backbone="poolformer")
    n, d = (SHAPE.height // 2) * (SHAPE.width // 2), vit.hid_t
    assert count_macs(vit, SHAPE) - count_macs(pool, SHAPE) >= 2 * n * n * d  # CPU attention counted
    assert count_sizes(build_model(vit, SHAPE))["codebook_buffers"] >= 32 * vit.hid_s  # EMA codebook


def test_cli_profiles_one_row_by_default_and_prints_no_warning_on_stderr(tmp_path):
    """The dense SVQ row is opt-in (--other-impl); the CPU memory replay (torch.profiler) leaves no
    kineto lines (profiler_start/stop, gpuGetDeviceCount failed) nor c10 warnings on stderr."""
    import subprocess
    import sys
    out = tmp_path / "profile.csv"
    proc = subprocess.run([sys.executable, "-m", "svqbench", "profile", "--dataset", "taxibj", "--backbone", "convnext",
                           "--quantizer", "svq", "--batch-size", "1", "--steps", "1", "--codebook-size", "64", "--csv",
                           str(out)], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "", "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    with open(out, newline="") as f:
        assert [r["svq_impl"] for r in csv.DictReader(f)] == ["factorized"]
