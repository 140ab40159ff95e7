"""Fetch source files: resumable HTTP downloads checked against a sha256 manifest.

A download goes to `<file>.part` and is renamed when complete; an interrupted one resumes with an
HTTP Range request. The first complete fetch of a file records its sha256 and size in
`manifest.json` beside it (no upstream checksums were ever published for WeatherBench 1); every
later fetch, and every reuse of a cached file, is checked against that record.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from svqbench.data.checks import open_readable
from svqbench.errors import UserError

MANIFEST = "manifest.json"
_BLOCK = 1 << 20


def sha256(path: Path, chunk: int = _BLOCK) -> str:
    h = hashlib.sha256()
    with open_readable(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, dict]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON; delete it to record checksums afresh") from None


def _record(folder: Path, name: str, entry: dict) -> None:
    manifest = read_manifest(folder)
    manifest[name] = entry
    from svqbench.atomic import write_text
    write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def verify(path: Path) -> str:
    """sha256 of `path`, checked against its manifest entry when there is one."""
    path = Path(path)
    digest = sha256(path)
    expected = read_manifest(path.parent).get(path.name, {}).get("sha256")
    if expected and expected != digest:
        raise UserError(f"checksum mismatch for {path}: manifest {expected[:16]}..., file {digest[:16]}...; "
                        f"delete the file to download it again (or the entry in {path.parent / MANIFEST} "
                        f"if the source really changed)")
    return digest


def fetch(url: str, dest: str | os.PathLike, *, progress: bool = True, timeout: float = 60.0,
          hint: str = "get the file elsewhere and pass it with --from PATH") -> Path:
    """Download `url` to `dest` (resuming a `.part`), verify or record its sha256, return `dest`.

    `hint` ends the message when the source is gone or unreachable."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(dest.parent, os.W_OK):
            raise PermissionError
    except PermissionError:
        raise UserError(f"{dest.parent}: permission denied, cannot write the download there; choose another "
                        f"--data-dir or fix its permissions") from None
    if dest.exists():
        verify(dest)
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "svqbench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds the whole file
            response = None
        elif e.code in (404, 410, 403):
            raise UserError(f"source gone: {url} answered HTTP {e.code}; {hint}") from None
        else:
            raise UserError(f"download of {url} failed: HTTP {e.code} {e.reason}; try again later") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach {url} ({reason}); {hint}") from None
    if response is not None:
        with response:
            if have and response.status != 206:  # server ignored Range: start over
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            _stream(response, part, have, total, dest.name, progress, url)
    os.replace(part, dest)
    digest = sha256(dest)
    entry = read_manifest(dest.parent).get(dest.name)
    if entry and entry.get("sha256") != digest:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise UserError(f"checksum mismatch for {url}: manifest {entry['sha256'][:16]}..., downloaded "
                        f"{digest[:16]}... (kept as {bad}); the source changed or the download is corrupt")
    if not entry:
        _record(dest.parent, dest.name, {"url": url, "sha256": digest, "bytes": dest.stat().st_size})
    return dest


def _stream(response, part: Path, have: int, total: int | None, label: str, progress: bool, url: str) -> None:
    bar = None
    if progress:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)
        bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn(), transient=True)
        task = bar.add_task(label, total=total, completed=have)
        bar.start()
    try:
        with open(part, "ab" if have else "wb") as out:
            written = have
            while True:
                try:
                    block = response.read(_BLOCK)
                except (OSError, ValueError, http.client.HTTPException) as e:
                    raise UserError(f"download of {url} interrupted after {written} bytes ({e}); "
                                    f"run the command again to resume from {part.name}") from None
                if not block:
                    break
                out.write(block)
                written += len(block)
                if bar:
                    bar.update(task, completed=written)
        if total is not None and written < total:
            raise UserError(f"download of {url} interrupted after {written} of {total} bytes; "
                            f"run the command again to resume from {part.name}")
    finally:
        if bar:
            bar.stop()
