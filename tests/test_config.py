"""Config: precedence layer by layer, strict types, one flag per field with choices from the registries."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from svqbench.config import GENERIC_PRESET, RunConfig, choices, resolve
from svqbench.data import dataset_spec
from svqbench.errors import UserError


def test_precedence_defaults_then_preset_then_recipe_then_command_line():
    preset = dataset_spec("embedded").presets["quick"]
    assert RunConfig.lr == 5e-3 and RunConfig.epochs == 50 and RunConfig.norm == "global"
    # defaults < preset: the preset's epochs and norm replace the defaults, untouched fields stay
    base = resolve()
    assert (base.epochs, base.norm, base.warmup_lr) == (preset["epochs"], "window", RunConfig.warmup_lr)
    # preset < recipe
    recipe = resolve(recipe={"epochs": 7, "lr": 1e-3})
    assert (recipe.epochs, recipe.lr, recipe.norm) == (7, 1e-3, "window")
    # recipe < command line, and None on the command line means "not given"
    cli = resolve(recipe={"epochs": 7, "lr": 1e-3}, cli={"epochs": 3, "lr": None})
    assert (cli.epochs, cli.lr) == (3, 1e-3)
    # scale picks the preset layer
    assert resolve(cli={"scale": "paper"}).hid_s == dataset_spec("embedded").presets["paper"]["hid_s"] == 32


def test_a_user_dataset_gets_the_generic_preset_only_under_its_data_dir(embedded_root, tmp_path):
    import shutil
    shutil.copytree(embedded_root / "embedded", tmp_path / "mine")
    assert resolve(cli={"dataset": "mine"}, data_dir=tmp_path).epochs == GENERIC_PRESET["quick"]["epochs"]
    with pytest.raises(UserError, match="unknown dataset 'mine'"):
        resolve(cli={"dataset": "mine"}, data_dir=tmp_path / "elsewhere")


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(UserError, match="unknown config key.*in recipe: lrr"):
        resolve(recipe={"lrr": 1})
    for key, value in (("epochs", True), ("lr", True), ("frozen_codebook", 2), ("frozen_codebook", 1),
                       ("backbone", 5), ("epochs", 2.5)):
        with pytest.raises(UserError, match=f"bad value .* for {key} in recipe"):
            resolve(recipe={key: value})
    assert resolve(recipe={"lr": 1, "frozen_codebook": "true"}).lr == 1.0  # an int is a fine float


def test_bogus_choices_are_refused_when_resolving():
    with pytest.raises(UserError, match="unknown codebook-init 'bogus'; choose one of: normal"):
        resolve(cli={"codebook_init": "bogus"})
    with pytest.raises(UserError, match="unknown backbone 'resnet'"):
        resolve(cli={"backbone": "resnet"})


def test_quantizer_options_for_another_quantizer_are_refused():
    with pytest.raises(UserError, match="--svq-hidden applies to mlp and svq only, not --quantizer none"):
        resolve(cli={"quantizer": "none", "svq_hidden": 64})
    assert resolve(cli={"quantizer": "mlp", "svq_hidden": 64}).svq_hidden == 64
    # a recipe's shared K is fine for the cells without a codebook
    assert resolve(recipe={"quantizer": "none", "codebook_size": 64}).quantizer == "none"


def test_every_config_field_has_a_run_flag_with_its_choices():
    import typer.main

    from svqbench.cli import app
    command = typer.main.get_command(app).commands["run"]
    options = {p.name: p for p in command.params}
    for f in fields(RunConfig):
        assert f.name in options, f"no flag for {f.name}"
        assert options[f.name].help and f.metadata["help"] in options[f.name].help
        for value in choices(f.name):
            assert value in options[f.name].help
    out = subprocess.run([sys.executable, "-m", "svqbench", "run", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "250", "PATH": ""}, timeout=60)
    for flag in ("--min-lr", "--mlp-ratio", "--warmup-epochs", "--warmup-lr", "--weight-decay"):
        assert flag in out.stdout


# ---- issue 19 item 5: SimVP's n-s is even and >= 2 -------------------------------------------

def test_odd_or_small_n_s_is_refused_saying_what_it_would_build():
    from svqbench.models.simvp import SimVP
    for n_s, builds in ((1, "n-s 1 would build no encoder block; use n-s 2"),
                        (3, "n-s 3 would build 2 blocks, the same model as n-s 2; use n-s 2 or 4"),
                        (0, "n-s 0 would build no encoder block")):
        with pytest.raises(UserError, match=builds):
            resolve(cli={"n_s": n_s})
        with pytest.raises(ValueError, match=builds):  # the model refuses it too, when built directly
            SimVP(in_len=2, out_len=2, channels=1, height=8, width=8, hid_s=4, hid_t=8, n_s=n_s, n_t=2)
    # the even sizes every preset uses are OpenSTL's: [False, True] * (n_s // 2), the first block at full size
    for n_s in (2, 4):
        model = SimVP(in_len=2, out_len=2, channels=1, height=8, width=8, hid_s=4, hid_t=8, n_s=n_s, n_t=2)
        assert [b.conv.stride[0] for b in model.enc.blocks] == [1, 2] * (n_s // 2)
        assert len(model.dec.blocks) == n_s


# ---- issue 19 item 6: a warm-up as long as the run ------------------------------------------

def test_a_preset_warm_up_longer_than_the_run_is_shortened_with_a_note():
    from svqbench.train import lr_lambda
    preset = dataset_spec("embedded").presets["quick"]
    assert preset["warmup_epochs"] == 2 and preset["schedule"] == "cosine"
    notes: list[str] = []
    default = resolve(notes=notes)  # the default run is untouched
    assert (default.epochs, default.warmup_epochs, notes) == (preset["epochs"], 2, [])
    cfg = resolve(cli={"epochs": 2}, notes=notes)
    assert cfg.warmup_epochs == 1 and len(notes) == 1
    assert notes[0].startswith("note: warmup-epochs 2 (from the preset) is not below epochs 2: using 1")
    schedule = lr_lambda(cfg, 10)  # 10 steps per epoch: warm up for 10, then decay to min_lr
    assert schedule(10) == pytest.approx(1.0, abs=1e-12)
    decay = [schedule(s) for s in range(10, 20)]  # the second epoch's steps: the lr falls at each one
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] < 0.03
    assert schedule(20) == pytest.approx(cfg.min_lr / cfg.lr, rel=1e-9)
    assert resolve(cli={"epochs": 1}, notes=[]).warmup_epochs == 0
    recipe_notes: list[str] = []
    assert resolve(recipe={"epochs": 3, "warmup_epochs": 5}, notes=recipe_notes).warmup_epochs == 2
    assert "(from the recipe)" in recipe_notes[0]
    assert resolve(cli={"epochs": 2, "schedule": "onecycle"}, notes=[]).warmup_epochs == 2  # unused there
    with pytest.warns(UserWarning, match="using 1 so that the cosine schedule decays"):  # no notes list: a warning
        resolve(cli={"epochs": 2})


def test_a_warm_up_the_user_asked_for_is_never_changed_but_refused():
    for cli in ({"epochs": 2, "warmup_epochs": 2}, {"warmup_epochs": 40}):
        with pytest.raises(UserError, match=f"--warmup-epochs {cli['warmup_epochs']} is not below epochs "
                                            f"{cli.get('epochs', 30)}: the cosine schedule would only warm up"):
            resolve(cli=cli)
    assert resolve(cli={"epochs": 2, "warmup_epochs": 1}).warmup_epochs == 1


def test_run_says_the_shortened_warm_up_in_one_line(tmp_path, monkeypatch, capsys):
    import json

    from helpers import cli
    code, out, err = cli(["run", "--epochs", "1", "--print-config"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["config"]["warmup_epochs"] == 0
    assert err.strip().splitlines() == ["note: warmup-epochs 2 (from the preset) is not below epochs 1: using 0 so "
                                        "that the cosine schedule decays; give --warmup-epochs to choose another"]
    code, _, err = cli(["run", "--epochs", "1", "--warmup-epochs", "1", "--print-config"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--warmup-epochs 1 is not below epochs 1" in err
