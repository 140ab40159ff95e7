"""CF conventions for gridded files: which dim is what, calendars, and time steps in the data's own unit.

Axes: a dim's coordinate attributes decide first (`axis` T/Y/X/Z, `standard_name`, `units` such as
`days since ...`, `degrees_north`), its name second (`TIME`, `hlat`, `rlon`, ...), and when the two
horizontal dims are still unknown, the last two dims (CF's T, Z, Y, X order; e.g. Ferret's
FNOCY/FNOCX, pixel rows/cols). Latitude is only what CF calls latitude (1-D `degrees_north`, or a
2-D auxiliary `lat(y, x)` of a rotated or curvilinear grid); projected y in metres or pixel indices
are not latitudes.

Times are decoded with cftime in the file's calendar (standard, proleptic_gregorian, julian,
noleap / 365_day, all_leap / 366_day, 360_day), including `months since` / `years since` units
(calendar months and years) and year-0 origins. Dates are compared through calendar-independent
integer keys (YYYYMMDDhhmmss), so a bound like 2000-12-31 also works on a 360-day calendar.
"""
from __future__ import annotations

import datetime
import math
import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from svqbench.errors import UserError

CALENDARS = ("standard", "gregorian", "proleptic_gregorian", "julian", "noleap", "365_day", "all_leap", "366_day",
             "360_day")
LAT_UNITS = {"degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen"}
LON_UNITS = {"degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"}
TIME_NAMES = {"time", "valid_time", "t", "date", "time_counter"}
Y_NAMES = {"lat", "latitude", "y", "rlat", "nav_lat", "yc", "j", "south_north"}
X_NAMES = {"lon", "longitude", "x", "rlon", "nav_lon", "xc", "i", "west_east"}
Z_STANDARD_NAMES = {"air_pressure", "height", "depth", "altitude", "model_level_number",
                    "atmosphere_hybrid_sigma_pressure_coordinate", "atmosphere_sigma_coordinate"}
UNIT_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


# ---- axes ---------------------------------------------------------------------------------------


def _norm_units(attrs) -> str:
    return str(attrs.get("units", "")).strip().lower().replace(" ", "_")


def axis_of(attrs) -> str | None:
    """T, Y, X or Z from a coordinate's CF attributes, or None."""
    axis = str(attrs.get("axis", "")).strip().upper()
    if axis in ("T", "Y", "X", "Z"):
        return axis
    sn = str(attrs.get("standard_name", "")).strip().lower()
    units = _norm_units(attrs)
    if sn == "time" or "_since_" in units:
        return "T"
    if sn in ("latitude", "grid_latitude", "projection_y_coordinate") or units in LAT_UNITS:
        return "Y"
    if sn in ("longitude", "grid_longitude", "projection_x_coordinate") or units in LON_UNITS:
        return "X"
    if sn in Z_STANDARD_NAMES or "positive" in attrs:
        return "Z"
    return None


def axis_by_name(name: str) -> str | None:
    n = name.lower()
    if n in TIME_NAMES or n.startswith("time"):
        return "T"
    if n in Y_NAMES or n.endswith("lat") or n.endswith("latitude"):
        return "Y"
    if n in X_NAMES or n.endswith("lon") or n.endswith("longitude"):
        return "X"
    return None


def find_axes(ds, da, where: str) -> dict[str, str | None]:
    """{"T": dim or None, "Y": dim, "X": dim} for DataArray `da` of Dataset `ds`."""
    found: dict[str, str] = {}
    for pick in (lambda d: axis_of(ds[d].attrs) if d in ds.variables else None, axis_by_name):
        for d in da.dims:
            a = pick(d)
            if a in ("T", "Y", "X") and a not in found and d not in found.values():
                found[a] = d
    rest = [d for d in da.dims if d not in found.values()]
    missing = [a for a in ("Y", "X") if a not in found]
    if missing and len(rest) >= len(missing):  # CF order T, Z, Y, X: the last free dims are horizontal
        found.update(zip(missing, rest[-len(missing):]))
    if "Y" not in found or "X" not in found:
        raise UserError(f"{where}: dims {da.dims} have no two horizontal dims; a gridded field needs "
                        f"(time, [level,] y, x)")
    return {"T": found.get("T"), "Y": found["Y"], "X": found["X"]}


def scalar_time(ds, da) -> str | None:
    """A scalar time coordinate (one field per file), e.g. `time` listed in `coordinates`."""
    names = list(da.coords) + str(da.attrs.get("coordinates", "")).split()
    for name in names:
        if name in ds.variables and ds[name].ndim == 0:
            attrs = ds[name].attrs
            if (str(attrs.get("standard_name", "")).lower() == "time" or str(attrs.get("axis", "")).upper() == "T"
                    or (axis_by_name(name) == "T" and "_since_" in _norm_units(attrs))):
                return name
    return None


def _is_lat(name: str, attrs, which: str) -> bool:
    """Do a coordinate's attributes (or, without any, its name) say true latitude / longitude?"""
    sn = str(attrs.get("standard_name", "")).strip().lower()
    units = _norm_units(attrs)
    true_units, true_name = (LAT_UNITS, "latitude") if which == "lat" else (LON_UNITS, "longitude")
    names = ("lat", "latitude", "nav_lat") if which == "lat" else ("lon", "longitude", "nav_lon")
    if sn:
        return sn == true_name
    if units:
        return units in true_units or (units in ("degrees", "degree") and name.lower() in names)
    return name.lower() in names


def _in_range(values: np.ndarray, which: str) -> bool:
    limit = 90 if which == "lat" else 720
    return bool(np.issubdtype(values.dtype, np.number) and np.isfinite(values).all()
                and np.abs(values).max() <= limit)


def lat_lon(ds, da, ydim: str, xdim: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Latitude and longitude of the grid: 1-D (H,)/(W,) on a regular grid, 2-D (H, W) on a rotated or
    curvilinear one (from the auxiliary coordinates), None where the file has none (pixels, metres)."""
    out = []
    for which, dim in (("lat", ydim), ("lon", xdim)):
        found = None
        if dim in ds.variables and ds[dim].ndim == 1 and _is_lat(dim, ds[dim].attrs, which):
            if _in_range(ds[dim].values, which):
                found = np.asarray(ds[dim].values, dtype=np.float64)
        else:
            names = str(da.attrs.get("coordinates", "")).split() + list(da.coords) + list(ds.variables)
            for name in dict.fromkeys(names):
                v = ds[name] if name in ds.variables else None
                if v is not None and v.ndim == 2 and set(v.dims) == {ydim, xdim} and _is_lat(name, v.attrs, which):
                    values = v.transpose(ydim, xdim).values
                    if _in_range(values, which):
                        found = np.asarray(values, dtype=np.float64)
                    break
        out.append(found)
    return out[0], out[1]


# ---- times --------------------------------------------------------------------------------------


def _num2date(values: np.ndarray, units: str, calendar: str):
    import cftime
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CF's warning about year-0 origins
        try:
            return cftime.num2date(values, units, calendar, only_use_cftime_datetimes=True)
        except ValueError as e:
            if "zero" not in str(e):
                raise
            return cftime.num2date(values, units, calendar, only_use_cftime_datetimes=True, has_year_zero=True)


def _add_months(origin, months: float):
    """`origin` + `months` calendar months (a fraction is that share of the month it falls in)."""
    whole = math.floor(months + 1e-6)
    y, m = divmod(origin.month - 1 + whole, 12)
    start = origin.replace(day=1).replace(year=origin.year + y, month=m + 1)
    start = start.replace(day=min(origin.day, start.daysinmonth))
    frac = months - whole
    if frac > 1e-6:
        start = start + datetime.timedelta(days=frac * start.daysinmonth)
    return start


def decode_times(values, attrs, where: str) -> np.ndarray:
    """Object array of cftime datetimes from raw CF time values and their attributes."""
    units = str(attrs.get("units", "")).strip()
    calendar = str(attrs.get("calendar", "standard")).strip().lower() or "standard"
    unit, sep, origin = units.partition(" since ")
    if not sep:
        raise UserError(f"{where}: time units {units!r} are not 'UNIT since DATE'; add CF units to the time "
                        f"coordinate (e.g. 'days since 2000-01-01')")
    if calendar not in CALENDARS:
        raise UserError(f"{where}: calendar {calendar!r} is not a CF calendar ({', '.join(CALENDARS)})")
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if not np.isfinite(values).all():
        i = int(np.argmax(~np.isfinite(values)))
        raise UserError(f"{where}: time value {i} is missing (fill value); the file may be truncated")
    unit = unit.strip().lower()
    try:
        if unit in ("month", "months", "mon", "year", "years", "yr", "common_year", "common_years"):
            per = 1 if unit.startswith("mon") else 12
            origin_date = _num2date(np.zeros(1), f"days since {origin}", calendar)[0]
            out = np.empty(len(values), dtype=object)
            out[:] = [_add_months(origin_date, v * per) for v in values]
            return out
        return np.asarray(_num2date(values, units, calendar), dtype=object)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"{where}: cannot decode times {units!r} ({calendar} calendar): {e}") from None


def keys(dates) -> np.ndarray:
    """Sortable int64 YYYYMMDDhhmmss keys, the same in every calendar."""
    return np.array([((((d.year * 100 + d.month) * 100 + d.day) * 100 + d.hour) * 100 + d.minute) * 100 + d.second
                     for d in dates], dtype=np.int64)


def iso(d) -> str:
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    return text if (d.hour, d.minute, d.second) == (0, 0, 0) else text + f"T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


_DATE = r"\d{1,4}(?:-\d{1,2}(?:-\d{1,2}(?:[T ]\d{1,2}(?::\d{2}(?::\d{2})?)?)?)?)?"


def date_key(text: str, *, end: bool) -> int:
    """Key bound of an ISO date prefix: the first instant of `2001-03` (start) or its last (end)."""
    parts = [int(p) for p in re.split(r"[-T :]", text)]
    fill = [99] * 5 if end else [1, 1, 0, 0, 0]
    y, mo, d, h, mi, s = parts + fill[len(parts) - 1:]
    if (len(parts) > 1 and not 1 <= mo <= 12) or (len(parts) > 2 and not 1 <= d <= 31) or \
            (len(parts) > 3 and not 0 <= h <= 23) or any(not 0 <= v <= 59 for v in parts[4:]):
        raise ValueError(text)
    return ((((y * 100 + mo) * 100 + d) * 100 + h) * 100 + mi) * 100 + s


def parse_range(spec: str) -> tuple[int | None, int | None] | None:
    """`START:END` (either may be empty) or a single prefix `2016` -> (start key, end key); None if malformed."""
    text = spec.strip()
    if re.fullmatch(_DATE, text):
        a = b = text
    else:
        m = re.fullmatch(f"({_DATE})?:({_DATE})?", text)
        if not m:
            return None
        a, b = m.group(1), m.group(2)
    try:
        return (date_key(a, end=False) if a else None), (date_key(b, end=True) if b else None)
    except ValueError:
        return None


# ---- steps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    n: int
    unit: str  # seconds, minutes, hours, days, months, years

    def __str__(self) -> str:
        return f"{self.n} {self.unit}"

    @property
    def seconds(self) -> int | None:
        return self.n * UNIT_SECONDS[self.unit] if self.unit in UNIT_SECONDS else None

    @property
    def months(self) -> int | None:
        return {"months": self.n, "years": 12 * self.n}.get(self.unit)


def _seconds_step(s: int) -> Step:
    for unit, size in UNIT_SECONDS.items():
        if s % size == 0:
            return Step(s // size, unit)
    raise AssertionError


def _months_step(k: int) -> Step:
    return Step(k // 12, "years") if k % 12 == 0 else Step(k, "months")


def infer_step(dates: np.ndarray, describe: Callable[[int], str], where: str) -> Step:
    """The one step of a regular time axis, judged in its own unit: seconds to days exactly, months and
    years by calendar month (so monthly means stamped mid-month are regular). Raises a UserError naming
    the first irregular step otherwise."""
    if len(dates) < 2:
        raise UserError(f"{where}: a single time step ({iso(dates[0])}); a forecasting dataset needs a time series: "
                        f"pass all its files (a folder or a quoted 'dir/*.nc' glob)" if len(dates) else
                        f"{where}: no time steps")
    secs = np.round([td.total_seconds() for td in np.diff(dates)]).astype(np.int64)
    if (secs <= 0).any():
        i = int(np.argmax(secs <= 0))
        raise UserError(f"{where}: times go {'back' if secs[i] < 0 else 'nowhere'} between {describe(i)} and "
                        f"{describe(i + 1)} (repeated or unsorted times); remove the duplicates")
    months = np.diff([d.year * 12 + d.month - 1 for d in dates])
    k = int(np.bincount(np.clip(months, 0, None)).argmax())
    slack = 3.5 + 0.02 * months * 30.436875  # mid-month stamps, 360-day years
    if k >= 1 and (months == k).all() and (np.abs(secs / 86400 - months * 30.436875) <= slack).all():
        return _months_step(k)
    values, counts = np.unique(secs, return_counts=True)
    if len(values) == 1:
        return _seconds_step(int(values[0]))
    common = int(values[counts.argmax()])
    if k >= 1 and np.mean(months == k) > np.mean(secs == common):
        i = int(np.argmax(months != k))
        got, want = _months_step(int(months[i])) if months[i] > 0 else _seconds_step(int(secs[i])), _months_step(k)
    else:
        i = int(np.argmax(secs != common))
        got, want = _seconds_step(int(secs[i])), _seconds_step(common)
    raise UserError(f"{where}: time step changes between {describe(i)} and {describe(i + 1)} ({got} vs {want}); "
                    f"the time axis must be regular (fill the gap, or cut it out with --time)")


def shift(d, step: Step, times: int = 1):
    """`d` moved by `times` steps."""
    if step.months:
        return _add_months(d.replace(day=min(d.day, 28)), step.months * times)
    return d + datetime.timedelta(seconds=step.seconds * times)


# ---- resampling ---------------------------------------------------------------------------------

_RESAMPLE_WORDS = {"hourly": "1h", "daily": "1d", "monthly": "1m", "yearly": "1y", "annual": "1y"}
_RESAMPLE_UNITS = {"h": "hours", "hour": "hours", "hours": "hours", "d": "days", "day": "days", "days": "days",
                   "m": "months", "mon": "months", "month": "months", "months": "months", "y": "years",
                   "a": "years", "year": "years", "years": "years"}


def parse_resample(spec: str) -> Step:
    text = _RESAMPLE_WORDS.get(spec.strip().lower(), spec.strip().lower())
    m = re.fullmatch(r"(\d*)\s*([a-z]+)", text)
    if not m or m.group(2) not in _RESAMPLE_UNITS or m.group(1) in ("0", "00"):
        raise UserError(f"bad --resample {spec!r}: expected N and a unit, e.g. 1D (daily means), 6h, 1M (monthly), "
                        f"1Y, or daily / monthly / yearly")
    return Step(int(m.group(1) or 1), _RESAMPLE_UNITS[m.group(2)])


def _bucket(d, target: Step, ref) -> int:
    if target.unit == "hours":
        return ((d.year * 100 + d.month) * 100 + d.day) * 100 + d.hour // target.n
    if target.unit == "days":
        return (d - ref).days // target.n
    return (d.year * 12 + d.month - 1) // target.months


def resample_plan(dates: np.ndarray, step: Step, target: Step, where: str):
    """Means over calendar periods of `target`: (source start, source stop, period start date) per complete
    period; an incomplete first or last period is dropped."""
    if target.months:
        coarser = step.seconds is not None or (target.months > step.months and target.months % step.months == 0)
    else:
        coarser = step.seconds is not None and target.seconds > step.seconds and target.seconds % step.seconds == 0
    if not coarser:
        raise UserError(f"{where}: --resample {target} cannot average steps of {step}; choose a period that is a "
                        f"whole multiple of the step (e.g. daily means of hourly data)")
    if target.unit == "hours" and 24 % target.n:
        raise UserError(f"bad --resample {target}: hours must divide a day (1, 2, 3, 4, 6, 8, 12, 24)")
    ref = dates[0].replace(hour=0, minute=0, second=0, microsecond=0)
    k = np.array([_bucket(d, target, ref) for d in dates])
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    stops = np.r_[starts[1:], len(dates)]
    keep = np.ones(len(starts), dtype=bool)
    keep[0] &= _bucket(shift(dates[0], step, -1), target, ref) != k[0]
    keep[-1] &= _bucket(shift(dates[-1], step, 1), target, ref) != k[-1]
    starts, stops = starts[keep], stops[keep]
    if not len(starts):
        raise UserError(f"{where}: no complete {target} period to average ({iso(dates[0])} .. {iso(dates[-1])})")
    out = np.empty(len(starts), dtype=object)
    for j, s in enumerate(starts):
        d = dates[s]
        if target.unit == "hours":
            out[j] = d.replace(hour=d.hour // target.n * target.n, minute=0, second=0, microsecond=0)
        elif target.unit == "days":
            out[j] = ref + datetime.timedelta(days=int(k[s]) * target.n)
        else:
            y, m = divmod(int(k[s]) * target.months, 12)
            out[j] = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).replace(year=y, month=m + 1)
    return starts, stops, out
