"""Small helpers shared by several test modules."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import pytest


def cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`svqbench ARGS` in this process: (exit code, stdout, stderr)."""
    from svqbench import cli as module
    monkeypatch.setattr(sys, "argv", ["svqbench", *args])
    with pytest.raises(SystemExit) as info:
        module.main()
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def without_read_override() -> list[str]:
    """A command prefix under which a mode-0 file is unreadable: root reads anything, so drop the
    capabilities that let it (skips the test where that is impossible)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def needs(module: str):
    """Skip, saying how to install it, where an optional integration (an extra) is missing: the default
    install and `pip install -e '.[test]'` do not need them; CI installs `.[test,integrations]`."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs {module}: pip install -c constraints.txt -e '.[test,integrations]'")
