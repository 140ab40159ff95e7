"""Extract only the needed members of a zip archive, safely.

Members with absolute paths or `..` components are rejected (the archive is refused). Wanted
members are written flat, under their base name, into the target folder: some WeatherBench zips
hold long internal paths (a whole home directory) that are noise, not layout. `.extracted.json`
in the target folder records the CRC-32 and size of the member each file came from, so a file
is reused only while the archive still holds that very member: a replaced or re-downloaded zip
invalidates what was extracted from it.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from svqbench.atomic import remove_stale_temps
from svqbench.data.checks import unreadable
from svqbench.errors import UserError

RECORD = ".extracted.json"


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def member_names(archive: str | os.PathLike) -> list[str]:
    """Base names of the files in a zip (its central directory only: nothing is extracted)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            return [PurePosixPath(n.replace("\\", "/")).name for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as e:
        raise (unreadable(archive, e) or UserError(f"{archive} is not a readable zip archive ({e}); delete it and "
                                                   f"fetch it again")) from None


def extract(archive: str | os.PathLike, dest: str | os.PathLike, wanted: Callable[[str], bool]) -> list[Path]:
    """Extract members whose base name satisfies `wanted` into `dest` (flat); return their paths.

    Files already extracted from the same member (CRC-32 and size, see RECORD) are kept. Each file
    is written to a temp name and renamed, so an interrupted extraction never leaves a half file.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise (unreadable(archive, e) or UserError(f"{archive} is not a readable zip archive ({e}); delete it and "
                                                   f"fetch it again")) from None
    out: list[Path] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if _unsafe(m.filename)]
        if unsafe:
            raise UserError(f"{archive} holds unsafe member path {unsafe[0]!r} (absolute or '..'); "
                            f"refusing to extract it")
        dest.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest)
        try:
            record = json.loads((dest / RECORD).read_text())
        except (OSError, ValueError):
            record = {}
        for member in members:
            base = PurePosixPath(member.filename.replace("\\", "/")).name
            if not wanted(base):
                continue
            target = dest / base
            source = {"crc32": member.CRC, "bytes": member.file_size}
            if target.exists() and target.stat().st_size == member.file_size and record.get(base) == source:
                out.append(target)
                continue
            tmp = dest / f".{base}.tmp-{os.getpid()}"
            try:
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                tmp.unlink(missing_ok=True)
                raise UserError(f"{archive}: member {member.filename!r} is corrupt ({e}); "
                                f"delete the archive and fetch it again") from None
            os.replace(tmp, target)
            out.append(target)
            record[base] = source
            _save(dest, record)
    return out


def _save(dest: Path, record: dict) -> None:
    from svqbench.atomic import write_text
    write_text(dest / RECORD, json.dumps(record, indent=1, sort_keys=True))
