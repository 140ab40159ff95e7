"""`svqbench export RUN DIR`: safetensors weights + config + normalisation stats that load back
(without svqbench's checkpoint format) into the same forecasts."""
from __future__ import annotations

import json
import shutil
import sys

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


def test_a_broken_export_is_one_line(exported, tmp_path):
    _, _, dest = exported
    broken = tmp_path / "broken"
    shutil.copytree(dest, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="model.safetensors cannot be read"):
        load_exported(broken)
    weights = load_file(dest / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("dec")}, broken / "model.safetensors")
    with pytest.raises(UserError, match="model.safetensors does not fit the model config.json describes"):
        load_exported(broken)
    with pytest.raises(UserError, match="is not an svqbench export"):
        load_exported(tmp_path)
