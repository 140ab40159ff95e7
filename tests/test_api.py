"""The Python API (`from svqbench import load_run`), the reproducibility record of config.json,
`svqbench --version`, `run --config` / `--print-config`, and the README examples of these sections."""
from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli
import torch

import svqbench
from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.experiment import run_experiment

TINY = dict(hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, epochs=1, batch_size=8, warmup_epochs=0, codebook_size=32)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def run(embedded_root, tmp_path_factory):
    """A tiny finished run `my-run` under <cwd>/results, as the README examples expect."""
    cwd = tmp_path_factory.mktemp("api")
    metrics = run_experiment(resolve(cli=TINY), results_dir=cwd / "results", data_dir=embedded_root, run_id="my-run")
    return cwd, embedded_root, metrics


def test_load_run_gives_config_model_dataset_metrics_and_forecasts(run):
    cwd, data, metrics = run
    loaded = svqbench.load_run("my-run", results_dir=cwd / "results", data_dir=data)
    assert loaded.config == resolve(cli=TINY) and loaded.run_id == "my-run"
    assert not loaded.model.training and next(loaded.model.parameters()).device == torch.device("cpu")
    assert loaded.dataset.path == data / "embedded" and loaded.metrics["test"] == metrics["test"]
    ds = loaded.dataset
    x = np.stack([ds.window("test", i)[0] for i in range(3)])
    pred = loaded.forecast(x)
    assert pred.shape == (3, 5, 1, 37, 49) and pred.dtype == np.float32
    truth = np.stack([ds.window("test", i)[1] for i in range(3)])
    assert np.abs(pred - truth).mean() < 5  # kelvin, not normalised units
    np.testing.assert_array_equal(loaded.forecast(torch.from_numpy(x)), pred)  # a tensor works the same
    # the API forecast is the one `evaluate` scores: same normalisation, same model
    from svqbench.data.batches import to_tensors
    from svqbench.data.prepared import Batch
    xn, _, offset = to_tensors(ds, Batch(x, truth, np.arange(3)), loaded.config.norm, torch.device("cpu"))
    with torch.no_grad():
        direct = ds.denormalise(loaded.model(xn)[0].numpy(), offset.numpy())
    np.testing.assert_array_equal(pred, direct)


def test_forecast_refuses_wrong_shapes_and_nans(run):
    cwd, data, _ = run
    loaded = svqbench.load_run(cwd / "results" / "my-run", data_dir=data)
    with pytest.raises(UserError, match=r"x has shape \(2, 10, 1, 36, 49\); run my-run takes \(B, 10, 1, 37, 49\)"):
        loaded.forecast(np.zeros((2, 10, 1, 36, 49)))
    x = np.full((1, 10, 1, 37, 49), 280.0)
    x[0, 3, 0, 1, 1] = np.nan
    with pytest.raises(UserError, match="NaN or infinite"):
        loaded.forecast(x)
    with pytest.raises(UserError, match="no run 'missing'"):
        svqbench.load_run("missing", results_dir=cwd / "results")
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        svqbench.load_run("my-run", results_dir=cwd / "results", device="gpu0")


def test_load_run_needs_no_prepared_dataset_to_forecast(run, tmp_path):
    """Shape and train statistics come from config.json; only `.dataset` needs the data."""
    cwd, data, _ = run
    loaded = svqbench.load_run("my-run", results_dir=cwd / "results", data_dir=tmp_path / "empty")
    x = np.full((1, 10, 1, 37, 49), 285.0, dtype=np.float32)
    assert loaded.forecast(x).shape == (1, 5, 1, 37, 49)
    with pytest.raises(UserError, match="is not prepared"):
        loaded.dataset


# ---- the reproducibility record -------------------------------------------------------------

def test_config_json_records_command_git_versions_threads_device_and_host(run):
    import importlib.metadata

    import xarray
    cwd, _, _ = run
    record = json.loads((cwd / "results" / "my-run" / "config.json").read_text())
    assert record["command"] == sys.argv and record["svqbench"] == svqbench.__version__
    assert re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"]) and isinstance(record["git"]["dirty"], bool)
    head = subprocess.run(["git", "-C", str(README.parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["git"]["commit"] == head.stdout.strip()
    assert record["versions"] == {"numpy": np.__version__, "xarray": xarray.__version__, "torch": torch.__version__,
                                  "vector-quantize-pytorch": importlib.metadata.version("vector-quantize-pytorch")}
    assert record["torch_threads"] == torch.get_num_threads() >= 1
    assert record["device_name"] and record["host"] == socket.gethostname()


def test_git_state_is_null_outside_a_checkout(tmp_path):
    import shutil
    shutil.copytree(Path(svqbench.__file__).parent, tmp_path / "svqbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-c", "from svqbench.runs import git_state; print(git_state())"],
                         cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)})
    assert out.stdout.strip() == "None", out.stderr


def test_version_flag(monkeypatch, capsys):
    code, out, _ = cli(["--version"], monkeypatch, capsys)
    assert code == 0 and re.fullmatch(rf"svqbench {re.escape(svqbench.__version__)} \(git [0-9a-f]{{12}}(, dirty)?\)",
                                      out.strip()), out


def test_print_config_resolves_the_recorded_config_and_creates_nothing(run, tmp_path, monkeypatch, capsys):
    cwd, data, _ = run
    record = cwd / "results" / "my-run" / "config.json"
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["run", "--config", str(record), "--print-config", "--results-dir", str(tmp_path / "r"),
            "--data-dir", str(tmp_path / "d")]
    code, out, err = cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["config"] == json.loads(record.read_text())["config"]
    code, out, _ = cli(args + ["--epochs", "7", "--quantizer", "none"], monkeypatch, capsys)  # flags still win
    printed = json.loads(out)["config"]
    assert code == 0 and printed["epochs"] == 7 and printed["quantizer"] == "none" and printed["hid_s"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no results dir, no data dir
    (tmp_path / "printed.json").write_text(out)  # what --print-config prints is a --config file too
    code, again, _ = cli(["run", "--config", str(tmp_path / "printed.json"), "--print-config"], monkeypatch, capsys)
    assert code == 0 and json.loads(again) == json.loads(out)


@pytest.mark.parametrize("content, message", [
    (None, "--config {path}: no such file"),
    ({"config": {"epochs": 2, "colour": "red"}}, "config key(s) this svqbench does not know: colour"),
    ({"epochs": "many"}, "bad value 'many' for epochs in {path}: expected int"),
])
def test_bad_config_files_are_one_line(tmp_path, monkeypatch, capsys, content, message):
    path = tmp_path / "cfg.json"
    if content is not None:
        path.write_text(json.dumps(content))
    code, _, err = cli(["run", "--config", str(path), "--results-dir", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and message.format(path=path) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_config_with_resume_is_refused(run, monkeypatch, capsys):
    cwd, data, _ = run
    code, _, err = cli(["run", "--resume", "my-run", "--config", str(cwd / "results" / "my-run"), "--results-dir",
                        str(cwd / "results")], monkeypatch, capsys)
    assert code == 2 and "drop --config" in err


# ---- the README examples of these sections, as written ----------------------------------------

def _readme_blocks(title: str, language: str) -> list[str]:
    text = README.read_text()
    section = text.split(f"### {title}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def _commands(block: str) -> list[list[str]]:
    """The svqbench command lines of a bash block (continuations joined, `$(python -c ...)` evaluated)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        for code in re.findall(r"\$\(python -c '([^']*)'\)", line):
            value = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
            line = line.replace(f"$(python -c '{code}')", value)
        args = shlex.split(line, comments=True)
        if args and args[0] == "svqbench":
            out.append(args[1:])
    return out


def test_readme_api_example_runs_as_written(run, monkeypatch, capsys):
    cwd, data, metrics = run
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SVQBENCH_DATA", str(data))
    (block,) = _readme_blocks("`svqbench export RUN DIR` and the Python API", "python")
    assert len(block.strip().splitlines()) == 5
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed[:5] == ["(1,", "5,", "1,", "37,", "49)"] and float(printed[-1]) == metrics["test"]["mae_per_pixel"]


def test_readme_commands_run_as_written(run, monkeypatch, capsys):
    """Every command of the predict, export and reproducibility sections, in a folder holding
    results/my-run (a tiny run stands in for `svqbench run --name my-run`)."""
    cwd, data, metrics = run
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SVQBENCH_DATA", str(data))
    commands = [c for title in ("`svqbench predict RUN`", "`svqbench export RUN DIR`", "Reproducing a run")
                for block in _readme_blocks(title, "bash") for c in _commands(block)]
    assert len(commands) == 9 and commands[0] == ["run", "--name", "my-run"]
    outputs = {}
    for args in commands[1:]:
        code, out, err = cli(args, monkeypatch, capsys)
        assert code == 0, (args, err)
        outputs[" ".join(args)] = out
    for path in ("results/my-run/forecast_test.nc", "fc.zarr/.zgroup", "fc.npy", "fc.json",
                 "fc_strips/sample_00001.png", "e1.nc", "my-run-export/model.safetensors"):
        assert (cwd / path).exists(), path
    again = json.loads((cwd / "results" / "my-run-again" / "metrics.json").read_text())
    assert again["test"]["mse_per_pixel"] == metrics["test"]["mse_per_pixel"]  # the same run, the same numbers
    first = json.loads((cwd / "results" / "my-run" / "config.json").read_text())
    second = json.loads((cwd / "results" / "my-run-again" / "config.json").read_text())
    assert second["config"] == first["config"] and "--config" in second["command"]
