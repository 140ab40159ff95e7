"""Validation shared by the gridded sources: every failure names the file and what is wrong."""
from __future__ import annotations

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
