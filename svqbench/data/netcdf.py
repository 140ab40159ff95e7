"""`netcdf`: any gridded NetCDF file or zarr store a researcher brings, one or more variables.

    svqbench prepare netcdf --from era5_t850.nc --var t --level 850 --name era5-t850 \\
        --time 1990-01-01:2020-12-31 --years 1990-2012,2013-2016,2017-2020 --in-len 12 --out-len 12

Dims are found by name: time (`time`, `valid_time`), latitude (`lat`, `latitude`, `y`, `rlat`),
longitude (`lon`, `longitude`, `x`, `rlon`); any other dim (a level) needs `--level`. The time
axis must be strictly increasing with one constant step (the first irregular step is named).
Splits: `--years TRAIN,VAL,TEST`, or by default the first 70% / next 15% / last 15% of the time
steps. Frames are converted in time chunks, so memory stays bounded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from svqbench.data.checks import parse_years
from svqbench.data.prepared import PreparedWriter
from svqbench.errors import UserError

TIME_NAMES = ("time", "valid_time", "t")
LAT_NAMES = ("lat", "latitude", "y", "rlat")
LON_NAMES = ("lon", "longitude", "x", "rlon")
_CHUNK_BYTES = 64 << 20


def _open(path: Path):
    import xarray as xr
    is_zarr = path.suffix == ".zarr" or (path.is_dir() and any((path / m).exists() for m in (".zgroup", "zarr.json")))
    if is_zarr:
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise UserError(f"{path} is a zarr store; reading it needs the `zarr` package: pip install zarr") from None
    try:
        return xr.open_zarr(path, chunks=None) if is_zarr else xr.open_dataset(path)
    except Exception as e:  # backends raise many types for truncated or foreign files
        raise UserError(f"{path}: cannot be opened as {'zarr' if is_zarr else 'NetCDF'} "
                        f"({type(e).__name__}: {e}); truncated, corrupt or another format") from None


def _dim(da, names: tuple[str, ...], what: str, where: str) -> str:
    for name in names:
        if name in da.dims:
            return name
    raise UserError(f"{where}: no {what} dimension among {da.dims}; expected one of {', '.join(names)}")


def _parse_time_range(spec: str | None) -> tuple[str | None, str | None]:
    if not spec:
        return None, None
    start, sep, end = spec.partition(":")
    if not sep:
        raise UserError(f"bad --time {spec!r}: expected START:END, e.g. 1990-01-01:2020-12-31 (either may be empty)")
    for value in (start, end):
        if value:
            try:
                np.datetime64(value)
            except ValueError:
                raise UserError(f"bad --time {spec!r}: {value!r} is not an ISO date") from None
    return start or None, end or None


def prepare(dest: Path, *, from_paths: list[Path] | None = None, var: list[str] | None = None,
            level: float | None = None, time: str | None = None, years: str | None = None,
            output_name: str | None = None, in_len: int = 12, out_len: int = 12, progress: bool = True) -> Path:
    if not from_paths or len(from_paths) != 1:
        raise UserError("netcdf needs exactly one --from FILE.nc (or a .zarr store)")
    if not var:
        raise UserError("netcdf needs --var NAME (repeat it for several channels)")
    if in_len < 1 or out_len < 1:
        raise UserError(f"--in-len and --out-len must be >= 1, got {in_len} and {out_len}")
    path = Path(from_paths[0])
    if not path.exists():
        raise UserError(f"--from {path}: no such file or store")
    name = output_name or "netcdf-" + "-".join(var)
    if not all(c.isalnum() or c in "._-" for c in name) or name[:1] in ("", ".", "-"):
        raise UserError(f"bad --name {name!r}: use letters, digits, '.', '_' and '-' (not first)")
    if name in _reserved():
        raise UserError(f"--name {name!r} is a built-in dataset; choose another name")
    dest = dest.parent / name
    start, end = _parse_time_range(time)
    ds = _open(path)
    with ds:
        arrays, channels, units = [], [], []
        for v in var:
            if v not in ds.data_vars:
                raise UserError(f"{path}: no variable {v!r} (found: {', '.join(map(str, ds.data_vars))})")
            da = ds[v]
            t, y, x = (_dim(da, TIME_NAMES, "time", str(path)), _dim(da, LAT_NAMES, "latitude", str(path)),
                       _dim(da, LON_NAMES, "longitude", str(path)))
            others = [d for d in da.dims if d not in (t, y, x)]
            if others:
                (lev,) = others if len(others) == 1 else (None,)
                if lev is None:
                    raise UserError(f"{path}: {v} has extra dims {others}; only one level dim is supported")
                values = da[lev].values
                listed = ", ".join(f"{float(x):g}" for x in values)
                if level is None:
                    raise UserError(f"{path}: {v} has a {lev} dimension ({listed}); choose one with --level")
                if not np.isclose(values.astype(float), level).any():
                    raise UserError(f"{path}: --level {level:g} not in {v}'s {lev} values ({listed})")
                da = da.isel({lev: int(np.argmax(np.isclose(values.astype(float), level)))})
            da = da.rename({t: "time", y: "lat", x: "lon"}).transpose("time", "lat", "lon")
            if start or end:
                try:
                    da = da.sel(time=slice(start, end))
                except (KeyError, ValueError, TypeError) as e:
                    raise UserError(f"{path}: cannot cut --time {time!r} ({e}); is the time axis sorted?") from None
            arrays.append(da)
            channels.append(f"{v}{level:g}" if others else v)
            units.append(str(da.attrs.get("units", "")))
        if level is not None and not any(c != v for c, v in zip(channels, var)):
            raise UserError(f"{path}: {', '.join(var)} has no level dimension; drop --level")
        first = arrays[0]
        for other, v in zip(arrays[1:], var[1:]):
            if other.shape != first.shape or not np.array_equal(other["time"].values, first["time"].values):
                raise UserError(f"{path}: {v} does not share {var[0]}'s time axis and grid")
        times = first["time"].values
        if not np.issubdtype(times.dtype, np.datetime64):
            raise UserError(f"{path}: time values are {times.dtype}, not dates; add CF units or decode them")
        n = len(times)
        if n < in_len + out_len:
            raise UserError(f"{path}: {n} time steps after --time, fewer than one window of {in_len + out_len}")
        steps = np.diff(times)
        step = steps[0]
        if step <= np.timedelta64(0) or (steps != step).any():
            i = int(np.argmax(steps != step)) if (steps != step).any() else 0
            raise UserError(f"{path}: time step changes between {times[i]} and {times[i + 1]} "
                            f"({steps[i]} vs {step}); the time axis must be regular (fill or cut the gap with --time)")
        for da, v in zip(arrays, var):
            if not np.issubdtype(da.dtype, np.floating):
                raise UserError(f"{path}: {v} has dtype {da.dtype}, expected floating point")
        bounds = _split_bounds(times, years, path)
        length = in_len + out_len
        windows = {s: np.arange(a, max(a, b - length + 1), dtype=np.int64) for s, (a, b) in bounds.items()}
        h, w = first.shape[1:]
        chunk = max(1, _CHUNK_BYTES // (h * w * 4 * len(arrays)))
        with PreparedWriter(dest, n, len(arrays), (h, w)) as writer:
            for i in range(0, n, chunk):
                block = np.stack([da.isel(time=slice(i, i + chunk)).values.astype(np.float32) for da in arrays], 1)
                if not np.isfinite(block).all():
                    j = int(np.argmax(~np.isfinite(block).reshape(len(block), -1).all(axis=1)))
                    raise UserError(f"{path}: NaN or infinite values at {times[i + j]}; fill them or cut them "
                                    f"out with --time")
                writer.write(i, block, source=str(path))
            lat, lon = first["lat"].values, first["lon"].values
            from svqbench.data.download import sha256
            meta = dict(name=name, kind="weather", description=f"{', '.join(channels)} from {path.name}",
                        channels=channels, units=units, in_len=in_len, out_len=out_len,
                        step=f"{step.astype('timedelta64[m]').astype(int)} minutes",
                        grid={"lat": lat.astype(float).tolist(), "lon": lon.astype(float).tolist()}
                        if lat.ndim == 1 and lon.ndim == 1 else {"height": h, "width": w},
                        times={"first": str(times[0]), "last": str(times[-1]), "steps": n},
                        splits={s: {"first": str(times[a]), "last": str(times[b - 1])} for s, (a, b) in bounds.items()},
                        sources=[{"file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
                                 if path.is_file() else {"file": str(path)}])
            return writer.finish(windows, meta)


def _split_bounds(times: np.ndarray, years: str | None, path: Path) -> dict[str, tuple[int, int]]:
    n = len(times)
    if not years:
        a, b = int(n * 0.7), int(n * 0.85)
        return {"train": (0, a), "val": (a, b), "test": (b, n)}
    spec = parse_years(years, {})
    year_of = times.astype("datetime64[Y]").astype(int) + 1970
    out = {}
    for split, (first, last) in spec.items():
        idx = np.flatnonzero((year_of >= first) & (year_of <= last))
        missing = sorted(set(range(first, last + 1)) - set(year_of[idx].tolist()))
        if missing:
            raise UserError(f"{path}: {split} year {missing[0]} is missing (file covers {year_of[0]}-{year_of[-1]})")
        out[split] = (int(idx[0]), int(idx[-1]) + 1)
    return out


def _reserved() -> set[str]:
    from svqbench.data import _CONVERTERS, _SOURCES
    return set(_SOURCES) | set(_CONVERTERS)
