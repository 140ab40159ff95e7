"""WeatherBench-S (single variable, hourly, 12 -> 12) and WeatherBench-M (12 channels, 6-hourly, 4 -> 4).

Sources (`--source`):
  wb1  WeatherBench 1 NetCDF at 5.625 degrees, `<dir>/<dir>_<year>_5.625deg.nc`, hourly, dims
       (time, [level,] lat, lon). From `--from PATH` (zips, folders of .nc, single files) or
       downloaded from the WeatherBench 1 URL template (`--url`, `{dir}` is the variable folder).
  wb2  the WeatherBench 2 ERA5 zarr store (6-hourly, conservatively regridded to 64 x 32), or a
       local copy with `--from`; its long names and latitude/longitude dims are mapped onto the
       WeatherBench 1 layout. WeatherBench-S from wb2 is therefore 6-hourly (12 steps = 72 h).

Every file is validated before its frames are written: grid and coordinates, a full year at the
expected time step, the requested level, dtype, NaNs and plausible values. Frames are converted
one year at a time (all its channels) into the prepared file, so memory stays bounded.
Windows: every window of in_len + out_len consecutive steps lying inside one split's years
(stride one step, as OpenSTL trains); statistics come from the train years only.
WeatherBench-M is subsampled once, from hourly to 6-hourly (the reference loader did it twice).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svqbench.config import PAPER_BASE, PAPER_T2M, scales
from svqbench.data import DatasetSpec
from svqbench.data.checks import WB_LAT, WB_LON, check_grid, check_times, check_values, parse_years, unreadable
from svqbench.data.prepared import PreparedWriter
from svqbench.errors import UserError
from svqbench.models import ForecastShape

WB1_URL = "https://dataserv.ub.tum.de/s/m1524895/download?path=%2F5.625deg%2F{dir}&files={dir}_5.625deg.zip"
WB2_STORE = "gs://weatherbench2/datasets/era5/1959-2023_01_10-6h-64x32_equiangular_conservative.zarr"


@dataclass(frozen=True)
class Variable:
    wb1_dir: str            # WeatherBench 1 folder and file prefix
    wb1_name: str           # variable name inside the WeatherBench 1 files
    wb2_name: str           # variable name in the WeatherBench 2 zarr store
    units: str
    plausible: tuple[float, float]


VARIABLES = {
    "t2m": Variable("2m_temperature", "t2m", "2m_temperature", "K", (170.0, 340.0)),
    "r": Variable("relative_humidity", "r", "relative_humidity", "%", (-10.0, 200.0)),
    "u10": Variable("10m_u_component_of_wind", "u10", "10m_u_component_of_wind", "m s-1", (-80.0, 80.0)),
    "v10": Variable("10m_v_component_of_wind", "v10", "10m_v_component_of_wind", "m s-1", (-80.0, 80.0)),
    "tcc": Variable("total_cloud_cover", "tcc", "total_cloud_cover", "(0 - 1)", (-0.01, 1.01)),
    "t": Variable("temperature", "t", "temperature", "K", (150.0, 350.0)),
    "u": Variable("u_component_of_wind", "u", "u_component_of_wind", "m s-1", (-150.0, 150.0)),
    "v": Variable("v_component_of_wind", "v", "v_component_of_wind", "m s-1", (-150.0, 150.0)),
}


@dataclass(frozen=True)
class Task:
    description: str
    fields: tuple[tuple[str, tuple[int, ...] | None], ...]   # (variable, pressure levels in hPa or None)
    step_hours: int
    in_len: int
    out_len: int
    years: dict[str, tuple[int, int]]

    @property
    def channels(self) -> list[str]:
        return [f"{v}{lev}" if lev else v for v, levels in self.fields for lev in (levels or (None,))]

    @property
    def units(self) -> list[str]:
        return [VARIABLES[v].units for v, levels in self.fields for _ in (levels or (None,))]


_S_YEARS = {"train": (2010, 2015), "val": (2016, 2016), "test": (2017, 2018)}
TASKS = {
    "weatherbench-s-t2m": Task("2 m temperature", (("t2m", None),), 1, 12, 12, _S_YEARS),
    "weatherbench-s-r": Task("relative humidity at 850 hPa", (("r", (850,)),), 1, 12, 12, _S_YEARS),
    "weatherbench-s-uv10": Task("10 m wind, u and v components", (("u10", None), ("v10", None)), 1, 12, 12,
                                _S_YEARS),
    "weatherbench-s-tcc": Task("total cloud cover", (("tcc", None),), 1, 12, 12, _S_YEARS),
    "weatherbench-m": Task("r, t, u, v at 150/500/850 hPa", tuple((v, (150, 500, 850)) for v in ("r", "t", "u", "v")),
                           6, 4, 4, {"train": (1979, 2015), "val": (2016, 2016), "test": (2017, 2018)}),
}
S_NAMES = [n for n in TASKS if n.startswith("weatherbench-s-")]


def raw_dir(dest: Path) -> Path:
    """Downloads and extracted files live beside the prepared datasets, shared between tasks."""
    return Path(dest).parent / ".raw" / "weatherbench1"


# --------------------------------------------------------------------------------------------
# Readers: (variable, year) -> validated float32 array (time, levels, lat, lon) at the task step


class _WB1Files:
    def __init__(self, files: dict[tuple[str, int], Path], step_hours: int):
        self.files, self.step_hours = files, step_hours

    def sources(self) -> list[dict]:
        from svqbench.data.download import sha256
        return [{"file": f"{p.parent.name}/{p.name}", "bytes": p.stat().st_size, "sha256": sha256(p)}
                for p in sorted(set(self.files.values()))]

    def _open(self, var: str, levels: tuple[int, ...] | None, year: int):
        """The file's dataset and variable, after the structural checks (no values read)."""
        import xarray as xr
        v = VARIABLES[var]
        path = self.files[(v.wb1_dir, year)]
        try:
            ds = xr.open_dataset(path)
        except Exception as e:  # netCDF4 / h5 raise many types for truncated or foreign files
            raise (unreadable(path, e) or UserError(f"{path}: cannot be read as NetCDF ({type(e).__name__}: {e}); "
                   f"the file is truncated or corrupt, delete it and fetch it again")) from None
        try:
            if v.wb1_name not in ds:
                raise UserError(f"{path}: no variable {v.wb1_name!r} (found: {', '.join(map(str, ds.data_vars))})")
            da = ds[v.wb1_name]
            if "lat" not in da.dims or "lon" not in da.dims or "time" not in da.dims:
                raise UserError(f"{path}: {v.wb1_name} has dims {da.dims}, expected (time, [level,] lat, lon)")
            check_grid(*_grid(da), str(path))
            check_times(da["time"].values, year=year, step_hours=1, where=str(path))
            _check_levels(da, levels, str(path))
        except BaseException:
            ds.close()
            raise
        return ds, da

    def check(self, var: str, levels: tuple[int, ...] | None, year: int) -> None:
        self._open(var, levels, year)[0].close()

    def read(self, var: str, levels: tuple[int, ...] | None, year: int) -> np.ndarray:
        v = VARIABLES[var]
        path = self.files[(v.wb1_dir, year)]
        ds, da = self._open(var, levels, year)
        with ds:
            if self.step_hours != 1:
                da = da.isel(time=slice(None, None, self.step_hours))  # 00, 06, 12, 18 UTC: one subsampling
            try:
                values = _read_levels(da, levels)
            except Exception as e:
                raise UserError(f"{path}: reading {v.wb1_name} failed ({type(e).__name__}: {e}); "
                                f"the file is truncated or corrupt") from None
        check_values(values, where=str(path), name=v.wb1_name, units=v.units, plausible=v.plausible)
        return values.astype(np.float32, copy=False)


class _WB2Store:
    def __init__(self, store: str, step_hours: int):
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise UserError("the WeatherBench 2 source needs the `zarr` package; pip install zarr") from None
        import xarray as xr
        if store.startswith("gs://"):
            try:
                import gcsfs  # noqa: F401
            except ImportError:
                raise UserError(f"reading {store} needs `gcsfs`; pip install gcsfs, or copy the store "
                                f"locally and pass --from PATH.zarr") from None
        try:
            ds = xr.open_zarr(store, chunks=None, **({"storage_options": {"token": "anon"}}
                                                      if store.startswith("gs://") else {}))
        except Exception as e:
            raise UserError(f"{store}: cannot open as a zarr store ({type(e).__name__}: {e})") from None
        ds = ds.rename({k: n for k, n in (("latitude", "lat"), ("longitude", "lon")) if k in ds.dims})
        if "lat" not in ds.dims or "lon" not in ds.dims or "time" not in ds.dims:
            raise UserError(f"{store}: dims {tuple(ds.dims)}, expected time, latitude, longitude")
        self.ds, self.store = ds, store
        self.native_step = 6
        self.step = max(1, step_hours // self.native_step)  # records to advance per task step
        check_grid(*_grid(self.ds), store)

    def sources(self) -> list[dict]:
        return [{"file": self.store, "note": "WeatherBench 2 ERA5, 6-hourly, conservative regridding to 64 x 32"}]

    def _select(self, var: str, levels: tuple[int, ...] | None, year: int):
        v = VARIABLES[var]
        where = f"{self.store} ({v.wb2_name}, {year})"
        if v.wb2_name not in self.ds:
            raise UserError(f"{self.store}: no variable {v.wb2_name!r} (found: {', '.join(map(str, self.ds.data_vars))})")
        da = self.ds[v.wb2_name].sel(time=slice(f"{year}-01-01", f"{year}-12-31T23"))
        if da.sizes["time"] == 0:
            t = self.ds["time"].values
            raise UserError(f"{self.store}: year {year} is missing (store covers {str(t[0])[:10]} .. {str(t[-1])[:10]})")
        check_times(da["time"].values, year=year, step_hours=self.native_step, where=where)
        _check_levels(da, levels, where)
        return da, where

    def check(self, var: str, levels: tuple[int, ...] | None, year: int) -> None:
        self._select(var, levels, year)

    def read(self, var: str, levels: tuple[int, ...] | None, year: int) -> np.ndarray:
        v = VARIABLES[var]
        da, where = self._select(var, levels, year)
        if self.step > 1:
            da = da.isel(time=slice(None, None, self.step))
        values = _read_levels(da, levels)
        check_values(values, where=where, name=v.wb2_name, units=v.units, plausible=v.plausible)
        return values.astype(np.float32, copy=False)


def _grid(da) -> tuple[np.ndarray, np.ndarray]:
    """lat (south to north) and lon of a DataArray, whatever the stored latitude order."""
    return np.sort(da["lat"].values), da["lon"].values


def _check_levels(da, levels: tuple[int, ...] | None, where: str) -> None:
    if levels is None:
        if "level" in da.dims:
            raise UserError(f"{where}: unexpected level dimension for a single-level variable")
        return
    if "level" not in da.dims:
        raise UserError(f"{where}: no level dimension; expected pressure levels {list(levels)} hPa")
    have = [int(x) for x in da["level"].values]
    missing = [lev for lev in levels if lev not in have]
    if missing:
        raise UserError(f"{where}: pressure level(s) {missing} hPa missing (file has {have})")


def _read_levels(da, levels: tuple[int, ...] | None) -> np.ndarray:
    """(time, levels, lat south to north, lon) values of a checked variable.

    Only basic indexing reaches the backend (one level at a time, native dim order, no reversed
    slices), then numpy transposes and flips: lazy transposes, lists and negative steps make
    xarray fall back to zarr's coordinate indexing, which is many times slower."""
    def plain(a) -> np.ndarray:
        values = a.values.transpose([a.dims.index(d) for d in ("time", "lat", "lon")])
        lat = a["lat"].values
        return values[:, ::-1] if lat.size > 1 and lat[0] > lat[-1] else values

    if levels is None:
        return np.ascontiguousarray(plain(da)[:, None])
    have = [int(x) for x in da["level"].values]
    return np.stack([plain(da.isel(level=have.index(lev))) for lev in levels], axis=1)


# --------------------------------------------------------------------------------------------
# Locating WeatherBench 1 files


def _wb1_filename(wb1_dir: str, year: int) -> str:
    return f"{wb1_dir}_{year}_5.625deg.nc"


def _locate_wb1(task: Task, years: list[int], from_paths: list[Path] | None, url: str | None,
                cache: Path, progress: bool) -> dict[tuple[str, int], Path]:
    from svqbench.data.archive import extract
    from svqbench.data.download import fetch
    dirs = [VARIABLES[v].wb1_dir for v, _ in task.fields]
    wanted = {_wb1_filename(d, y): (d, y) for d in dirs for y in years}
    found: dict[str, Path] = {}

    def take_zip(path: Path) -> None:
        for p in extract(path, cache / "extracted", lambda base: base in wanted and base not in found):
            found[p.name] = p

    if from_paths:
        for src in map(Path, from_paths):
            if not src.exists():
                raise UserError(f"--from {src}: no such file or folder")
            if src.is_dir():
                for p in sorted(src.rglob("*.nc")):
                    if p.name in wanted:
                        found.setdefault(p.name, p)
                for p in sorted(src.rglob("*.zip")):
                    take_zip(p)
            elif src.suffix == ".zip":
                take_zip(src)
            elif src.name in wanted:
                found.setdefault(src.name, src)
        where = ", ".join(map(str, from_paths))
    else:
        template = url or WB1_URL
        if "{dir}" not in template:
            raise UserError(f"bad --url {template!r}: it must contain {{dir}} (the variable folder, e.g. 2m_temperature)")
        for d in dirs:
            if all(_wb1_filename(d, y) in found for y in years):
                continue
            cached = [cache / "extracted" / _wb1_filename(d, y) for y in years]
            if not (cache / f"{d}_5.625deg.zip").exists() and all(p.exists() for p in cached):
                found.update({p.name: p for p in cached})  # the zip was deleted after extraction
                continue  # (while it exists, extract() re-checks every file against it)
            archive = fetch(template.format(dir=d), cache / f"{d}_5.625deg.zip", progress=progress,
                            hint="the WeatherBench 1 server is reported dead since Dec 2024; try --source wb2, "
                                 "or pass local copies with --from PATH")
            take_zip(archive)
        where = template
    missing = [name for name in wanted if name not in found]
    if missing:
        d, y = wanted[missing[0]]
        raise UserError(f"year {y} of {d} is missing: no {missing[0]} in {where} "
                        f"({len(missing)} file(s) missing; this task needs the folder(s) {', '.join(dirs)}); "
                        f"pass the files or change --years")
    return {wanted[name]: path for name, path in found.items() if name in wanted}


# --------------------------------------------------------------------------------------------


def prepare_task(dest: Path, task_name: str, *, source: str = "wb1", from_paths: list[Path] | None = None,
                 years: str | None = None, url: str | None = None, progress: bool = True) -> Path:
    return _task(dest, task_name, source=source, from_paths=from_paths, years=years, url=url, progress=progress)


def _task(dest: Path, task_name: str, *, source: str, from_paths: list[Path] | None, years: str | None,
          url: str | None, progress: bool, check_only: bool = False) -> Path | None:
    """Locate and check every file of the task; then (unless `check_only`) convert it."""
    task = TASKS[task_name]
    split_years = parse_years(years, task.years)
    all_years = sorted({y for a, b in split_years.values() for y in range(a, b + 1)})
    if source == "wb1":
        if from_paths and len(from_paths) == 1 and str(from_paths[0]).rstrip("/").endswith(".zarr"):
            raise UserError(f"--from {from_paths[0]} looks like a zarr store; add --source wb2")
        reader = _WB1Files(_locate_wb1(task, all_years, from_paths, url, raw_dir(dest), progress), task.step_hours)
        step_hours, provenance = task.step_hours, "WeatherBench 1 (5.625 deg NetCDF, hourly)"
    elif source == "wb2":
        if from_paths and len(from_paths) > 1:
            raise UserError("--source wb2 reads one zarr store; pass a single --from PATH.zarr")
        if url:
            raise UserError("--url applies to --source wb1; for wb2 pass --from PATH.zarr or gs://...")
        reader = _WB2Store(str(from_paths[0]) if from_paths else WB2_STORE, task.step_hours)
        step_hours = max(task.step_hours, reader.native_step)
        provenance = "WeatherBench 2 ERA5 zarr (6-hourly, conservative regridding to 64 x 32)"
    else:
        raise UserError(f"unknown --source {source!r}; choose one of: wb1, wb2")
    per_year = {y: int(np.arange(np.datetime64(f"{y}-01-01T00", "h"), np.datetime64(f"{y + 1}-01-01T00", "h"),
                                 np.timedelta64(step_hours, "h")).size) for y in all_years}
    offsets = dict(zip(all_years, np.cumsum([0] + [per_year[y] for y in all_years])[:-1].tolist()))
    n_frames = sum(per_year.values())
    length = task.in_len + task.out_len
    windows = {}
    for split, (a, b) in split_years.items():
        first, stop = offsets[a], offsets[b] + per_year[b]
        windows[split] = np.arange(first, max(first, stop - length + 1), dtype=np.int64)
    for var, levels in task.fields:  # structure of every file first: fail in seconds, not after hours
        for year in all_years:
            reader.check(var, levels, year)
    if check_only:
        return None
    with PreparedWriter(dest, n_frames, len(task.channels), (32, 64)) as writer:
        for year in all_years:  # one year of every channel in memory at a time
            block = np.concatenate([reader.read(var, levels, year) for var, levels in task.fields], axis=1)
            if len(block) != per_year[year]:
                raise UserError(f"{year}: {len(block)} steps after subsampling, expected {per_year[year]}")
            writer.write(offsets[year], block, source=f"{task_name} {year}")
        meta = dict(
            name=dest.name, kind="weather",
            description=f"WeatherBench {task.description}, {step_hours}-hourly, {task.in_len} -> {task.out_len} steps",
            channels=task.channels, units=task.units, in_len=task.in_len, out_len=task.out_len,
            step=f"{step_hours} hours", source=source, provenance=provenance,
            grid={"lat": WB_LAT.tolist(), "lon": WB_LON.tolist(),
                  "resolution_deg": 5.625},
            times={"start": f"{all_years[0]}-01-01T00:00", "step_hours": step_hours,
                   "segments": [[f"{y}-01-01T00:00", per_year[y]] for y in all_years]},
            splits={s: {"years": list(b), "rule": f"every window of {length} steps inside these years (stride 1)"}
                    for s, b in split_years.items()},
            sources=reader.sources(),
        )
        if source == "wb2" and task.step_hours == 1:
            meta["note"] = ("WeatherBench 2 is 6-hourly: this dataset steps 6 h, so 12 -> 12 covers 72 h -> 72 h, "
                            "unlike the paper's hourly WeatherBench-S")
        return writer.finish(windows, meta)


prepare_s_t2m = functools.partial(prepare_task, task_name="weatherbench-s-t2m")
prepare_s_r = functools.partial(prepare_task, task_name="weatherbench-s-r")
prepare_s_uv10 = functools.partial(prepare_task, task_name="weatherbench-s-uv10")
prepare_s_tcc = functools.partial(prepare_task, task_name="weatherbench-s-tcc")
prepare_m = functools.partial(prepare_task, task_name="weatherbench-m")


def prepare_s_all(dest: Path, *, source: str = "wb1", from_paths: list[Path] | None = None,
                  years: str | None = None, url: str | None = None, progress: bool = True) -> list[Path]:
    """`weatherbench-s`: the four single-variable tasks, each its own prepared dataset. Every variable
    folder is found and every file checked before the first task is converted."""
    if source == "wb1" and from_paths:
        _check_s_folders(from_paths, years)
    kw = dict(source=source, from_paths=from_paths, years=years, url=url, progress=progress)
    for name in S_NAMES:
        _task(dest.parent / name, name, check_only=True, **kw)
    return [prepare_task(dest.parent / name, name, **kw) for name in S_NAMES]


def _check_s_folders(from_paths: list[Path], years: str | None) -> None:
    """Name every folder weatherbench-s needs, and all that --from lacks, before anything is converted."""
    from svqbench.data.archive import member_names
    all_years = sorted({y for a, b in parse_years(years, _S_YEARS).values() for y in range(a, b + 1)})
    dirs = list(dict.fromkeys(VARIABLES[v].wb1_dir for n in S_NAMES for v, _ in TASKS[n].fields))
    have: set[str] = set()
    for src in map(Path, from_paths):
        if not src.exists():
            raise UserError(f"--from {src}: no such file or folder")
        files = sorted(src.rglob("*")) if src.is_dir() else [src]
        for p in files:
            have.update(member_names(p) if p.suffix == ".zip" else [p.name])
    lacking = {d: [y for y in all_years if _wb1_filename(d, y) not in have] for d in dirs}
    lacking = {d: ys for d, ys in lacking.items() if ys}
    if lacking:
        listed = "; ".join(f"{d} ({'all years' if len(ys) == len(all_years) else ', '.join(map(str, ys))})"
                           for d, ys in lacking.items())
        raise UserError(f"weatherbench-s needs {len(dirs)} variable folders: {', '.join(dirs)} (each "
                        f"<dir>_<year>_5.625deg.nc for {all_years[0]}-{all_years[-1]}, as .nc files or "
                        f"<dir>_5.625deg.zip); missing in --from: {listed}; add them, or prepare single tasks "
                        f"(weatherbench-s-t2m, ...)")


def _spec(name: str, prepare, paper: dict, help: str) -> DatasetSpec:
    task = TASKS[name]
    return DatasetSpec(name, prepare, scales(paper), ForecastShape(task.in_len, task.out_len, len(task.channels), 32, 64),
                       help)


S_T2M = _spec("weatherbench-s-t2m", prepare_s_t2m, dict(PAPER_T2M, backbone="gsta"),
              "WeatherBench 5.625 deg 2 m temperature, hourly, 12 -> 12 (train 2010-15, val 2016, test 2017-18)")
S_R = _spec("weatherbench-s-r", prepare_s_r, dict(PAPER_BASE, backbone="swin", lr=1e-3, drop_path=0.2),
            "WeatherBench 5.625 deg relative humidity at 850 hPa, hourly, 12 -> 12")
S_UV10 = _spec("weatherbench-s-uv10", prepare_s_uv10, dict(PAPER_BASE, backbone="swin", lr=1e-3, drop_path=0.2),
               "WeatherBench 5.625 deg 10 m wind (u, v), hourly, 12 -> 12")
S_TCC = _spec("weatherbench-s-tcc", prepare_s_tcc, dict(PAPER_BASE, backbone="gsta", lr=1e-2),
              "WeatherBench 5.625 deg total cloud cover, hourly, 12 -> 12")
M = _spec("weatherbench-m", prepare_m, dict(PAPER_BASE, backbone="moganet", lr=5e-3),
          "WeatherBench 5.625 deg r, t, u, v at 150/500/850 hPa (12 channels), 6-hourly, 4 -> 4 (train 1979-2015)")
