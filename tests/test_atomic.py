"""Every file svqbench writes goes through svqbench.atomic: all or nothing, no temp files left, one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from svqbench.atomic import CannotWrite, write_json, write_text

FILL_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
from svqbench.atomic import write_text
write_text(sys.argv[1], "x" * 100_000)
"""


def test_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "a" / "b" / "m.json"  # parents are created
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and os.listdir(path.parent) == ["m.json"]


def test_a_full_disk_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("old")
    out = subprocess.run([sys.executable, "-c", FILL_LIMITED, str(path), "1000"], capture_output=True, text=True)
    assert out.returncode == 1 and f"CannotWrite: cannot write {path}: File too large" in out.stderr
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["m.json"]


def test_a_folder_or_a_file_in_the_way_is_one_line(tmp_path):
    with pytest.raises(CannotWrite, match="it is a folder; give a file name"):
        write_text(tmp_path, "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(CannotWrite, match=r"cannot write .*file: a file is in the way of this folder"):
        write_text(tmp_path / "file" / "out.txt", "x")


def test_an_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "m.txt"

    def boom(f):
        f.write("half")
        raise KeyboardInterrupt
    from svqbench.atomic import atomic_write
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, boom, binary=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0 or not hasattr(os, "setresuid"), reason="needs root to drop to nobody")
def test_read_only_results_folder_is_one_line_exit_2():
    import shutil
    import tempfile
    from pathlib import Path
    base = Path(tempfile.mkdtemp())  # outside pytest's root-only tmp tree, so `nobody` can reach it
    results = base / "results"
    results.mkdir()
    os.chmod(base, 0o755)
    os.chmod(results, 0o555)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                          "from svqbench.atomic import write_text; import sys; write_text(sys.argv[1], 'x')",
                          str(results / "x.txt")], capture_output=True, text=True)
    try:
        assert "cannot write" in out.stderr and "Permission denied" in out.stderr and os.listdir(results) == []
    finally:
        shutil.rmtree(base)


def test_the_next_write_removes_only_temps_of_dead_writers_of_that_name(tmp_path):
    """A SIGKILL leaves `.NAME.tmp-PID`; the next write of NAME removes it once PID has exited, and
    keeps a live writer's temp and other names' temps (issue 19 item 12)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [f".m.json.tmp-{dead_pid}", f".m.json.old-{dead_pid}", f".m.json.tmp-{live.pid}",
                 f".other.json.tmp-{dead_pid}"]
        for name in names:
            (tmp_path / name).write_text("half")
        (tmp_path / f".m.json.tmp-{dead_pid}x").mkdir()  # not a temp name: left alone
        write_json(tmp_path / "m.json", {"a": 1})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["m.json", f".m.json.tmp-{live.pid}", f".other.json.tmp-{dead_pid}", f".m.json.tmp-{dead_pid}x"])
    finally:
        live.kill()
        live.wait()
