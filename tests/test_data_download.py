"""Resumable downloads, the sha256 manifest and safe extraction, served from 127.0.0.1 only."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile

import numpy as np
import pytest

from svqbench.data.archive import extract
from svqbench.data.download import MANIFEST, fetch
from svqbench.errors import UserError


class Server:
    """A loopback HTTP server with Range support that can cut a response short or vanish (404)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None     # close the next response after this many body bytes
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_after is not None:
                    payload, server.cut_after = payload[: server.cut_after], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_interrupted_download_resumes_with_range_and_records_sha256(server, tmp_path):
    body = payload()
    server.files["/f.bin"] = body
    server.cut_after = 100_000
    dest = tmp_path / "f.bin"
    with pytest.raises(UserError, match=r"interrupted after 100000 of 300000 bytes; run the command again to resume"):
        fetch(server.url + "/f.bin", dest, progress=False)
    assert (tmp_path / "f.bin.part").stat().st_size == 100_000 and not dest.exists()
    fetch(server.url + "/f.bin", dest, progress=False)
    assert server.requests[-1] == ("/f.bin", "bytes=100000-")
    assert dest.read_bytes() == body and not (tmp_path / "f.bin.part").exists()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["f.bin"] == {"url": server.url + "/f.bin", "sha256": hashlib.sha256(body).hexdigest(),
                                 "bytes": len(body)}
    n = len(server.requests)
    fetch(server.url + "/f.bin", dest, progress=False)  # cached and verified: no request
    assert len(server.requests) == n


def test_checksum_mismatch_against_manifest(server, tmp_path):
    server.files["/f.bin"] = payload(seed=1)
    dest = tmp_path / "f.bin"
    fetch(server.url + "/f.bin", dest, progress=False)
    dest.write_bytes(payload(seed=2))  # the cached file changed on disk
    with pytest.raises(UserError, match=r"checksum mismatch for .*f.bin: manifest [0-9a-f]{16}\.\.\., file"):
        fetch(server.url + "/f.bin", dest, progress=False)
    dest.unlink()
    server.files["/f.bin"] = payload(seed=3)  # the source changed upstream
    with pytest.raises(UserError, match=r"checksum mismatch for http://127.0.0.1:\d+/f.bin: .*kept as .*f.bin.bad"):
        fetch(server.url + "/f.bin", dest, progress=False)
    assert not dest.exists()


def test_source_gone_and_unreachable_are_clear(server, tmp_path):
    with pytest.raises(UserError, match=r"source gone: http://127.0.0.1:\d+/missing.zip answered HTTP 404"):
        fetch(server.url + "/missing.zip", tmp_path / "m.zip", progress=False)
    port = server.httpd.server_address[1]
    server.close()
    with pytest.raises(UserError, match=rf"cannot reach http://127.0.0.1:{port}/x.zip"):
        fetch(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)
    server.close = lambda: None


def test_extract_only_wanted_members_flat_and_refuse_unsafe(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/very/long/internal/path/keep_1.nc", b"one")
        zf.writestr("other/keep_2.nc", b"two")
        zf.writestr("skip.txt", b"no")
    out = extract(archive, tmp_path / "out", lambda name: name.startswith("keep"))
    assert sorted(p.name for p in out) == ["keep_1.nc", "keep_2.nc"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".extracted.json", "keep_1.nc", "keep_2.nc"]
    assert (tmp_path / "out" / "keep_1.nc").read_bytes() == b"one"
    for bad in ("../../escape.nc", "/etc/keep.nc", "x/../../keep.nc"):
        evil = tmp_path / "evil.zip"
        with zipfile.ZipFile(evil, "w") as zf:
            zf.writestr(bad, b"bad")
        with pytest.raises(UserError, match="unsafe member path"):
            extract(evil, tmp_path / "out2", lambda name: True)
        assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())
    (tmp_path / "trunc.zip").write_bytes(archive.read_bytes()[:40])
    with pytest.raises(UserError, match="trunc.zip is not a readable zip archive"):
        extract(tmp_path / "trunc.zip", tmp_path / "out3", lambda name: True)


def test_a_replaced_zip_invalidates_what_was_extracted_from_it(tmp_path):
    """Same member name and size, other content (a bad year replaced by a good one): extracted again."""
    archive, out = tmp_path / "a.zip", tmp_path / "out"
    for content in (b"bad year", b"good one"):
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("dir/year_2010.nc", content)
        (path,) = extract(archive, out, lambda name: True)
        assert path.read_bytes() == content
    before = path.stat().st_mtime_ns
    (path,) = extract(archive, out, lambda name: True)  # unchanged archive: the extracted file is reused
    assert path.stat().st_mtime_ns == before
    record = json.loads((out / ".extracted.json").read_text())
    assert record["year_2010.nc"] == {"crc32": zipfile.ZipFile(archive).getinfo("dir/year_2010.nc").CRC, "bytes": 8}
    path.write_bytes(b"tampered")  # a file changed behind the record's back is not trusted either...
    (out / ".extracted.json").write_text("{}")
    (path,) = extract(archive, out, lambda name: True)
    assert path.read_bytes() == b"good one"


def test_extract_removes_temp_files_of_killed_runs(tmp_path):
    import subprocess
    import sys
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "out"
    out.mkdir()
    (out / f".year_2010.nc.tmp-{dead}").write_bytes(b"half a file")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("year_2010.nc", b"x")
    extract(archive, out, lambda name: True)
    assert sorted(p.name for p in out.iterdir()) == [".extracted.json", "year_2010.nc"]


def test_weatherbench1_download_from_url_template(server, tmp_path):
    """End to end: the WeatherBench 1 zip fetched over HTTP (interrupted once), extracted, prepared."""
    from test_data_weatherbench import write_wb1

    from svqbench.data import prepare
    from svqbench.data.prepared import PreparedDataset
    src = tmp_path / "src"
    archive = tmp_path / "2m_temperature_5.625deg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for year in (2010, 2011, 2012):
            path = write_wb1(src, "2m_temperature", "t2m", year)
            zf.write(path, f"2m_temperature/{path.name}")
    server.files["/download"] = archive.read_bytes()
    server.cut_after = len(server.files["/download"]) // 3
    url = server.url + "/download?path=%2F5.625deg%2F{dir}&files={dir}_5.625deg.zip"
    root = tmp_path / "data"
    with pytest.raises(UserError, match="interrupted"):
        prepare("weatherbench-s-t2m", root=root, url=url, years="2010,2011,2012", progress=False)
    path = prepare("weatherbench-s-t2m", root=root, url=url, years="2010,2011,2012", progress=False)
    assert server.requests[-1][1] is not None and server.requests[-1][1].startswith("bytes=")
    assert PreparedDataset(path).frames.shape == (26304, 1, 32, 64)
    assert "2m_temperature_5.625deg.zip" in json.loads((root / ".raw" / "weatherbench1" / MANIFEST).read_text())
    server.files.clear()
    with pytest.raises(UserError, match="source gone: .* reported dead since Dec 2024; try --source wb2"):
        prepare("weatherbench-s-tcc", root=root, url=url, years="2010,2011,2012", progress=False)
