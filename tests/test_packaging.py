"""Dependencies as a library declares them: ranges in pyproject.toml (lower bound = the version tested
with), the exact versions CI installs in constraints.txt, and the two agree."""
from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras if not r.startswith("svqbench[")]


def pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    out = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            [spec] = req.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = spec.version
    return out


def test_the_package_declares_ranges_and_constraints_pin_each_one_inside_its_range():
    reqs, pinned = declared(), pins()
    assert len(reqs) > 20
    for req in reqs:
        assert all(s.operator in (">=", "<") for s in req.specifier), f"{req}: a range, not a pin"
        assert any(s.operator == ">=" for s in req.specifier), f"{req}: the tested version as lower bound"
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} has no exact pin in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{req} excludes its pin {pinned[name]}"
        lower = next(s.version for s in req.specifier if s.operator == ">=")
        assert pinned[name].startswith(lower), f"{req}: lower bound {lower}, but tested with {pinned[name]}"


def test_upper_bounds_only_where_a_break_is_known():
    bounded = {canonicalize_name(r.name) for r in declared() if any(s.operator == "<" for s in r.specifier)}
    assert bounded == {"vector-quantize-pytorch"}


def test_the_environment_runs_the_pinned_versions():
    """The tests ran against the versions constraints.txt pins (CI installs with -c constraints.txt)."""
    pinned = pins()
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for req in declared():
        try:
            found = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            assert str(req) not in core, f"{req.name} is a dependency and is not installed"
            continue  # an extra this environment did not install (its tests skip, tests/helpers.py)
        assert found == pinned[canonicalize_name(req.name)], req.name
