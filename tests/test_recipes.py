"""Recipes: every paper table has one, the format is checked key by key, cells merge in order; and
the Table 5 noise protocol they rely on (svqbench.train.inject_noise)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from svqbench.errors import UserError
from svqbench.recipes import SCALES, load_recipe, resolve_cell, select_cell
from svqbench.resources import recipe_dir

REPO = Path(__file__).resolve().parents[1]
RECIPES = recipe_dir()
PAPER_TABLES = {1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15}

MINIMAL = """
title = "t"
[scales.paper.config]
dataset = "embedded"
[scales.quick.config]
dataset = "embedded"
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the shipped recipes

def test_one_recipe_per_paper_table_with_both_scales():
    recipes = {p.stem: load_recipe(p) for p in sorted(RECIPES.glob("*.toml"))}
    assert {r.table for r in recipes.values()} == PAPER_TABLES
    for stem, recipe in recipes.items():
        assert stem == f"table{recipe.table}"
        for scale in SCALES:
            cells = recipe.cells(scale)
            assert cells and all(c.overrides["scale"] == scale for c in cells)
        # the quick scale runs on the embedded or synthetic datasets (no download needed)
        assert {c.overrides.get("dataset", "embedded") for c in recipe.cells("quick")} <= {
            "embedded", "embedded-e1", "synthetic-advection"}
        assert recipe.seeds("quick") == 3


def test_table5_recipe_is_the_noise_protocol_and_resolves():
    recipe = load_recipe(RECIPES / "table5.toml")
    quick = [resolve_cell(c) for c in recipe.cells("quick")]
    assert {(c.quantizer, c.noise) for c in quick} == {(q, e) for q in ("none", "svq") for e in (0.0, 0.2, 0.4)}
    assert {c.dataset for c in quick} == {"synthetic-advection"} and {c.loss for c in quick} == {"l1"}
    paper = recipe.cells("paper")
    assert sorted({c.overrides["noise"] for c in paper}) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert {c.overrides["dataset"] for c in paper} == {"weatherbench-s-t2m"}
    assert [c.label for c in paper if c.overrides.get("loss") == "l2"] == [f"none-l2-noise{e}" for e in
                                                                           (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]


def test_bare_names_find_the_packaged_recipes_from_any_folder_and_a_user_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the ones shipped with svqbench
    assert load_recipe("table7").path == recipe_dir() / "table7.toml"
    (tmp_path / "recipes").mkdir()
    own = (RECIPES / "table7.toml").read_text().replace('title = "', 'title = "my own ', 1)
    (tmp_path / "recipes" / "table7.toml").write_text(own)
    assert load_recipe("table7").title.startswith("my own ")
    with pytest.raises(UserError, match=r"recipe 'table99' not found.*table7"):
        load_recipe("table99")


# ------------------------------------------------------------------ format and merge order

def test_merge_order_config_scale_cell_grid(tmp_path):
    path = write(tmp_path, """
title = "order"
[config]
epochs = 3
lr = 0.1
hid_t = 8
[grid]
noise = [0.0, 0.25]
[[cells]]
quantizer = "none"
[[cells]]
label = "big"
quantizer = "svq"
hid_t = 32
[scales.paper]
seeds = 2
[scales.paper.config]
dataset = "embedded"
[scales.quick.config]
dataset = "embedded"
lr = 0.2
epochs = 1
[scales.quick.grid]
noise = [0.5]
""")
    recipe = load_recipe(path)
    quick = recipe.cells("quick")
    assert [c.label for c in quick] == ["none-noise0.5", "big-noise0.5"]
    assert quick[0].overrides == dict(epochs=1, lr=0.2, hid_t=8, dataset="embedded", scale="quick",
                                      quantizer="none", noise=0.5)
    assert quick[1].overrides["hid_t"] == 32  # the cell beats the shared config
    assert [c.label for c in recipe.cells("paper")] == ["none-noise0.0", "none-noise0.25", "big-noise0.0",
                                                        "big-noise0.25"]
    assert recipe.seeds("paper") == 2 and recipe.seeds("quick") == 1
    cfg = resolve_cell(quick[1], seed=7)
    assert (cfg.seed, cfg.epochs, cfg.lr, cfg.hid_t, cfg.noise, cfg.scale) == (7, 1, 0.2, 32, 0.5, "quick")


@pytest.mark.parametrize("text, message", [
    ("title = 't'\nepochs = 3\n" + MINIMAL.replace('title = "t"', ""), r"unknown key\(s\) in the recipe: epochs"),
    (MINIMAL + "[config]\nepoch = 3\n", r"unknown key\(s\) in \[config\]: epoch; valid keys: .*epochs"),
    (MINIMAL + "[[cells]]\nquantiser = 'svq'\n", r"unknown key\(s\) in cells\[0\]: quantiser"),
    (MINIMAL + "[grid]\nnoise = 0.1\n", r"\[grid\]\.noise must be a non-empty list"),
    (MINIMAL.replace("[scales.paper.config]", "[scales.paper]\nseed = 3\n[scales.paper.config]"),
     r"unknown key\(s\) in \[scales.paper\]: seed; valid keys: cells, config, grid, seeds"),
    (MINIMAL.replace("[scales.paper.config]", "[scales.paper]\nseeds = 0\n[scales.paper.config]"),
     r"scales.paper.seeds must be an integer >= 1, got 0"),
    ("title = 't'\n[scales.quick]\nseeds = 1\n", r"needs exactly the scales paper, quick .* found: quick"),
    (MINIMAL + "[config]\nscale = 'paper'\n", r"unknown key\(s\) in \[config\]: scale"),
    ('[scales.paper]\n[scales.quick]\n', r"missing `title"),
    (MINIMAL + "[[cells]]\nlabel = 'a b'\n", r"label 'a b' in cells\[0\] may only use"),
    ("title = 't\n", r"is not valid TOML"),
])
def test_bad_recipes_are_rejected_with_the_fix(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_recipe(write(tmp_path, text))


def test_duplicate_labels_and_cell_grid_clash_are_errors(tmp_path):
    dup = MINIMAL + "[[cells]]\nlabel = 'x'\nlr = 0.1\n[[cells]]\nlabel = 'x'\nlr = 0.2\n"
    with pytest.raises(UserError, match=r"both labelled 'x'; give them distinct"):
        load_recipe(write(tmp_path, dup))
    clash = MINIMAL + "[grid]\nlr = [0.1]\n[[cells]]\nlr = 0.2\n"
    with pytest.raises(UserError, match=r"sets lr, which the grid also sets"):
        load_recipe(write(tmp_path, clash, "c.toml"))


def test_bad_value_names_the_cell(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL + "[[cells]]\nlabel = 'odd'\nhid_s = 'many'\n"))
    with pytest.raises(UserError, match=r"cell 'odd': bad value 'many' for hid_s"):
        resolve_cell(recipe.cells("quick")[0])


def test_select_cell_for_svqbench_run(tmp_path):
    recipe = load_recipe(RECIPES / "table7.toml")
    assert select_cell(recipe, "quick", "svq-lossl2").overrides["loss"] == "l2"
    with pytest.raises(UserError, match=r"has 4 cells at the quick scale; pick one with --cell: none-lossl2"):
        select_cell(recipe, "quick", None)
    with pytest.raises(UserError, match=r"no cell 'svq' in recipe table7 \(quick scale\)"):
        select_cell(recipe, "quick", "svq")
    single = load_recipe(write(tmp_path, MINIMAL))
    assert select_cell(single, "paper", None).label == "default"


def test_run_with_recipe_cell_and_cli_override(tmp_path):
    """`svqbench run --recipe --cell` takes the cell's config; options given on the command line win."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "svqbench", "run", "--recipe", str(RECIPES / "table7.toml")]
    missing = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "pick one with --cell" in missing.stderr and "Traceback" not in missing.stderr
    from svqbench.config import resolve
    layer = select_cell(load_recipe(RECIPES / "table7.toml"), "quick", "svq-lossl2").overrides
    cfg = resolve(recipe=layer, cli={"loss": "l1", "epochs": 1})
    assert (cfg.quantizer, cfg.loss, cfg.epochs, cfg.hid_t) == ("svq", "l1", 1, 32)


# ------------------------------------------------------------------ Table 5 noise protocol

def test_inject_noise_corrupts_exactly_eta_of_each_sample():
    from svqbench.data.batches import inject_noise
    x = torch.rand(4, 3, 1, 5, 7) + 1.0  # nonzero everywhere: a changed element is visible
    n = x[0].numel()
    for eta in (0.1, 0.25, 0.5):
        out = inject_noise(x, eta, torch.Generator().manual_seed(0))
        changed = (out != x).reshape(4, -1).sum(1)
        assert changed.tolist() == [int(n * eta)] * 4
        ratio = (out / x)[out != x]
        assert ratio.min() >= -2.0 and ratio.max() <= 2.0  # multiplied by U(-2, 2)
        assert not torch.equal(out, x) and torch.equal(x, x.clone())  # the input is not modified in place
    same = inject_noise(x, 0.3, torch.Generator().manual_seed(5)), inject_noise(x, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(*same)
    assert inject_noise(x, 0.0, torch.Generator()) is x


def test_inject_noise_factors_are_uniform_over_minus2_2():
    from svqbench.data.batches import inject_noise
    x = torch.ones(1000, 200)
    out = inject_noise(x, 0.5, torch.Generator().manual_seed(1))
    factors = out[out != 1.0].numpy()
    assert len(factors) == 1000 * 100
    assert abs(factors.mean()) < 0.05 and abs(factors.var() - 16 / 12) < 0.05  # U(-2, 2): mean 0, var 4/3
    # positions are uniform: every column is hit about half of the time (sd 0.016 per column)
    hits = (out != 1.0).float().mean(0).numpy()
    assert 0.4 < hits.min() and hits.max() < 0.6


def test_noise_touches_training_inputs_only(monkeypatch, tiny_config, data_root, tmp_path):
    """Training batches are corrupted; targets, validation and test inputs never are."""
    import svqbench.train as train_module
    from svqbench.data.prepared import open_prepared
    calls = []
    real = train_module.inject_noise

    def spy(x, eta, gen, **kw):
        calls.append((tuple(x.shape), eta))
        return real(x, eta, gen, **kw)

    monkeypatch.setattr(train_module, "inject_noise", spy)
    cfg = tiny_config(quantizer="none", epochs=1, noise=0.3)
    ds = open_prepared("embedded", data_root)
    ds.splits = {**ds.splits, "train": ds.splits["train"][:40], "val": ds.splits["val"][:8]}  # 2 steps: fast
    from svqbench.models import build_model
    model = build_model(cfg, ds)
    (tmp_path / "run").mkdir()
    train_module.train(cfg, ds, model, tmp_path / "run", device=torch.device("cpu"))
    steps = ds.num_batches("train", cfg.batch_size)
    assert steps == 2 and len(calls) == steps and {eta for _, eta in calls} == {0.3}
    assert all(shape[1] == ds.in_len for shape, _ in calls)  # inputs (in_len frames), not targets
    n_val = len(ds.splits["val"])
    calls.clear()
    loss = train_module.validation_loss(model, ds, cfg, torch.device("cpu"))
    assert calls == [] and np.isfinite(loss) and n_val > 0
