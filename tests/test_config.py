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
