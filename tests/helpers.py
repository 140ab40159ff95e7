"""Small helpers shared by several test modules."""
from __future__ import annotations

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
