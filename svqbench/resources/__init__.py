"""Files that ship with svqbench (package data), found from any working directory:

recipes/<table>.toml   one recipe per paper table (docs/recipes.md)
paper/<table>.csv      the published numbers `svqbench compare` puts beside paper-scale runs
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def packaged(name: str) -> Path:
    """A folder of package data as a file-system path (svqbench is installed as plain files)."""
    return Path(str(files("svqbench.resources") / name))


def recipe_dir() -> Path:
    return packaged("recipes")


def paper_dir() -> Path:
    return packaged("paper")
