"""Extract only the needed members of a zip archive, safely.

Members with absolute paths or `..` components are rejected (the archive is refused). Wanted
members are written flat, under their base name, into the target folder: some WeatherBench zips
hold long internal paths (a whole home directory) that are noise, not layout.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from svqbench.errors import UserError


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def extract(archive: str | os.PathLike, dest: str | os.PathLike, wanted: Callable[[str], bool]) -> list[Path]:
    """Extract members whose base name satisfies `wanted` into `dest` (flat); return their paths.

    Files already extracted with the same size are kept. Each file is written to a temp name and
    renamed, so an interrupted extraction never leaves a half file behind.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{archive} is not a readable zip archive ({e}); delete it and fetch it again") from None
    out: list[Path] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        unsafe = [m.filename for m in members if _unsafe(m.filename)]
        if unsafe:
            raise UserError(f"{archive} holds unsafe member path {unsafe[0]!r} (absolute or '..'); "
                            f"refusing to extract it")
        dest.mkdir(parents=True, exist_ok=True)
        for member in members:
            base = PurePosixPath(member.filename.replace("\\", "/")).name
            if not wanted(base):
                continue
            target = dest / base
            if target.exists() and target.stat().st_size == member.file_size:
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
    return out
