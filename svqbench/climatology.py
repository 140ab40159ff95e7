"""The climatology that anomaly correlation (ACC) and the climatology forecast are measured against.

Two kinds, both from the frames the train windows touch (never validation or test frames):
- static: one mean per channel and grid cell (climatology.npy, written at prepare time).
- seasonal (default), chosen from the data's time step, in the data's own calendar (cftime: 360_day,
  noleap, all_leap and the Gregorian ones alike):
  - sub-daily steps: day of year x time of day, as WeatherBench 2's hourly climatology;
  - daily and multi-day steps: day of year, as WeatherBench 2's daily climatology;
  - monthly steps (any step of whole months that is not whole years): month of year, unsmoothed.
  Day-of-year means are smoothed as WeatherBench 2 does (`compute_climatology.py --window_size 61`,
  `utils.create_window_weights`): a 61-day triangular window (weights rising linearly from 0 at
  -30 days to 1 at 0 and back to 0 at +30 days, so 59 days count), circular over the calendar's
  days of year (360, 365 or 366), applied to the raw per-day-of-year means of each time of day.
  Days of year the train split does not hold have no raw mean; the window then averages the days
  it does hold, with their weights (with every day held this is WeatherBench 2's "fast" method).
Where the step leaves no season (yearly data: every frame falls on the same point of the year) or
the dataset stores no frame times, seasonal cannot be computed: the static climatology is used and
`Climatology.reason` says why; metrics.json records which was used (metric_set["climatology"]).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WB2_WINDOW_DAYS = 61  # WeatherBench 2's --window_size default (scripts/compute_climatology.py)
CLIMATOLOGIES = ("seasonal", "static")
_DAYS_IN_YEAR = {"360_day": 360, "noleap": 365, "365_day": 365, "all_leap": 366, "366_day": 366}  # others: 366


@dataclass(frozen=True)
class Climatology:
    """`table[frame_group[i]]` is the climatology at frame i's time: (C, H, W) in physical units."""
    kind: str                # static | month_of_year | day_of_year | day_of_year_time_of_day
    table: np.ndarray        # (G, C, H, W) float32
    frame_group: np.ndarray  # (N,) int64: the row of `table` for every frame of the dataset
    requested: str = "static"
    reason: str | None = None   # why static was used although seasonal was asked for
    window_days: int | None = None
    calendar: str | None = None
    step: str | None = None
    times_of_day: tuple[int, ...] = ()  # day_of_year_time_of_day: seconds after midnight of each row block

    def at_frames(self, frames: np.ndarray) -> np.ndarray:
        """The climatology at the given frame indices (any shape S): (*S, C, H, W)."""
        return self.table[self.frame_group[np.asarray(frames, dtype=np.int64)]]

    def at_dates(self, dates) -> np.ndarray:
        """The climatology at any cftime `dates` of the data's calendar (also past the dataset's last
        frame, e.g. a roll-out): (len(dates), C, H, W). ValueError for a time of day it has no row for."""
        dates = list(dates)
        if self.kind == "static":
            return self.table[np.zeros(len(dates), dtype=np.int64)]
        if self.kind == "month_of_year":
            return self.table[np.array([d.month - 1 for d in dates], dtype=np.int64)]
        n_days = days_in_year(self.calendar)
        rows = np.array([d.dayofyr - 1 for d in dates], dtype=np.int64)
        if self.kind == "day_of_year_time_of_day":
            index = {t: i for i, t in enumerate(self.times_of_day)}
            seconds = [(d.hour * 60 + d.minute) * 60 + d.second for d in dates]
            missing = sorted({t for t in seconds if t not in index})
            if missing:
                raise ValueError(f"no climatology for time of day {missing[0]} s after midnight; it has "
                                 f"{', '.join(str(t) for t in self.times_of_day)}")
            rows += np.array([index[t] for t in seconds], dtype=np.int64) * n_days
        return self.table[rows]

    def describe(self) -> dict:
        """What metrics.json records about it (metric_set["climatology"])."""
        out = {"requested": self.requested, "used": "static" if self.kind == "static" else "seasonal",
               "kind": self.kind, "computed_on": "frames of the train windows"}
        if self.kind == "static":
            out["definition"] = "one mean per channel and grid cell"
        else:
            out.update(calendar=self.calendar, step=self.step, groups=int(len(self.table)))
            if self.window_days:
                out["smoothing"] = (f"{self.window_days}-day triangular window, circular over the days of year "
                                    f"(WeatherBench 2)")
        if self.reason:
            out["reason"] = self.reason
        return out


def static_climatology(cell_mean: np.ndarray, n_frames: int, *, requested: str = "static",
                       reason: str | None = None) -> Climatology:
    """The prepared dataset's per-cell train mean (C, H, W) for every frame."""
    return Climatology("static", np.asarray(cell_mean, dtype=np.float32)[None], np.zeros(n_frames, np.int64),
                       requested=requested, reason=reason)


def wb2_window_weights(window_days: int = WB2_WINDOW_DAYS) -> np.ndarray:
    """WeatherBench 2's `create_window_weights`: linear 0 -> 1 -> 0 over an odd window, mean 1."""
    if window_days % 2 != 1:
        raise ValueError(f"the window must be odd, got {window_days}")
    half = window_days // 2
    w = np.concatenate([np.linspace(0, 1, half + 1), np.linspace(1, 0, half + 1)[1:]])
    return w / w.mean()


def days_in_year(calendar: str) -> int:
    """Length of the day-of-year axis: 360 (360_day), 365 (noleap), else 366 (day 366 in leap years)."""
    return _DAYS_IN_YEAR.get(str(calendar).lower(), 366)


def seasonal_keys(dates, step) -> tuple[str, np.ndarray, int, tuple[int, ...]] | str:
    """(kind, group of every date, number of groups, times of day in seconds) for `dates` (cftime) at
    `step` (cf.Step), or the reason there is no season at that step."""
    if step.months:
        if step.months % 12 == 0:
            return f"a step of {step} (whole years) puts every frame at the same point of the year: no season"
        return "month_of_year", np.array([d.month - 1 for d in dates], dtype=np.int64), 12, ()
    doy = np.array([d.dayofyr - 1 for d in dates], dtype=np.int64)
    n_days = days_in_year(dates[0].calendar)
    if step.seconds >= 86400:
        return "day_of_year", doy, n_days, ()
    seconds = np.array([(d.hour * 60 + d.minute) * 60 + d.second for d in dates], dtype=np.int64)
    times_of_day, tod = np.unique(seconds, return_inverse=True)
    return ("day_of_year_time_of_day", tod.reshape(-1) * n_days + doy, len(times_of_day) * n_days,
            tuple(int(t) for t in times_of_day))


def smooth_day_of_year(sums: np.ndarray, counts: np.ndarray, window_days: int = WB2_WINDOW_DAYS) -> np.ndarray:
    """Circular triangular-window mean over the days of year of per-day sums (D, ...) and frame
    counts (D,): for day d, sum_k w_k m_(d+k) / sum_k w_k over the days d+k that hold data, m the
    raw per-day means. Returns (D, ...) float64; NaN where no day within the window holds data."""
    w = wb2_window_weights(window_days)
    half, days = window_days // 2, len(counts)
    # the circular window as a (D, D) matrix: one product instead of a shifted copy per window day
    window = np.zeros((days, days))
    for k, wk in enumerate(w):
        np.add.at(window, (np.arange(days), (np.arange(days) + k - half) % days), wk)
    present = (counts > 0).astype(np.float64)
    flat = sums.reshape(days, -1)
    means = np.divide(flat, np.maximum(counts, 1)[:, None]) * present[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((window @ means) / (window @ present)[:, None]).reshape(sums.shape)


def seasonal_climatology(frames_at, train_frames: np.ndarray, dates, step, *, calendar: str,
                         window_days: int = WB2_WINDOW_DAYS, chunk: int = 256) -> Climatology | str:
    """The seasonal climatology of the frames listed in `train_frames` (indices), read with
    `frames_at(indices) -> (n, C, H, W)` physical values; `dates` are every frame's times (cftime).
    Returns the reason instead when there is no season at `step` or the train split does not
    cover every group the dataset's frames fall in."""
    keys = seasonal_keys(dates, step)
    if isinstance(keys, str):
        return keys
    kind, group, n_groups, times_of_day = keys
    train_frames = np.asarray(train_frames, dtype=np.int64)
    sums = counts = None
    for i in range(0, len(train_frames), chunk):
        idx = train_frames[i: i + chunk]
        block = np.asarray(frames_at(idx), dtype=np.float64)
        if sums is None:
            sums = np.zeros((n_groups, *block.shape[1:]), dtype=np.float64)
            counts = np.zeros(n_groups, dtype=np.int64)
        np.add.at(sums, group[idx], block)
        np.add.at(counts, group[idx], 1)
    if sums is None:
        return "the train split holds no frames"
    if kind == "month_of_year":
        with np.errstate(invalid="ignore", divide="ignore"):
            table = sums / counts.reshape(-1, 1, 1, 1)
        window = None
    else:
        n_days = days_in_year(calendar)
        table = np.empty(sums.shape, dtype=np.float64)
        for start in range(0, n_groups, n_days):  # each time of day on its own: bounded temporaries
            table[start: start + n_days] = smooth_day_of_year(sums[start: start + n_days],
                                                              counts[start: start + n_days], window_days)
        window = window_days
    used = np.unique(group)
    if not np.isfinite(table[used]).all():
        missing = sorted(set(used.tolist()) - set(np.flatnonzero(np.isfinite(table).all(axis=(1, 2, 3))).tolist()))
        what = "months" if kind == "month_of_year" else "days of year"
        return (f"the train split holds no frame in {len(missing)} of the {what} the data fall in "
                f"(within the {window_days}-day window)" if window else
                f"the train split holds no frame in {len(missing)} of the {what} the data fall in")
    table = np.where(np.isfinite(table), table, 0.0).astype(np.float32)
    return Climatology(kind, table, group, requested="seasonal", window_days=window, calendar=calendar,
                       step=str(step), times_of_day=times_of_day)
