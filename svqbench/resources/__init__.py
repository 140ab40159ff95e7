"""Files that ship with svqbench, found from any working directory:

recipes/<table>.toml   one recipe per paper table (docs/recipes.md); the one source is the top-level
                       recipes/ of the source tree, which the wheel carries as svqbench/resources/recipes
paper/<table>.csv      the published numbers `svqbench compare` puts beside paper-scale runs (package data)
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def packaged(name: str) -> Path:
    """A folder of package data as a file-system path (svqbench is installed as plain files)."""
    return Path(str(files("svqbench.resources") / name))


def recipe_dir() -> Path:
    """The recipes of an installed wheel (svqbench/resources/recipes), else those of the source tree this
    svqbench is imported from (an editable install or a checkout on sys.path: <tree>/recipes)."""
    installed = packaged("recipes")
    if installed.is_dir():
        return installed
    source_tree = Path(__file__).resolve().parents[2] / "recipes"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError(f"svqbench's recipes are missing: neither {installed} (an installed wheel) nor "
                            f"{source_tree} (a source tree) exists; reinstall svqbench")


def paper_dir() -> Path:
    return packaged("paper")
