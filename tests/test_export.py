"""`svqbench export RUN DIR`: safetensors weights + config + normalisation stats that load back
(without svqbench's checkpoint format) into the same forecasts."""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import svqbench
from svqbench.config import RunConfig, resolve
from svqbench.errors import UserError
from svqbench.experiment import run_experiment
from svqbench.export import export_run, load_exported
from svqbench.models import ForecastShape, build_model

TINY = dict(hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, epochs=1, batch_size=8, warmup_epochs=0, codebook_size=32)


@pytest.fixture(scope="module")
def exported(embedded_root, tmp_path_factory):
    """A tiny run (global normalisation, so the stats matter) and its export: (results, data, export dir)."""
    root = tmp_path_factory.mktemp("export")
    run_experiment(resolve(cli=dict(TINY, norm="global")), results_dir=root / "results", data_dir=embedded_root,
                   run_id="e1")
    return root / "results", embedded_root, export_run("e1", root / "shared", results_dir=root / "results")


def test_export_holds_safetensors_config_stats_metrics_and_readme(exported):
    results, data, dest = exported
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors",
                                                      "normalisation.json"]
    best = torch.load(results / "e1" / "best.pt", weights_only=True)["model"]
    weights = load_file(dest / "model.safetensors")
    assert weights.keys() == best.keys() and all(torch.equal(weights[k], best[k]) for k in best)
    with safe_open(dest / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "svqbench-export-1", "run_id": "e1"}
    config = json.loads((dest / "config.json").read_text())
    assert config["config"] == resolve(cli=dict(TINY, norm="global")).to_dict()
    assert config["weights_sha256"] == hashlib.sha256((dest / "model.safetensors").read_bytes()).hexdigest()
    assert config["shape"] == {"in_len": 10, "out_len": 5, "channels": 1, "height": 37, "width": 49}
    norm = json.loads((dest / "normalisation.json").read_text())
    meta = json.loads((data / "embedded" / "meta.json").read_text())
    assert norm["norm"] == "global" and norm["mean"] == meta["stats"]["mean"] and norm["std"] == meta["stats"]["std"]
    assert json.loads((dest / "metrics.json").read_text()) == json.loads((results / "e1" / "metrics.json").read_text())
    assert "load_run(" in (dest / "README.md").read_text() and "safetensors" in (dest / "README.md").read_text()


def test_export_loads_back_into_the_same_forecasts_without_the_run_folder(exported, tmp_path):
    results, data, dest = exported
    run = svqbench.load_run("e1", results_dir=results, data_dir=data)
    x = np.stack([run.dataset.window("test", i)[0] for i in range(4)])
    expected = run.forecast(x)
    moved = tmp_path / "elsewhere"
    shutil.copytree(dest, moved)  # no best.pt, no results folder, no dataset beside it
    for loaded in (svqbench.load_exported(moved), svqbench.load_run(moved)):
        assert loaded.saved is None and loaded.config == run.config and not loaded.model.training
        np.testing.assert_array_equal(loaded.forecast(x), expected)
        assert loaded.metrics["test"] == run.metrics["test"]
        with pytest.raises(UserError, match="loaded from an export, which carries no dataset"):
            loaded.dataset


def test_export_readme_recipe_without_svqbench_loading_code(exported):
    """What the export's README shows: build_model + safetensors, normalise by normalisation.json."""
    results, data, dest = exported
    cfg = json.loads((dest / "config.json").read_text())
    norm = json.loads((dest / "normalisation.json").read_text())
    model = build_model(RunConfig(**cfg["config"]), ForecastShape(**cfg["shape"]))
    model.load_state_dict(load_file(dest / "model.safetensors"))
    model.eval()
    run = svqbench.load_run("e1", results_dir=results, data_dir=data)
    x = run.dataset.window("test", 0)[0][None]
    mean, std = np.float32(norm["mean"][0]), np.float32(norm["std"][0])
    with torch.no_grad():
        y, _ = model(torch.from_numpy((x - mean) / std))
    np.testing.assert_allclose(y.numpy() * std + mean, run.forecast(x), rtol=0, atol=1e-4)


def test_export_refuses_a_non_empty_folder_and_a_file(exported, tmp_path, monkeypatch, capsys):
    results, _, _ = exported
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("mine too")
    from svqbench import cli as module
    for dest, message in ((full, "exists and is not empty"), (afile, "is a file; give a folder"),
                          (tmp_path / "new", None)):
        monkeypatch.setattr(sys, "argv", ["svqbench", "export", "e1", str(dest), "--results-dir", str(results)])
        with pytest.raises(SystemExit) as info:
            module.main()
        err = capsys.readouterr().err
        if message:
            assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        else:
            assert info.value.code == 0 and (dest / "model.safetensors").is_file()
    assert (full / "notes.txt").read_text() == "mine" and afile.read_text() == "mine too"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def _record_digest(folder: Path) -> None:
    """Make config.json's sha256 match the weights file as it is now (an export wrong from the start)."""
    config = json.loads((folder / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def test_a_broken_export_is_one_line(exported, tmp_path):
    _, _, dest = exported
    broken = tmp_path / "broken"
    shutil.copytree(dest, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    _record_digest(broken)
    with pytest.raises(UserError, match="model.safetensors cannot be read"):
        load_exported(broken)
    weights = load_file(dest / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("dec")}, broken / "model.safetensors")
    _record_digest(broken)
    with pytest.raises(UserError, match="model.safetensors does not fit the model config.json describes"):
        load_exported(broken)
    with pytest.raises(UserError, match="is not an svqbench export"):
        load_exported(tmp_path)


# ---- what a load checks: the weights' digest, the statistics (issue 19 item 18) -----------------

def test_a_flipped_bit_in_the_weights_is_refused_naming_the_file(exported, tmp_path):
    _, _, dest = exported
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-100] ^= 0x01  # one bit of a weight: still valid safetensors, another model
    (copy / "model.safetensors").write_bytes(bytes(raw))
    assert load_file(copy / "model.safetensors").keys() == load_file(dest / "model.safetensors").keys()
    for load in (load_exported, svqbench.load_run):
        with pytest.raises(UserError, match=rf"{copy / 'model.safetensors'} has sha256 \w{{12}}\.\.\., not the "
                                            rf"\w{{12}}\.\.\. that config.json records: the file changed since export"):
            load(copy)


@pytest.mark.parametrize("change, message", [
    (lambda n: n.update(std=[0.0]), "std of channel 0 is 0.0, must be a finite number > 0"),
    (lambda n: n.update(std=[-1.5]), "std of channel 0 is -1.5, must be a finite number > 0"),
    (lambda n: n.update(mean=[float("nan")]), "mean of channel 0 is nan, must be a finite number"),
    (lambda n: n.update(mean=["280"]), "mean of channel 0 is '280', must be a finite number"),
    (lambda n: n.update(std=[1.0, 2.0]), r"std needs one number per channel \(1\), got 2 values"),
    (lambda n: n.pop("mean"), r"mean needs one number per channel \(1\), got None"),
])
def test_bad_normalisation_statistics_are_refused_naming_the_file(exported, tmp_path, change, message):
    """std = 0 used to load and forecast NaN everywhere without a word."""
    _, _, dest = exported
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    norm = json.loads((copy / "normalisation.json").read_text())
    change(norm)
    (copy / "normalisation.json").write_text(json.dumps(norm))
    with pytest.raises(UserError, match=rf"{copy / 'normalisation.json'}: {message}; export the run again"):
        load_exported(copy)


def test_an_export_without_a_digest_is_refused(exported, tmp_path):
    _, _, dest = exported
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["weights_sha256"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="config.json records no sha256 of model.safetensors .* export the run again"):
        load_exported(copy)


# ---- killed mid-export (issue 19 item 12) -------------------------------------------------------

SLOW_EXPORT = """
import sys, time
import svqbench.export as export
ready = sys.argv[1]
def write_json(path, obj, real=export.write_json):
    real(path, obj)
    open(ready, "w").close()  # weights and config.json are in the temp folder now
    time.sleep(120)           # a slow disk: the test kills the process here
export.write_json = write_json
from svqbench.cli import main
sys.argv = ["svqbench", *sys.argv[2:]]
main()
"""


def _export_killed(args: list[str], tmp_path: Path, signum: int) -> tuple[subprocess.Popen, str]:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(ready), *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate()[1] if proc.poll() is not None else "no write within 120 s"
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1]
    ready.unlink()
    return proc, err


def test_a_killed_export_leaves_a_temp_folder_that_the_next_export_removes(exported, tmp_path, monkeypatch, capsys):
    results, _, _ = exported
    out = tmp_path / "out"
    out.mkdir()
    args = ["export", "e1", str(out / "shared"), "--results-dir", str(results)]
    proc, _ = _export_killed(args, tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == [f".shared.tmp-{proc.pid}"]  # what a SIGKILL leaves
    from helpers import cli
    code, _, err = cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["shared"] and load_exported(out / "shared").run_id == "e1"


def test_sigterm_stops_an_export_cleanly(exported, tmp_path):
    results, _, _ = exported
    out = tmp_path / "out"
    out.mkdir()
    proc, err = _export_killed(["export", "e1", str(out / "shared"), "--results-dir", str(results)], tmp_path,
                               signal.SIGTERM)
    assert proc.returncode == 143 and err.strip() == f"interrupted by SIGTERM: nothing was exported to {out / 'shared'}"
    assert list(out.iterdir()) == []
