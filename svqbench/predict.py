"""Forecasts out of a run: `svqbench predict RUN`, and scoring a written forecast file.

Weather runs write an xarray Dataset (NetCDF or zarr) in physical units, in the layout WeatherBench 2
reads: dims `time` (forecast initialisation = the time of the last input frame), `prediction_timedelta`
(lead: timedelta for steps of seconds to days, else whole months or years with those units), [`level`],
`latitude`, `longitude` (a curvilinear grid keeps its native y/x dims with 2-D latitude/longitude
coordinates; a grid without latitudes keeps y/x), with `valid_time` (time, lead) and, for a split,
`window_start` (the window's first frame in the prepared dataset). `time` and `valid_time` are the
prepared frames' own times (stored at prepare time), CF-encoded in the source's units and calendar, so
xarray decodes them; data without calendar times (the synthetic set) get frame indices. One variable
per channel (WeatherBench tasks: the WeatherBench 2 names, levels on a `level` dim), zlib-compressed,
NaN (_FillValue) in the cells the run's mask marks invalid; `svqbench_channels` (a global attribute,
JSON) maps channels to variables. Any run can write `.npy` (N, T, C, H, W) with a JSON sidecar; video
and traffic runs write only that, and `strips` PNG strips (truth and forecast per lead time).

`--input` forecasts new data: the file is read by `prepare netcdf`'s reader and must match the run's
variables, grid (sizes and coordinates), time step and units; NaNs only in the run's masked cells;
every window of in_len consecutive steps is forecast. Outputs are written to a temp file (folder
for zarr) and renamed into place, so a failure (a full disk included) keeps an earlier forecast; the
temp file of a killed predict is removed by the next predict to that path.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svqbench import __version__
from svqbench.atomic import (CannotWrite, ensure_dir, remove_stale_temps, replacing, save_figure, stale_temps,
                             write_json)
from svqbench.data import cf
from svqbench.data.prepared import FrameTimes
from svqbench.errors import UserError

FORMATS = {"netcdf": ".nc", "zarr": ".zarr", "npy": ".npy"}
_SUFFIX_FORMAT = {".nc": "netcdf", ".nc4": "netcdf", ".zarr": "zarr", ".npy": "npy"}
_STEP_UNITS = {"second": "seconds", "minute": "minutes", "hour": "hours", "day": "days", "month": "months",
               "year": "years"}


# ---- what the forecast file holds -------------------------------------------------------------

@dataclass
class Variable:
    """One data variable of the file: the channels it holds (one, or one per level)."""
    name: str
    channels: list[int]
    levels: list[int] | None
    units: str
    long_name: str


def variables(ds, dataset: str) -> list[Variable]:
    """WeatherBench tasks: their WeatherBench 2 names, levels on a `level` dim; else one per channel."""
    units = list(ds.meta.get("units") or [""] * len(ds.channels))
    from svqbench.data.weatherbench import TASKS, VARIABLES
    task = TASKS.get(dataset)
    if task is not None and task.channels == ds.channels:
        out, c = [], 0
        for var, levels in task.fields:
            n = len(levels or (None,))
            out.append(Variable(VARIABLES[var].wb2_name, list(range(c, c + n)), list(levels) if levels else None,
                                units[c], VARIABLES[var].wb2_name.replace("_", " ")))
            c += n
        return out
    return [Variable(name, [c], None, units[c], name) for c, name in enumerate(ds.channels)]


def parse_step(text: str | None) -> cf.Step | None:
    """A prepared dataset's step ("6 hours", "1 year", "1 days") as a cf.Step; None when it has no unit."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]+?)s?\s*", str(text or "").lower())
    if not m or m.group(2) not in _STEP_UNITS:
        return None
    return cf.Step(int(m.group(1)), _STEP_UNITS[m.group(2)])


def _same_step(a: cf.Step, b: cf.Step) -> bool:
    return (a.seconds, a.months) == (b.seconds, b.months)


def frame_times(ds) -> FrameTimes | None:
    """Every frame's real time as CF numbers: what prepare stored (times.npy, the source's own units and
    calendar), or a WeatherBench dataset's year segments (a regular hourly axis that prepare checked);
    None when the dataset has no calendar times (its step is not a time unit, e.g. the synthetic data's
    "1 step"). A dataset with a time step but no stored times was prepared by an older svqbench and
    is refused with the command that re-prepares it: rebuilding its times as first + i x step would
    be wrong for monthly means stamped mid-month."""
    if ds.times is not None:
        return ds.times
    times = ds.meta.get("times")
    if isinstance(times, dict) and times.get("segments"):
        start = np.datetime64(times["segments"][0][0], "h")
        step = int(times["step_hours"])
        hours = np.concatenate([(np.datetime64(first, "h") - start).astype(np.int64) + step * np.arange(count)
                                for first, count in times["segments"]])
        if len(hours) == len(ds.frames):  # datetime64 is the proleptic Gregorian calendar
            return FrameTimes(hours.astype(np.float64), f"hours since {str(start).replace('T', ' ')}:00:00",
                              "proleptic_gregorian")
    if parse_step(ds.meta.get("step")) is None:
        return None
    from svqbench.data import reserved_names
    name = ds.path.name
    how = (f"`svqbench prepare {name}`" if name in reserved_names() else
           f"the `svqbench prepare netcdf ... --name {name}` command that made it")
    raise UserError(f"prepared dataset {ds.path} stores no frame times (prepared by an older svqbench); prepare it "
                    f"again with {how}: its digest does not change, so runs on it still load")


@dataclass
class ForecastTimes:
    """The `time` (initialisation: the last input frame) and `valid_time` coordinates of a forecast:
    CF numbers in `units` of `calendar`, or frame indices (units None) for data without calendar times."""
    init: np.ndarray   # (N,)
    valid: np.ndarray  # (N, T)
    units: str | None = None
    calendar: str | None = None

    def labels(self) -> list[str]:
        """`init` as ISO dates (or the indices) for the .npy sidecar."""
        if self.units is None:
            return [str(int(t)) for t in self.init]
        return [cf.iso(d) for d in FrameTimes(self.init, self.units, self.calendar).dates()]


def split_times(ds, starts: np.ndarray, lead_steps: int | None = None) -> ForecastTimes:
    """Times of the windows starting at `starts`: the prepared frames' own times, leads included
    (`lead_steps`, default out_len); leads past the dataset's last frame are stepped from it."""
    last = np.asarray(starts, dtype=np.int64) + ds.in_len - 1
    leads = last[:, None] + np.arange(1, (lead_steps or ds.out_len) + 1)
    times = frame_times(ds)
    if times is None:
        return ForecastTimes(last, leads)
    values = times.values
    beyond = int(leads.max()) + 1 - len(values)
    if beyond > 0:  # a roll-out past the end of the data: the frames' own step, in their calendar
        import cftime
        step = parse_step(ds.meta.get("step"))
        last_date = times.dates()[-1]
        extra = [cf.shift(last_date, step, k) for k in range(1, beyond + 1)]
        values = np.concatenate([values, np.asarray(cftime.date2num(extra, times.units, times.calendar), np.float64)])
    return ForecastTimes(values[last], values[leads], times.units, times.calendar)


def _input_times(frames: "InputFrames", in_len: int, out_len: int) -> ForecastTimes:
    """Times of every window of an input file, in its own units and calendar; leads past the file's
    last time are stepped from it by the time step."""
    dates = frames.src.dates
    if frames.step is None:
        raise UserError(f"{frames.src.where}: a single time step, and the run records no time step: the times "
                        f"forecast cannot be told; give the file at least two time steps")
    extra = np.empty(out_len, dtype=object)
    extra[:] = [cf.shift(dates[-1], frames.step, k) for k in range(1, out_len + 1)]
    times = frames.src.frame_times(np.concatenate([dates, extra]))
    last = np.arange(in_len - 1, len(dates))
    leads = last[:, None] + np.arange(1, out_len + 1)
    return ForecastTimes(times.values[last], times.values[leads], times.units, times.calendar)


def _grid_coords(ds) -> tuple[tuple[str, str], dict]:
    """(y dim, x dim) and the grid's coordinates with CF attributes."""
    grid = ds.meta.get("grid") or {}
    h, w = ds.grid
    lat_attrs = {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"}
    lon_attrs = {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"}
    if grid.get("lat") is not None and grid.get("lon") is not None:
        return ("latitude", "longitude"), {
            "latitude": ("latitude", np.asarray(grid["lat"], dtype=np.float64), {**lat_attrs, "axis": "Y"}),
            "longitude": ("longitude", np.asarray(grid["lon"], dtype=np.float64), {**lon_attrs, "axis": "X"})}
    ydim = grid["y"] if isinstance(grid.get("y"), str) else "y"
    xdim = grid["x"] if isinstance(grid.get("x"), str) else "x"
    coords = {ydim: (ydim, np.arange(h), {"long_name": "grid row index", "axis": "Y"}),
              xdim: (xdim, np.arange(w), {"long_name": "grid column index", "axis": "X"})}
    if grid.get("lat2d") is not None and grid.get("lon2d") is not None:  # curvilinear: native y/x indices
        coords["latitude"] = ((ydim, xdim), np.asarray(grid["lat2d"], dtype=np.float64), lat_attrs)
        coords["longitude"] = ((ydim, xdim), np.asarray(grid["lon2d"], dtype=np.float64), lon_attrs)
    return (ydim, xdim), coords


def skeleton(ds, *, dataset: str, times: ForecastTimes, step: cf.Step | None, window_start: np.ndarray | None,
             attrs: dict, members: list[str] | None = None):
    """The xarray Dataset of everything but the forecast values: coordinates and attributes. Times are
    CF numbers with units and calendar (xarray decodes them); a lead is a timedelta, or whole months or
    years with those units."""
    import xarray as xr
    t = times.valid.shape[1]
    lead_attrs = {"standard_name": "forecast_period", "long_name": "forecast lead time"}
    if step is not None and step.seconds is not None:
        lead = xr.Variable("prediction_timedelta", np.arange(1, t + 1) * np.timedelta64(step.seconds, "s"), lead_attrs)
    elif step is not None:  # months or years: no fixed length of time
        lead = xr.Variable("prediction_timedelta", np.arange(1, t + 1) * step.n, {**lead_attrs, "units": step.unit})
    else:
        lead = xr.Variable("prediction_timedelta", np.arange(1, t + 1),
                           {"long_name": f"forecast lead in steps of {ds.meta.get('step', '1 step')} (the data have "
                                         f"no calendar times)", "units": "1"})
    if times.units is not None:
        cf_time = {"units": times.units, "calendar": times.calendar}
        time_attrs = {"standard_name": "forecast_reference_time",
                      "long_name": "forecast initialisation time (time of the last input frame)", **cf_time}
        valid_attrs = {"standard_name": "time", "long_name": "time the forecast is valid for", **cf_time}
    else:
        time_attrs = {"long_name": "index of the last input frame in the prepared dataset", "units": "1"}
        valid_attrs = {"long_name": "index of the frame the forecast is valid for", "units": "1"}
    coords = {"time": ("time", times.init, time_attrs), "prediction_timedelta": lead,
              "valid_time": (("time", "prediction_timedelta"), times.valid, valid_attrs)}
    if window_start is not None:
        coords["window_start"] = ("time", np.asarray(window_start, dtype=np.int64),
                                  {"long_name": "first input frame of the window in the prepared dataset"})
    if members:  # a seed ensemble: one run per member
        coords["member"] = ("member", np.arange(len(members)),
                            {"long_name": "ensemble member (the run ids are in the svqbench_members attribute)"})
    levels = sorted({lev for v in variables(ds, dataset) if v.levels for lev in v.levels})
    if levels:
        coords["level"] = ("level", np.asarray(levels, dtype=np.int64),
                           {"long_name": "pressure level", "units": "hPa", "axis": "Z", "positive": "down"})
    coords.update(_grid_coords(ds)[1])
    return xr.Dataset(coords=coords, attrs=attrs)


# ---- writers: one temp file (or folder) each, renamed into place --------------------------------

def _channels(block: np.ndarray, v: Variable) -> np.ndarray:
    """A variable's values of a (B, [M,] T, C, H, W) block: its levels on their own axis, else one channel."""
    return block[..., v.channels, :, :] if v.levels else block[..., v.channels[0], :, :]


class _NetCDF:
    def __init__(self, tmp: Path, base, ds, dataset: str):
        import netCDF4
        packed = {name: {"zlib": True, "complevel": 1} for name, v in base.variables.items() if v.ndim}
        base.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=packed)
        self.nc = netCDF4.Dataset(tmp, "a")
        (ydim, xdim), coords = _grid_coords(ds)
        aux = " ".join(["valid_time"] + (["latitude", "longitude"] if ydim != "latitude" and "latitude" in coords
                                         else []))
        self.vars = variables(ds, dataset)
        member = ("member",) if "member" in base.dims else ()
        for v in self.vars:
            dims = ("time", *member, "prediction_timedelta", *(("level",) if v.levels else ()), ydim, xdim)
            sizes = (1, *(base.sizes[d] for d in member), base.sizes["prediction_timedelta"],
                     *((len(v.levels),) if v.levels else ()), *ds.grid)
            var = self.nc.createVariable(v.name, "f4", dims, compression="zlib", complevel=1, shuffle=True,
                                         chunksizes=sizes, fill_value=np.float32(np.nan))
            var.setncatts({"units": v.units, "long_name": v.long_name, "coordinates": aux})

    def write(self, row: int, block: np.ndarray) -> None:
        for v in self.vars:
            self.nc[v.name][row: row + len(block)] = _channels(block, v)

    def close(self) -> None:
        self.nc.close()


class _Zarr:
    def __init__(self, tmp: Path, base, ds, dataset: str):
        self.tmp, self.base, self.vars, self.row = tmp, base, variables(ds, dataset), 0
        self.dims = _grid_coords(ds)[0]

    def write(self, row: int, block: np.ndarray) -> None:
        part = self.base.isel(time=slice(row, row + len(block)))
        member = ("member",) if "member" in self.base.dims else ()
        for v in self.vars:
            dims = ("time", *member, "prediction_timedelta", *(("level",) if v.levels else ()), *self.dims)
            part[v.name] = (dims, _channels(block, v), {"units": v.units, "long_name": v.long_name})
        first = row == 0
        part.to_zarr(self.tmp, mode="w" if first else "a", append_dim=None if first else "time", zarr_format=2,
                     consolidated=True)

    def close(self) -> None:
        pass


class _Npy:
    def __init__(self, tmp: Path, shape: tuple[int, ...]):
        self.array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)

    def write(self, row: int, block: np.ndarray) -> None:
        self.array[row: row + len(block)] = block

    def close(self) -> None:
        self.array.flush()
        del self.array


def _is_zarr_store(path: Path) -> bool:
    return any((path / m).exists() for m in (".zgroup", "zarr.json", ".zmetadata"))


@contextlib.contextmanager
def _replacing_store(path: Path):
    """A zarr store written into a temp folder and swapped in; only a zarr store is ever replaced."""
    ensure_dir(path.parent)
    if not path.exists():  # a predict killed between its two renames: its earlier store is put back
        for stale in stale_temps(path.parent, path.name):
            if stale.name.startswith(f".{path.name}.old-") and _is_zarr_store(stale):
                stale.rename(path)
                break
    remove_stale_temps(path.parent, path.name)  # what a killed predict left
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if path.exists():
            path.rename(old)
        try:
            tmp.rename(path)
        except OSError:
            if old.exists() and not path.exists():
                old.rename(path)  # the earlier store stays
            raise
    except OSError as e:
        raise CannotWrite(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def output_path(*, fmt: str | None, out: Path | None, kind: str, default: Path) -> tuple[str, Path]:
    """The format and the output path, checked before anything is computed."""
    given = _SUFFIX_FORMAT.get(out.suffix.lower()) if out is not None else None
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    fmt = fmt or given or ("netcdf" if kind == "weather" else "npy")
    if kind != "weather" and fmt != "npy":
        raise UserError(f"{fmt} forecasts are for weather runs; a {kind} run writes .npy (--format npy)")
    if given is not None and given != fmt:
        raise UserError(f"--out {out} has the suffix of {given} but --format is {fmt}; use a {FORMATS[fmt]} path")
    path = Path(out) if out is not None else default.with_suffix(FORMATS[fmt])
    if fmt == "zarr":
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} is a file; a zarr store is a folder, give another path")
        if path.is_dir() and any(path.iterdir()) and not _is_zarr_store(path):
            raise UserError(f"--out {path} is a folder that is not a zarr store; give another path (nothing was "
                            f"written)")
    elif path.is_dir():
        example = path / default.with_suffix(FORMATS[fmt]).name
        raise UserError(f"--out {path} is a folder; give a file name, e.g. {example}")
    return fmt, path


# ---- new input: validated like `prepare netcdf`, normalised with the run's statistics -----------

def _norm_units(u: str) -> str:
    return re.sub(r"[\s*^]", "", str(u)).lower()


class InputFrames:
    """The frames of a user's file (NetCDF, zarr, GRIB, a folder or glob) on the run's grid, checked."""

    def __init__(self, paths, ds, *, var: list[str] | None, level: float | None):
        from svqbench.data.netcdf import _inputs, _Source
        if not var:
            raise UserError(f"--input needs --var NAME for each of the run's channels ({', '.join(ds.channels)})")
        self.src = _Source(_inputs([paths], flag="--input"), list(var), level)
        try:
            self._check(ds)
        except BaseException:
            self.src.close()
            raise

    def _check(self, ds) -> None:
        src, where = self.src, self.src.where
        if src.channels != ds.channels:
            raise UserError(f"{where}: variable(s) {', '.join(src.channels)} differ from the run's channel(s) "
                            f"{', '.join(ds.channels)}; pass --var (and --level) for each of them")
        if tuple(src.grid) != tuple(ds.grid):
            raise UserError(f"{where}: grid {src.grid[0]} x {src.grid[1]} ({src.dims[0]}, {src.dims[1]}) differs from "
                            f"the run's {ds.grid[0]} x {ds.grid[1]}")
        grid = ds.meta.get("grid") or {}
        lat = grid.get("lat")
        # rows stored north to south where the run's go south to north (or back) are flipped, as prepare does
        self.flip = bool(lat is not None and src.lat is not None and src.lat.ndim == 1 and len(lat) > 1
                         and src.lat.shape == (len(lat),) and np.allclose(src.lat[::-1], lat, atol=1e-4)
                         and not np.allclose(src.lat, lat, atol=1e-4))
        for name, theirs, ours in (("latitudes", src.lat, grid.get("lat", grid.get("lat2d"))),
                                   ("longitudes", src.lon, grid.get("lon", grid.get("lon2d")))):
            if ours is None:
                continue
            ours = np.asarray(ours, dtype=np.float64)
            if self.flip and name == "latitudes":
                theirs = theirs[::-1]
            if theirs is None or theirs.shape != ours.shape or not np.allclose(theirs, ours, atol=1e-4):
                got = "none" if theirs is None else f"{theirs.min():g} .. {theirs.max():g}, shape {theirs.shape}"
                raise UserError(f"{where}: {name} differ from the run's grid ({got} vs {ours.min():g} .. "
                                f"{ours.max():g}, shape {ours.shape}); regrid the file to the run's grid")
        for c, (theirs, ours) in enumerate(zip(src.units, ds.meta.get("units") or [])):
            if ours and _norm_units(theirs) != _norm_units(ours):
                raise UserError(f"{where}: {src.var[c]} is in units {theirs or 'none'!r} but the run was trained in "
                                f"{ours!r}; convert it first")
        if len(src.dates) < ds.in_len:
            raise UserError(f"{where}: {len(src.dates)} time step(s), fewer than the run's {ds.in_len} input frames")
        self.step = cf.infer_step(src.dates, src.describe, where) if len(src.dates) > 1 else None
        want = parse_step(ds.meta.get("step"))
        if self.step is not None and want is not None and not _same_step(self.step, want):
            raise UserError(f"{where}: time step {self.step} differs from the run's {want}")
        self.step = self.step or want
        self.mask, self.mean = ds.mask, ds.mean

    def read(self, a: int, b: int) -> np.ndarray:
        """Frames a .. b (physical units); masked cells filled as the run's data fills them."""
        src = self.src
        block = src.read(a, b)
        if self.flip:
            block = np.ascontiguousarray(block[:, :, ::-1])
        bad = ~np.isfinite(block)
        if self.mask is not None:
            bad &= self.mask
        if bad.any():
            i = int(np.argmax(bad.reshape(len(block), -1).any(axis=1)))
            kind = "infinite" if np.isinf(block[i]).any() else "NaN"
            where = "" if self.mask is None else " in cells the run's data has values for"
            raise UserError(f"{src.where}: {kind} values at {src.describe(a + i)}{where} "
                            f"({int(bad[i].sum())} cell(s)); fill them or cut those times out of the file")
        if self.mask is not None:
            block[:, :, ~self.mask] = self.mean[:, None]
        return block

    def close(self) -> None:
        self.src.close()


# ---- predict ----------------------------------------------------------------------------------

def rollout(forecast, x: np.ndarray, lead_steps: int, *, mask: np.ndarray | None = None) -> np.ndarray:
    """(B, lead_steps, C, H, W) forecasts of `x` (B, in_len, C, H, W), physical units, by feeding the
    model's own output back as input (OpenSTL's weather roll-out): each pass forecasts out_len frames
    from the newest in_len frames (inputs and forecasts). `forecast` maps (B, in_len, ...) to
    (B, out_len, ...) (LoadedRun.forecast). A forecast fed back keeps the input's values in the cells
    `mask` marks invalid, the fill the model was trained on. lead_steps <= out_len is one pass."""
    in_len = x.shape[1]
    frames, parts, made = np.asarray(x, dtype=np.float32), [], 0
    while made < lead_steps:
        pred = forecast(frames[:, -in_len:])
        parts.append(pred)
        made += pred.shape[1]
        if made < lead_steps:
            fed = pred.copy()
            if mask is not None:
                fed[..., ~mask] = frames[:, -1:][..., ~mask]
            frames = np.concatenate([frames[:, -in_len:], fed], axis=1)
    return np.concatenate(parts, axis=1)[:, :lead_steps]


def predict_run(run: str | Path, *, split: str | None = None, fmt: str | None = None, out: Path | None = None,
                input: str | Path | None = None, var: list[str] | None = None, level: float | None = None,
                strips: int = 0, device: str = "cpu", results_dir: str | Path | None = "results",
                data_dir: str | Path | None = None, lead: int | None = None,
                members: list[str] | None = None) -> tuple[Path, dict]:
    """Write a run's forecasts of a split (default test) or of new input; returns (path, summary).
    `lead`: forecast that many steps (default the run's out_len), rolling out past out_len.
    `members`: more runs of the same recipe (other seeds): a seed ensemble on a `member` dim, the run first."""
    from svqbench.data.batches import split_batches
    from svqbench.evaluate import EVAL_SPLITS, dataset_kind
    from svqbench.models import describe_model
    from svqbench.runs import load_run

    if input is not None and split is not None:
        raise UserError("--split chooses windows of the run's dataset; drop it with --input")
    if input is None and (var or level is not None):
        raise UserError("--var and --level describe an --input file; give --input FILE")
    split = None if input is not None else (split or "test")
    if split is not None and split not in EVAL_SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(EVAL_SPLITS)}")
    if strips < 0:
        raise UserError(f"--strips must be >= 0, got {strips}")
    if lead is not None and lead < 1:
        raise UserError(f"--lead must be >= 1, got {lead}")
    loaded = load_run(run, results_dir=results_dir, data_dir=data_dir, device=device)
    if loaded.saved is None:
        raise UserError(f"{run} is an export; predict needs the run folder (its dataset gives the coordinates)")
    ds, cfg = loaded.dataset, loaded.config
    kind = dataset_kind(ds)
    lead_steps = lead or ds.out_len
    ensemble = [loaded] + [_member(m, loaded, results_dir=results_dir, data_dir=data_dir, device=device)
                           for m in members or []]
    member_ids = [r.run_id for r in ensemble] if members else None  # None: one run, no member axis
    if len({r.run_id for r in ensemble}) < len(ensemble):
        raise UserError(f"--members repeats a run: {', '.join(r.run_id for r in ensemble)}")
    if input is not None and kind != "weather":
        raise UserError(f"--input reads gridded weather files; run {loaded.run_id} is a {kind} run")
    stem = f"forecast_{split}" if split else f"forecast_{Path(str(input)).stem or 'input'}"
    fmt, path = output_path(fmt=fmt, out=None if out is None else Path(out), kind=kind,
                            default=loaded.saved.dir / stem)
    frames = None
    if input is not None:
        frames = InputFrames(input, ds, var=var, level=level)
    try:
        step = frames.step if frames else parse_step(ds.meta.get("step"))
        if frames:
            n = len(frames.src.dates) - ds.in_len + 1
            times, starts = _input_times(frames, ds.in_len, lead_steps), None
        else:
            starts = np.asarray(ds.splits[split])
            n = len(starts)
            times = (split_times(ds, starts, lead_steps) if kind == "weather"
                     else ForecastTimes(starts + ds.in_len - 1, None))
        attrs = {"Conventions": "CF-1.8",
                 "title": f"svqbench forecast of {cfg.dataset}, {'the ' + split + ' split' if split else 'new input'}",
                 "source": f"svqbench {__version__}: {describe_model(cfg)} with quantizer {cfg.quantizer}, run "
                           f"{loaded.run_id}, best-by-validation weights, norm {cfg.norm}",
                 "svqbench_run": loaded.run_id, "svqbench_dataset": cfg.dataset,
                 **({"svqbench_members": json.dumps(member_ids),
                     "svqbench_ensemble": "seed ensemble: the same recipe trained with different seeds, one run a "
                                          "member"} if members else {}),
                 "svqbench_split": split or "", "svqbench_input": str(input or ""),
                 "svqbench_channels": json.dumps([[v.name, lev] for v in variables(ds, cfg.dataset)
                                                  for lev in (v.levels or [None])]),
                 "references": "Chen et al., arXiv 2312.03406; WeatherBench 2 forecast layout"}
        if ds.mask is not None:
            attrs["comment"] = "cells the run's mask marks invalid (e.g. land in a sea-surface field) hold NaN (_FillValue)"
        if lead_steps > ds.out_len:
            attrs["svqbench_rollout"] = (f"leads past {ds.out_len} steps are autoregressive: the model's own forecasts "
                                         f"are fed back as input")
        # (sample, [member,] lead, channel, y, x): the array the .npy sink holds
        shape = (int(n), *((len(ensemble),) if members else ()), lead_steps, len(ds.channels), *ds.grid)
        summary = {"path": str(path), "format": fmt, "forecasts": int(n), "lead_steps": lead_steps,
                   "split": split, "input": str(input) if input else None, "run_id": loaded.run_id,
                   "members": member_ids}
        opener = _replacing_store if fmt == "zarr" else replacing
        samples = []
        with opener(path) as tmp, _netcdf_errors(path):
            if fmt == "npy":
                sink = _Npy(tmp, shape)
            else:
                base = skeleton(ds, dataset=cfg.dataset, times=times, step=step, window_start=starts, attrs=attrs,
                                members=member_ids)
                sink = (_NetCDF if fmt == "netcdf" else _Zarr)(tmp, base, ds, cfg.dataset)
            try:
                row = 0
                if frames is None:
                    batches = ((b.x, b.y) for b in split_batches(ds, split, cfg.batch_size))
                else:
                    batches = _input_windows(frames, ds.in_len, n, cfg.batch_size)
                for x, y in batches:
                    preds = [rollout(lambda v, r=r: r.forecast(v, batch_size=len(v)), x, lead_steps, mask=ds.mask)
                             for r in ensemble]
                    pred = np.stack(preds, axis=1) if members else preds[0]
                    if ds.mask is not None:  # no forecast where the run has no data (land in an SST field)
                        pred[..., ~ds.mask] = np.nan
                    sink.write(row, pred)
                    for i in range(max(0, min(strips - row, len(x)))):
                        samples.append((row + i, x[i], None if y is None else y[i], preds[0][i]))
                    row += len(x)
            finally:
                sink.close()
        if fmt == "npy":
            write_json(path.with_suffix(".json"), {
                "format": "svqbench-forecast-npy-1", "array": path.name,
                "axes": ["sample", *(["member"] if members else []), "lead", "channel", "y", "x"],
                "shape": list(shape), "units": ds.meta.get("units"),
                "members": member_ids,
                "channels": ds.channels, "step": str(step) if step else ds.meta.get("step"),
                "init_time": times.labels(), "calendar": times.calendar,
                "masked_cells": "NaN" if ds.mask is not None else None,
                "window_start": None if starts is None else starts.tolist(),
                **{k: attrs[k] for k in ("svqbench_run", "svqbench_dataset", "svqbench_split", "svqbench_input")}})
        strip_paths = [_strip(path.with_name(f"{path.stem}_strips") / f"sample_{i:05d}.png", x=x, y=y, pred=p, ds=ds,
                              title=f"{loaded.run_id}: {split or 'input'} sample {i}") for i, x, y, p in samples]
        summary["strips"] = [str(p) for p in strip_paths]
        return path, summary
    finally:
        if frames is not None:
            frames.close()


def _member(run: str, first, *, results_dir, data_dir, device: str):
    """A run of a seed ensemble: the same recipe as `first` (every setting but the seed) on the same data."""
    from svqbench.runs import load_run
    other = load_run(run, results_dir=results_dir, data_dir=data_dir, device=device)
    if other.saved is None:
        raise UserError(f"--members {run} is an export; give run folders")
    mine, theirs = first.config.to_dict(), other.config.to_dict()
    differ = [k for k in sorted(set(mine) | set(theirs)) if k != "seed" and mine.get(k) != theirs.get(k)]
    if differ:
        k = differ[0]
        raise UserError(f"--members {other.run_id} is not the recipe of {first.run_id}: {k} {theirs.get(k)!r} vs "
                        f"{mine.get(k)!r}; a seed ensemble differs only in --seed")
    if other.dataset.meta.get("digest") != first.dataset.meta.get("digest"):
        raise UserError(f"--members {other.run_id} was trained on other data than {first.run_id} (dataset digest)")
    return other


@contextlib.contextmanager
def _netcdf_errors(path: Path):
    """The netCDF library reports a failed write (a full disk among others) as RuntimeError("NetCDF: HDF
    error"), not as an OSError: one line naming the output, and the replacing writer keeps the old file."""
    try:
        yield
    except RuntimeError as e:
        if not str(e).startswith("NetCDF:"):
            raise
        raise CannotWrite(path, f"the netCDF library failed ({e}); is the disk full?") from None


def _input_windows(frames: InputFrames, in_len: int, n: int, batch_size: int):
    """Every window of in_len consecutive input frames, in batches (truth unknown: None)."""
    for a in range(0, n, batch_size):
        b = min(n, a + batch_size)
        block = frames.read(a, b + in_len - 1)
        yield np.stack([block[i: i + in_len] for i in range(b - a)]), None


def _strip(path: Path, *, x, y, pred, ds, title: str) -> Path:
    """One PNG: the last input frame, then the truth (when known) and the forecast of each lead time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lo, hi = ds.meta.get("value_range", (None, None))
    rows = [("truth", y), ("forecast", pred)] if y is not None else [("forecast", pred)]
    rgb = len(ds.channels) == 3
    panels = [(f"{name} {ds.channels[c]}" if not rgb else name, frames, c)
              for name, frames in rows for c in ([None] if rgb else range(len(ds.channels)))]
    cols = pred.shape[0] + 1
    fig, axes = plt.subplots(len(panels), cols, figsize=(1.3 * cols, 1.4 * len(panels)), squeeze=False)
    for r, (name, frames, c) in enumerate(panels):
        for j in range(cols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j > len(frames):  # a roll-out past the window: no truth frame for this lead
                ax.axis("off")
                continue
            frame = x[-1] if j == 0 else frames[j - 1]
            if j == 0 and r > 0:  # the input is shown once; the row's name takes its place
                ax.axis("off")
                ax.text(1.0, 0.5, name, ha="right", va="center", fontsize=7, transform=ax.transAxes)
                continue
            if rgb:
                img = np.moveaxis(frame, 0, -1)
                ax.imshow(np.clip((img - (lo or 0)) / ((hi or 1) - (lo or 0)), 0, 1))
            else:  # one colour scale per channel for input, truth and forecast
                both = [x[-1, c], pred[:, c]] + ([] if y is None else [y[:, c]])
                vmin = lo if lo is not None else min(float(a.min()) for a in both)
                vmax = hi if hi is not None else max(float(a.max()) for a in both)
                ax.imshow(frame[c], cmap="viridis", vmin=vmin, vmax=vmax,
                          origin="lower" if ds.lat is not None else "upper")
            if r == 0:
                ax.set_title("last input" if j == 0 else f"+{j}", fontsize=7)
                if j == 0:
                    ax.set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=8)
    return save_figure(path, fig, dpi=90, bbox_inches="tight")


# ---- reading a forecast back and scoring it against the dataset's truth ------------------------

def read_forecast(path: str | Path) -> tuple[np.ndarray, dict]:
    """(forecasts (N, T, C, H, W) float32 in the run's channel order, attributes) of a file `predict` wrote."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.suffix == ".npy":
        side = path.with_suffix(".json")
        if not side.is_file():
            raise UserError(f"{path} has no {side.name} beside it; it was not written by svqbench predict")
        from svqbench.runs import read_json
        sidecar = read_json(side)
        if sidecar.get("members"):
            raise UserError(f"{path} is an ensemble (a member axis); write it as NetCDF and score it with "
                            f"`svqbench score`")
        return np.load(path, mmap_mode="r"), sidecar
    import xarray as xr
    try:
        opened = xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path)
    except Exception as e:  # backends raise many types for foreign files
        raise UserError(f"{path} cannot be read as a forecast ({type(e).__name__}: {e})") from None
    with opened as f:
        if "svqbench_channels" not in f.attrs:
            raise UserError(f"{path} was not written by svqbench predict (no svqbench_channels attribute)")
        if "member" in f.dims:
            raise UserError(f"{path} is an ensemble (member dim); score it with `svqbench score {path} --dataset "
                            f"{f.attrs.get('svqbench_dataset', 'NAME')} --name NAME`")
        parts = []
        for name, level in json.loads(f.attrs["svqbench_channels"]):
            da = f[name] if level is None else f[name].sel(level=level)
            parts.append(da.values)
        attrs = dict(f.attrs)
        if "window_start" in f.coords:
            attrs["window_start"] = f["window_start"].values.tolist()
    return np.stack(parts, axis=2).astype(np.float32, copy=False), attrs


def score_forecast(path: str | Path, run: str | Path, *, results_dir: str | Path | None = "results",
                   data_dir: str | Path | None = None) -> dict:
    """Metrics of a forecast file of a split against the truth of the run's dataset, with the same
    accumulators `evaluate` uses (so a `predict` of the test split reproduces metrics.json)."""
    import torch

    from svqbench.data.batches import read_batch
    from svqbench.evaluate import climatology_for, dataset_kind, make_scorer, regions_for, target_climatology
    from svqbench.runs import open_run
    pred, attrs = read_forecast(path)
    saved = open_run(run, results_dir=results_dir, data_dir=data_dir)
    split = attrs.get("svqbench_split")
    if attrs.get("svqbench_run") != saved.run_id:
        raise UserError(f"{path} holds forecasts of run {attrs.get('svqbench_run')!r}, not {saved.run_id!r}")
    if not split or attrs.get("window_start") is None:
        raise UserError(f"{path} forecasts new input, which has no truth in the dataset; score split forecasts only")
    ds = saved.dataset()
    starts = np.asarray(attrs["window_start"], dtype=np.int64)
    positions = np.searchsorted(ds.splits[split], starts)
    found = ds.splits[split][np.minimum(positions, len(ds.splits[split]) - 1)]
    if len(starts) != len(pred) or not np.array_equal(found, starts):
        raise UserError(f"{path}: its windows are not windows of the {split} split of {ds.path}")
    cfg = saved.config  # the climatology (ACC) and regions the run was scored with, as `evaluate` uses them
    clim = climatology_for(ds, cfg.climatology) if dataset_kind(ds) == "weather" else None
    scorer = make_scorer(ds, regions=regions_for(ds, cfg.regions)[0])
    for a in range(0, len(pred), 64):
        truth = np.asarray(read_batch(ds, split, positions[a: a + 64]).y)
        values = np.array(pred[a: a + 64])
        if ds.mask is not None:  # masked cells are NaN in the file and count for nothing in the metrics
            values[..., ~ds.mask] = truth[..., ~ds.mask]
        seasonal = None if clim is None or clim.kind == "static" else target_climatology(clim, ds, starts[a: a + 64])
        scorer.update(torch.from_numpy(values), torch.from_numpy(truth), seasonal)
    return scorer.result()
