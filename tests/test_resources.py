"""Recipes (the top-level recipes/, shipped in the wheel) and published tables (package data): found from any
folder, from a built wheel and from an editable install."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd

from svqbench.resources import paper_dir, recipe_dir
from svqbench.version import __version__

REPO = Path(__file__).resolve().parents[1]


def _copy_source_tree(dest: Path) -> None:
    """The checkout without its environment, build outputs and the top-level data/ and results/ (not
    svqbench/data/, the package)."""
    skip = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")
    shutil.copytree(REPO, dest, ignore=lambda folder, names: set(skip(folder, names)) | (
        {"data", "results"} & set(names) if Path(folder) == REPO else set()))


def _cli(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "svqbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="250", **env))


def test_packaged_files_exist():
    assert {p.stem for p in recipe_dir().glob("*.toml")} >= {f"table{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8)}
    assert (paper_dir() / "table1.csv").is_file()


def test_the_top_level_recipes_folder_is_the_one_source():
    assert recipe_dir() == REPO / "recipes"  # imported from the source tree
    assert not (REPO / "svqbench" / "resources" / "recipes").exists()
    assert len(list((REPO / "recipes").glob("*.toml"))) >= 12


def test_a_built_wheel_carries_them_and_works_from_another_folder(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info next to the sources
    _copy_source_tree(source)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("svqbench-*.whl"))
    assert wheel.name.startswith(f"svqbench-{__version__}-")  # pyproject reads it from svqbench/version.py
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "svqbench/resources/recipes/table5.toml" in names and "svqbench/resources/paper/table1.csv" in names
    # every recipe and every module of the source tree (pyproject.toml lists the packages by hand)
    assert {f"svqbench/resources/recipes/{p.name}" for p in (REPO / "recipes").glob("*.toml")} <= names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "svqbench").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import svqbench; print(svqbench.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, env=dict(os.environ, **env))
    assert where.stdout.startswith(str(site)), where.stdout  # the wheel's copy, not the checkout
    dry = _cli(["sweep", "table5", "--dry-run", "--results-dir", str(tmp_path / "r")], elsewhere, **env)
    assert dry.returncode == 0, dry.stderr
    assert "runs, 0 done" in dry.stdout and "svq-noise0.2" in dry.stdout
    # compare puts the published number beside a paper-scale run without --paper
    results = tmp_path / "results"
    results.mkdir()
    t2m = dict(run_id="r0", dataset="weatherbench-s-t2m", scale="paper", backbone="gsta", quantizer="svq", seed=42,
               loss="l1", noise=0.0, codebook_size=10000, frozen_codebook=False, svq_hidden=128,
               svq_one_layer=False, svq_post_relu=False, svq_frozen_projection=False, codebook_init="normal",
               placement="before", test_mse=1.0, test_mae=0.61)
    pd.DataFrame([t2m]).to_csv(results / "leaderboard.csv", index=False)
    shown = _cli(["compare", str(results)], elsewhere, **env)
    assert shown.returncode == 0, shown.stderr
    assert "paper MSE" in shown.stdout and "1.018" in shown.stdout


def test_an_editable_install_finds_the_source_trees_recipes_from_another_folder(tmp_path):
    """CI's install (`pip install -e .`): the recipes are read in place from the tree's recipes/."""
    source = tmp_path / "source"
    _copy_source_tree(source)
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                                "--target", str(site), "-e", str(source)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    (source / "recipes" / "table5.toml").write_text(
        (source / "recipes" / "table5.toml").read_text().replace('title = "', 'title = "edited in place: ', 1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -S: without this checkout's own editable install; the copy's install (its .pth) and then the
    # dependencies of this interpreter's environment, added as a plain path
    code = ("import runpy, site, sys; site.addsitedir(sys.argv[1]); "
            "sys.path.append(sys.argv[2]); import svqbench.recipes as r; "
            "print(r.__file__); print(r.load_recipe('table5').title); "
            "sys.argv = ['svqbench', *sys.argv[3:]]; runpy.run_module('svqbench', run_name='__main__')")
    dry = subprocess.run([sys.executable, "-S", "-c", code, str(site), sysconfig.get_path("purelib"), "sweep", "table5", "--dry-run",
                          "--results-dir", str(tmp_path / "r")], cwd=elsewhere, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="250"))
    assert dry.returncode == 0, dry.stderr
    where, title = dry.stdout.splitlines()[:2]
    assert where == str(source / "svqbench" / "recipes.py") and title.startswith("edited in place: ")
    assert "runs, 0 done" in dry.stdout and "svq-noise0.2" in dry.stdout
