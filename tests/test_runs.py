"""A saved run is found, read and rebuilt one way: every command that takes a run honours --data-dir,
also for a dataset the user prepared under a folder of their own."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from svqbench.errors import UserError
from svqbench.runs import find_run, open_run


@pytest.fixture(scope="module")
def user_run(embedded_root, tmp_path_factory):
    """A tiny finished run on `mine`, a dataset that lives only under a custom data dir."""
    from svqbench.config import resolve
    from svqbench.experiment import run_experiment
    root = tmp_path_factory.mktemp("custom")
    data, results = root / "my-data", root / "my-results"
    shutil.copytree(embedded_root / "embedded", data / "mine")
    cfg = resolve(cli=dict(dataset="mine", hid_s=8, hid_t=16, n_t=2, mlp_ratio=2.0, epochs=1, batch_size=64,
                           codebook_size=32, warmup_epochs=0), data_dir=data)
    run_experiment(cfg, results_dir=results, data_dir=data, run_id="u1")
    return data, results


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "svqbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="250"))


@pytest.mark.parametrize("command", ["evaluate", "analyze", "compare", "profile"])
def test_commands_use_the_custom_data_dir(command, user_run, tmp_path):
    data, results = user_run
    args = {"evaluate": ["evaluate", "u1", "--split", "val", "--results-dir", str(results)],
            "analyze": ["analyze", "u1", "--results-dir", str(results)],
            "compare": ["compare", str(results), "--plots", str(tmp_path / "figs")],
            "profile": ["profile", "--dataset", "mine", "--steps", "1", "--codebook-size", "64", "--batch-size", "2",
                        "--csv", str(tmp_path / "p.csv")]}[command]
    out = _cli(args + ["--data-dir", str(data)], cwd=tmp_path)  # no ./data here
    assert out.returncode == 0, out.stderr
    if command == "compare":
        assert (tmp_path / "figs" / "mine-quick-gsta-sample-svq.png").is_file()
    if command == "analyze":
        assert (results / "u1" / "analysis" / "codebook_pca.png").is_file()


def test_open_run_rebuilds_the_model_it_saved(user_run):
    data, results = user_run
    run = open_run("u1", results_dir=results, data_dir=data)
    assert run.config.dataset == "mine" and run.dir == results / "u1"
    model = run.model(run.dataset())
    best = torch.load(results / "u1" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items()) and not model.training


def test_bad_run_folders_are_one_line_errors(user_run, tmp_path):
    data, results = user_run
    with pytest.raises(UserError, match="no run 'nope'"):
        find_run("nope", results)
    broken = tmp_path / "broken"
    shutil.copytree(results / "u1", broken)
    (broken / "config.json").write_text("{")
    with pytest.raises(UserError, match="config.json is not a readable svqbench file"):
        open_run(broken)
    record = json.loads((results / "u1" / "config.json").read_text())
    record["config"]["lrr"] = 1
    (broken / "config.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="config key\\(s\\) this svqbench does not know: lrr"):
        open_run(broken)
    with pytest.raises(UserError, match="unknown dataset|not prepared"):
        open_run("u1", results_dir=results, data_dir=tmp_path).dataset()


# ---- issue 19 item 17: a wrong-typed value in a run's config.json

@pytest.mark.parametrize("command", ["load_run", "evaluate", "predict", "export", "resume"])
def test_a_wrong_typed_config_value_is_one_line_naming_file_and_field(command, user_run, tmp_path, monkeypatch,
                                                                      capsys):
    from helpers import cli
    from svqbench.runs import load_run
    data, results = user_run
    broken = tmp_path / "results" / "u1"
    shutil.copytree(results / "u1", broken)
    record = json.loads((broken / "config.json").read_text())
    record["config"]["hid_s"] = "eight"
    (broken / "config.json").write_text(json.dumps(record))
    message = f"bad value 'eight' for hid_s in {broken / 'config.json'}: expected int"
    if command == "load_run":
        with pytest.raises(UserError, match=message):
            load_run(broken, data_dir=data)
        return
    (broken / "metrics.json").unlink()  # a resume would otherwise stop at "already finished"
    args = {"evaluate": ["evaluate", str(broken)], "predict": ["predict", str(broken), "--out", str(tmp_path / "f.nc")],
            "export": ["export", str(broken), str(tmp_path / "export")],
            "resume": ["run", "--resume", str(broken)]}[command]
    code, _, err = cli(args + ["--data-dir", str(data)], monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: {message}"], err
    assert not (tmp_path / "export").exists() and not (tmp_path / "f.nc").exists()


def test_a_quoted_number_in_config_json_reads_as_run_config_reads_it(user_run, tmp_path):
    from svqbench.runs import recorded_config
    data, results = user_run
    edited = tmp_path / "u1"
    shutil.copytree(results / "u1", edited)
    record = json.loads((edited / "config.json").read_text())
    record["config"]["epochs"] = "3"
    (edited / "config.json").write_text(json.dumps(record))
    assert open_run(edited).config.epochs == 3 == recorded_config(edited)[0]["epochs"]  # one validation, both paths
