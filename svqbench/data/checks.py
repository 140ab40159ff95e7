"""Validation shared by the gridded sources: every failure names the file and what is wrong."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from svqbench.errors import UserError

# The WeatherBench 5.625 degree grid: cell centres, south to north, from 0 E eastwards.
WB_LAT = np.linspace(-87.1875, 87.1875, 32)
WB_LON = np.arange(64) * 5.625


def check_grid(lat: np.ndarray, lon: np.ndarray, where: str) -> None:
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.shape != WB_LAT.shape or lon.shape != WB_LON.shape:
        raise UserError(f"{where}: grid is {lat.size} x {lon.size} (lat x lon), expected 32 x 64 "
                        f"(the 5.625 degree WeatherBench grid); pick the 5.625deg files")
    if not np.allclose(lat, WB_LAT, atol=1e-3) or not np.allclose(lon, WB_LON, atol=1e-3):
        raise UserError(f"{where}: coordinates lat {lat[0]:g}..{lat[-1]:g}, lon {lon[0]:g}..{lon[-1]:g} are not "
                        f"the WeatherBench grid (lat -87.1875..87.1875, lon 0..354.375)")


def check_times(times: np.ndarray, *, year: int, step_hours: int, where: str) -> None:
    """The file must hold exactly every `step_hours` from 1 January 00:00 to the end of `year`."""
    times = np.asarray(times).astype("datetime64[h]")
    step = np.timedelta64(step_hours, "h")
    expected = np.arange(np.datetime64(f"{year}-01-01T00", "h"), np.datetime64(f"{year + 1}-01-01T00", "h"), step)
    if len(times) == len(expected) and (times == expected).all():
        return
    if len(times) == 0:
        raise UserError(f"{where}: no time steps for {year}")
    gaps = np.diff(times)
    if len(gaps) and (gaps != step).any():
        i = int(np.argmax(gaps != step))
        raise UserError(f"{where}: time step is {gaps[i].astype(int)} h between {times[i]} and {times[i + 1]}, "
                        f"expected {step_hours} h everywhere (missing or duplicated times)")
    raise UserError(f"{where}: covers {times[0]} .. {times[-1]} ({len(times)} steps), expected all of {year} "
                    f"({expected[0]} .. {expected[-1]}, {len(expected)} steps)")


def check_values(values: np.ndarray, *, where: str, name: str, units: str,
                 plausible: tuple[float, float] | None) -> None:
    if not np.issubdtype(values.dtype, np.floating):
        raise UserError(f"{where}: {name} has dtype {values.dtype}, expected floating point")
    finite = np.isfinite(values)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(np.argmax(~finite.reshape(len(values), -1).all(axis=1)))
        raise UserError(f"{where}: {name} has {bad} NaN/infinite values (first at time index {first}); "
                        f"fill or drop them before preparing")
    if plausible is not None:
        lo, hi = float(values.min()), float(values.max())
        if lo < plausible[0] or hi > plausible[1]:
            raise UserError(f"{where}: {name} spans {lo:g}..{hi:g} {units}, outside the plausible "
                            f"{plausible[0]:g}..{plausible[1]:g}; wrong variable or units?")


def parse_years(spec: str | None, default: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """`TRAIN,VAL,TEST` with each part `YYYY` or `YYYY-YYYY`, e.g. `2010-2015,2016,2017-2018`."""
    if not spec:
        return dict(default)
    parts = [p.strip() for p in spec.split(",")]
    hint = "expected --years TRAIN,VAL,TEST, e.g. 2010-2015,2016,2017-2018"
    if len(parts) != 3:
        raise UserError(f"bad --years {spec!r}: {hint}")
    out = {}
    for split, part in zip(("train", "val", "test"), parts):
        try:
            a, _, b = part.partition("-")
            first, last = int(a), int(b or a)
        except ValueError:
            raise UserError(f"bad --years {spec!r}: {part!r} is not a year or range; {hint}") from None
        if last < first:
            raise UserError(f"bad --years {spec!r}: {part!r} ends before it starts")
        out[split] = (first, last)
    blocks = sorted(out.values())
    if any(b[0] <= a[1] for a, b in zip(blocks, blocks[1:])):
        raise UserError(f"bad --years {spec!r}: the train, val and test years overlap")
    return out


def unreadable(path, e: BaseException | None = None) -> UserError | None:
    """A 'permission denied' UserError when that is why `path` cannot be read (never 'corrupt')."""
    if isinstance(e, PermissionError) or (e is None and not os.access(path, os.R_OK)) or \
            "Permission denied" in str(e or ""):
        return UserError(f"{path}: permission denied; make it readable (chmod/chown) or copy it somewhere you can read")
    return None


def open_readable(path: Path, mode: str = "rb"):
    try:
        return open(path, mode)
    except PermissionError as e:
        raise unreadable(path, e) from None


_NC_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}


def classic_netcdf_size(path: Path) -> int | None:
    """Bytes a classic NetCDF file (CDF-1, CDF-2 or CDF-5) needs according to its header, or None when
    it is not one (or streams its record count). netCDF-C reads a truncated classic file as zeros, so
    this is how a cut-off download is told apart from real data."""
    with open_readable(path) as f:
        buf = f.read(1 << 24)
    if buf[:3] != b"CDF" or len(buf) < 8 or buf[3] not in (1, 2, 5):
        return None
    version, pos = buf[3], 4
    big = version == 5

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise EOFError
        pos += n
        return buf[pos - n: pos]

    def count() -> int:
        return struct.unpack(">q" if big else ">I", take(8 if big else 4))[0]

    def name() -> str:
        n = count()
        text = take(n)
        take(-n % 4)
        return text.decode("utf-8", "replace")

    def attrs() -> None:
        take(4)
        for _ in range(count()):
            name()
            kind = struct.unpack(">I", take(4))[0]
            n = count() * _NC_TYPE_SIZE.get(kind, 1)
            take(n + (-n % 4))

    try:
        numrecs = count()
        if numrecs in (0xFFFFFFFF, -1):
            return None
        take(4)
        dims = [(name(), count()) for _ in range(count())]
        attrs()
        take(4)
        fixed_end, record_begin, record_sizes = pos, None, []
        for _ in range(count()):
            name()
            ids = [count() for _ in range(count())]
            attrs()
            kind = struct.unpack(">I", take(4))[0]
            count()  # vsize: capped for huge variables, so recomputed below
            begin = struct.unpack(">I" if version == 1 else ">Q", take(4 if version == 1 else 8))[0]
            size = _NC_TYPE_SIZE.get(kind, 1) * int(np.prod([dims[i][1] for i in ids if dims[i][1] > 0]))
            if ids and dims[ids[0]][1] == 0:
                record_begin = begin if record_begin is None else min(record_begin, begin)
                record_sizes.append(size)
            else:
                fixed_end = max(fixed_end, begin + size)
    except (EOFError, struct.error, IndexError):
        return len(buf) + 1  # the header itself is cut short
    if record_begin is None:
        return fixed_end
    record = record_sizes[0] if len(record_sizes) == 1 else sum(s + (-s % 4) for s in record_sizes)
    return max(fixed_end, record_begin + numrecs * record - 3 * (len(record_sizes) > 1))
