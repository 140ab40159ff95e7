"""Recipes: one TOML file per paper table, each a list of cells (config overrides) at two scales.

A recipe file (see recipes/*.toml and docs/recipes.md):

    title = "Table 5: noise injection"     # required
    table = 5                               # paper table number (optional)
    description = "..."                     # optional
    [config]            # overrides shared by every cell at every scale
    [[cells]]           # explicit cells: an optional `label` plus config overrides
    [grid]              # axes: key = [values]; every combination is crossed with every cell
    [scales.paper]      # the published settings
    [scales.quick]      # 2 CPU cores, minutes per run, on the embedded dataset
        seeds = 1       # default number of seeds (`svqbench sweep --seeds` overrides it)
        [scales.<s>.config]   # overrides for this scale
        [[scales.<s>.cells]]  # replaces the top-level cells at this scale
        [scales.<s>.grid]     # replaces top-level grid axes of the same name

A cell's overrides are merged as config < scale config < cell < grid point; they form the
`recipe` layer of `svqbench.config.resolve` (defaults < preset < recipe < command line). The
scale name selects the preset scale. Every key is checked: an unknown key is an error.
"""
from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svqbench.errors import UserError

SCALES = ("paper", "quick")
RECIPE_KEYS = {"title", "table", "description", "config", "cells", "grid", "scales"}
SCALE_KEYS = {"seeds", "config", "cells", "grid"}
USER_RECIPE_DIR = Path("recipes")  # a user's own recipes/NAME.toml wins over the packaged one


@dataclass(frozen=True)
class Cell:
    label: str                 # unique within a recipe scale; part of the run id
    overrides: dict[str, Any]  # the recipe layer for config.resolve (includes `scale`)


@dataclass(frozen=True)
class Recipe:
    name: str                  # file stem, e.g. "table5"
    path: Path
    title: str
    table: int | None
    description: str
    raw: dict[str, Any]        # the parsed, validated TOML

    def seeds(self, scale: str) -> int:
        return int(self._scale(scale).get("seeds", 1))

    def cells(self, scale: str) -> list[Cell]:
        """Every cell of `scale`, in file order (cells outer, grid inner, grid axes in file order)."""
        section = self._scale(scale)
        base = {**self.raw.get("config", {}), **section.get("config", {}), "scale": scale}
        cells = section.get("cells", self.raw.get("cells", [{}]))
        grid = {**self.raw.get("grid", {}), **section.get("grid", {})}
        out: list[Cell] = []
        for cell in cells:
            explicit_label = cell.get("label")
            fixed = {k: v for k, v in cell.items() if k != "label"}
            for point in itertools.product(*grid.values()):
                assignment = dict(zip(grid, point))
                clash = sorted(set(fixed) & set(assignment))
                if clash:
                    raise UserError(f"{self.path}: cell {explicit_label or fixed} sets {', '.join(clash)}, "
                                    f"which the grid also sets; remove it from one of them")
                label = "-".join(filter(None, [explicit_label or _describe(fixed), _describe(assignment)]))
                out.append(Cell(label or "default", {**base, **fixed, **assignment}))
        seen: set[str] = set()
        for cell in out:
            if cell.label in seen:
                raise UserError(f"{self.path}: two cells of the {scale} scale are both labelled {cell.label!r}; "
                                f"give them distinct `label`s")
            seen.add(cell.label)
        return out

    def _scale(self, scale: str) -> dict[str, Any]:
        if scale not in SCALES:
            raise UserError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
        return self.raw["scales"][scale]


def _slug(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(value)).strip("_")


def _describe(overrides: dict[str, Any]) -> str:
    """A run-id-safe label from overrides: quantizer and backbone by value, others as key+value."""
    parts = []
    for key, value in overrides.items():
        parts.append(_slug(value) if key in ("quantizer", "backbone", "dataset") else f"{key}{_slug(value)}")
    return "-".join(parts)


def recipe_dirs(recipe_dir: Path | None = None) -> list[Path]:
    """Where a bare recipe name is looked up, first match wins: `recipe_dir` when given, else the
    user's ./recipes/ and then the recipes that ship with svqbench."""
    from svqbench.resources import recipe_dir as packaged
    return [Path(recipe_dir)] if recipe_dir is not None else [USER_RECIPE_DIR, packaged()]


def find_recipe(name_or_path: str | Path, recipe_dir: Path | None = None) -> Path:
    """A path to a TOML file, or a bare name looked up as <dir>/<name>.toml (see recipe_dirs)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    dirs = recipe_dirs(recipe_dir)
    if path.suffix == "" and path.name == str(name_or_path):
        for folder in dirs:
            if (folder / f"{name_or_path}.toml").is_file():
                return folder / f"{name_or_path}.toml"
    known = sorted({p.stem for folder in dirs if folder.is_dir() for p in folder.glob("*.toml")})
    hint = f"; known recipes: {', '.join(known)}" if known else ""
    raise UserError(f"recipe {str(name_or_path)!r} not found: pass a .toml path or a recipe name{hint}")


def load_recipe(name_or_path: str | Path, recipe_dir: Path | None = None) -> Recipe:
    path = find_recipe(name_or_path, recipe_dir)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; save the recipe as UTF-8 TOML") from None
    except OSError as e:
        raise UserError(f"cannot read recipe {path}: {e.strerror}") from None
    validate_recipe(raw, path)
    recipe = Recipe(name=path.stem, path=path, title=raw["title"], table=raw.get("table"),
                    description=raw.get("description", ""), raw=raw)
    for scale in SCALES:
        recipe.cells(scale)  # labels unique, no cell/grid clashes
    return recipe


def validate_recipe(raw: dict[str, Any], path: Path) -> None:
    """Structure and key names. Values are checked when a cell is resolved into a RunConfig."""
    from svqbench.config import field_names
    config_keys = field_names() - {"scale"}

    def check_keys(table: Any, allowed: set[str], where: str) -> None:
        if not isinstance(table, dict):
            raise UserError(f"{path}: {where} must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise UserError(f"{path}: unknown key(s) in {where}: {', '.join(unknown)}; "
                            f"valid keys: {', '.join(sorted(allowed))}")

    def check_cells(cells: Any, where: str) -> None:
        if not isinstance(cells, list) or not cells:
            raise UserError(f"{path}: {where} must be a non-empty array of tables ([[{where}]])")
        for i, cell in enumerate(cells):
            check_keys(cell, config_keys | {"label"}, f"{where}[{i}]")
            if "label" in cell and not (isinstance(cell["label"], str)
                                        and re.fullmatch(r"[A-Za-z0-9._-]+", cell["label"])):
                raise UserError(f"{path}: label {cell['label']!r} in {where}[{i}] may only use letters, "
                                f"digits, '.', '_' and '-'")

    def check_grid(grid: Any, where: str) -> None:
        check_keys(grid, config_keys, where)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"{path}: {where}.{key} must be a non-empty list of values, got {values!r}")

    check_keys(raw, RECIPE_KEYS, "the recipe")
    if not isinstance(raw.get("title"), str) or not raw["title"]:
        raise UserError(f"{path}: missing `title = \"...\"`")
    if "table" in raw and not (isinstance(raw["table"], int) and raw["table"] > 0):
        raise UserError(f"{path}: table must be a positive integer, got {raw['table']!r}")
    check_keys(raw.get("config", {}), config_keys, "[config]")
    if "cells" in raw:
        check_cells(raw["cells"], "cells")
    check_grid(raw.get("grid", {}), "[grid]")
    scales = raw.get("scales")
    if not isinstance(scales, dict) or set(scales) != set(SCALES):
        found = ", ".join(sorted(scales)) if isinstance(scales, dict) else "none"
        raise UserError(f"{path}: a recipe needs exactly the scales {', '.join(SCALES)} "
                        f"([scales.paper] and [scales.quick]); found: {found}")
    for scale, section in scales.items():
        check_keys(section, SCALE_KEYS, f"[scales.{scale}]")
        seeds = section.get("seeds", 1)
        if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
            raise UserError(f"{path}: scales.{scale}.seeds must be an integer >= 1, got {seeds!r}")
        check_keys(section.get("config", {}), config_keys, f"[scales.{scale}.config]")
        if "cells" in section:
            check_cells(section["cells"], f"scales.{scale}.cells")
        check_grid(section.get("grid", {}), f"[scales.{scale}.grid]")


def resolve_cell(cell: Cell, *, seed: int | None = None, data_dir: Path | None = None):
    """The RunConfig of one cell (optionally with a seed), via the recipe layer of config.resolve."""
    from svqbench.config import resolve
    overrides = dict(cell.overrides) if seed is None else {**cell.overrides, "seed": seed}
    try:
        return resolve(recipe=overrides, data_dir=data_dir)
    except UserError as e:
        raise UserError(f"cell {cell.label!r}: {e}") from None


def select_cell(recipe: Recipe, scale: str, label: str | None) -> Cell:
    """The one cell `svqbench run --recipe FILE [--cell LABEL]` means."""
    cells = recipe.cells(scale)
    labels = ", ".join(c.label for c in cells)
    if label is None:
        if len(cells) == 1:
            return cells[0]
        raise UserError(f"recipe {recipe.name} has {len(cells)} cells at the {scale} scale; "
                        f"pick one with --cell: {labels}")
    for cell in cells:
        if cell.label == label:
            return cell
    raise UserError(f"no cell {label!r} in recipe {recipe.name} ({scale} scale); choose one of: {labels}")
