"""`netcdf`: gridded data a researcher brings: NetCDF (classic or HDF5), zarr or GRIB, one or many files.

    svqbench prepare netcdf --from era5_t850.nc --var t --level 850 --name era5-t850 \\
        --time 1990-01-01:2020-12-31 --splits 1990:2012,2013:2016,2017:2020 --in-len 12 --out-len 12
    svqbench prepare netcdf --from 'sst/*.nc' --var sst --resample monthly --coarsen 2 --splits 0.7,0.15,0.15

Inputs: `--from` a file, a zarr store, a folder (its .nc/.grib/.zarr entries) or a quoted glob,
repeatable; files are ordered by their first time and must join into one regular time axis.
The CF conventions understood (axes from attributes then names, cftime calendars, steps in the
data's own unit, 2-D latitude of rotated/curvilinear grids) are in cf.py. A level dim needs
`--level`; dims of size 1 are dropped. `--resample` averages complete calendar periods,
`--coarsen` averages blocks of cells. NaNs that stay in the same cells at every time (land in an
SST field) become a mask (mask.npy, excluded from the statistics, filled with the train mean);
NaNs that move are refused. Splits: `--splits` by fractions or date ranges, `--years`, or the
first 70% / next 15% / last 15%. Frames are converted in time chunks, so memory stays bounded.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from svqbench.data import cf
from svqbench.data.checks import classic_netcdf_size, open_readable, parse_years, unreadable
from svqbench.data.prepared import SPLITS, PreparedWriter
from svqbench.errors import UserError

NC_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
GRIB_SUFFIXES = (".grib", ".grib2", ".grb", ".grb2")
_CHUNK_BYTES = 64 << 20


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path.is_dir() and any((path / m).exists() for m in (".zgroup", "zarr.json")))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _inputs(from_paths: list, flag: str = "--from") -> list[Path]:
    """Files and stores named by `flag` (--from; predict's --input): paths, folders (their data files,
    sorted) and quoted globs."""
    out: list[Path] = []
    for spec in map(str, from_paths):
        path = Path(spec).expanduser()
        if path.is_dir() and not _is_zarr(path):
            try:
                found = sorted(q for q in path.iterdir() if not q.name.startswith(".")
                               and (q.suffix.lower() in NC_SUFFIXES + GRIB_SUFFIXES or _is_zarr(q)))
            except PermissionError as e:
                raise unreadable(path, e) from None
            if not found:
                raise UserError(f"{flag} {path}: the folder holds no .nc, .grib or .zarr inputs")
            out += found
        elif path.exists():
            out.append(path)
        elif any(c in spec for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(os.path.expanduser(spec)))
            if not found:
                raise UserError(f"{flag} {spec!r} matches no files")
            out += found
        else:
            raise UserError(f"{flag} {path}: no such file or store")
    return list(dict.fromkeys(out))


def _open(path: Path):
    """Open lazily with raw times (cf.py decodes them); every failure is one line naming the file."""
    import xarray as xr
    kw = dict(decode_times=False, decode_timedelta=False)
    if _is_zarr(path):
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise UserError(f"{path} is a zarr store; reading it needs the `zarr` package: pip install zarr") from None
        what, opener = "zarr", lambda: xr.open_zarr(path, chunks=None, **kw)
    else:
        with open_readable(path) as f:
            magic = f.read(8)
        if path.suffix.lower() in GRIB_SUFFIXES or magic[:4] == b"GRIB":
            try:
                import cfgrib  # noqa: F401
            except ImportError:
                raise UserError(f"{path} is a GRIB file; reading it needs cfgrib: pip install cfgrib") from None
            what = "GRIB"

            def opener():
                return xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""}, **kw)
        else:
            expected, size = classic_netcdf_size(path), path.stat().st_size
            if expected is not None and size < expected:
                raise UserError(f"{path}: truncated: its header describes {expected} bytes but the file has {size}; "
                                f"copy or download it again")
            what, opener = "NetCDF", lambda: xr.open_dataset(path, **kw)
    try:
        return opener()
    except Exception as e:  # backends raise many types for truncated or foreign files
        raise (unreadable(path, e) or UserError(f"{path}: cannot be opened as {what} ({type(e).__name__}: "
                                                f"{_first_line(e)}); truncated, corrupt or another format")) from None


class _Part:
    """One input: its dataset, each variable as a lazy (time, y, x) selection, and its decoded times."""

    def __init__(self, path: Path, var: list[str], level: float | None):
        self.path, self.ds = path, _open(path)
        try:
            self._select(var, level)
        except BaseException:
            self.ds.close()
            raise

    def _select(self, var: list[str], level: float | None) -> None:
        ds, path = self.ds, self.path
        missing = [v for v in var if v not in ds.data_vars]
        if missing:
            raise UserError(f"{path}: no variable {missing[0]!r} (found: {', '.join(map(str, ds.data_vars))})")
        self.arrays, self.channels, self.units = [], [], []
        for v in var:
            da, where = ds[v], f"{path}: {v}"
            axes = cf.find_axes(ds, da, where)
            t, y, x = axes["T"], axes["Y"], axes["X"]
            if t is None:
                t = cf.scalar_time(ds, da)
                if t is None:
                    raise UserError(f"{where} has no time axis among its dims {da.dims}: none has axis 'T', "
                                    f"standard_name 'time' or units 'UNIT since DATE'; add them to the time coordinate")
                da = da.expand_dims(t)
            others = [d for d in da.dims if d not in (t, y, x)]
            pick = {d: 0 for d in others if da.sizes[d] == 1}
            big = [d for d in others if da.sizes[d] > 1]
            if level is not None and not big and pick:
                # a single height (tas at 2 m) is already chosen; "no level dimension" would deny what the user sees
                lev = next(iter(pick))
                first = np.asarray(ds[lev].values).ravel()[0] if lev in ds.variables else None
                value = "" if first is None else f" (value {first:g})" if np.issubdtype(type(first), np.number) \
                    else f" (value {first})"
                raise UserError(f"{where} has a size-1 {lev} dimension{value}, nothing to choose: drop --level")
            name = v
            if len(big) > 1:
                raise UserError(f"{where} has extra dims {big} besides time, {y} and {x}; only one level dim "
                                f"can be chosen (with --level)")
            if big:
                lev = big[0]
                if lev not in ds.variables:
                    raise UserError(f"{where} has a {lev} dimension without coordinate values; --level cannot "
                                    f"choose from it")
                values = np.asarray(ds[lev].values, dtype=float)
                listed = ", ".join(f"{float(z):g}" for z in values)
                if level is None:
                    raise UserError(f"{where} has a {lev} dimension ({listed}); choose one with --level")
                if not np.isclose(values, level).any():
                    raise UserError(f"{path}: --level {level:g} not in {v}'s {lev} values ({listed})")
                pick[lev], name = int(np.argmax(np.isclose(values, level))), f"{v}{level:g}"
            da = da.isel(pick) if pick else da
            if not (np.issubdtype(da.dtype, np.floating) or np.issubdtype(da.dtype, np.integer)):
                raise UserError(f"{where} has dtype {da.dtype}, expected numbers")
            if t not in da.coords:
                raise UserError(f"{where}: the time dim {t!r} has no coordinate values")
            self.arrays.append((da, t, [da.dims.index(d) for d in (t, y, x)]))
            self.channels.append(name)
            self.units.append(str(da.attrs.get("units", "")))
        if level is not None and self.channels == list(var):
            raise UserError(f"{path}: {', '.join(var)} has no level dimension; drop --level")
        first, t, perm = self.arrays[0]
        self.shape = tuple(first.shape[i] for i in perm)
        for (da, tv, p), v in zip(self.arrays[1:], var[1:]):
            if tv != t or tuple(da.shape[i] for i in p) != self.shape:
                raise UserError(f"{path}: {v} does not share {var[0]}'s time axis and grid "
                                f"({tuple(da.shape[i] for i in p)} vs {self.shape})")
        y, x = (first.dims[i] for i in perm[1:])
        self.dims = (y, x)
        self.coords = [np.asarray(first[d].values) if d in first.coords else None for d in (y, x)]
        self.dates = cf.decode_times(first[t].values, first[t].attrs, f"{path}: {t}")
        self.lat, self.lon = cf.lat_lon(ds, first, y, x)

    def read(self, a: int, b: int, out: np.ndarray, var: list[str]) -> None:
        for c, (da, t, perm) in enumerate(self.arrays):
            try:
                values = da.isel({t: slice(a, b)}).values
            except Exception as e:  # a damaged HDF5 chunk: RuntimeError "NetCDF: HDF error"
                raise (unreadable(self.path, e) or UserError(
                    f"{self.path}: reading {var[c]} at {cf.iso(self.dates[a])} .. {cf.iso(self.dates[b - 1])} failed "
                    f"({type(e).__name__}: {_first_line(e)}); the file is corrupt (a damaged chunk?), copy or "
                    f"download it again")) from None
            out[:, c] = np.transpose(values, perm)

    def close(self) -> None:
        self.ds.close()


class _Source:
    """The requested variables of all inputs, on one time axis (inputs sorted by their first time)."""

    def __init__(self, paths: list[Path], var: list[str], level: float | None):
        self.var, self.parts = var, []
        try:
            for path in paths:
                self.parts.append(_Part(path, var, level))
            self._join()
        except BaseException:
            self.close()
            raise
        self.where = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files {paths[0].name} .. {paths[-1].name}"

    def _join(self) -> None:
        first = self.parts[0]
        for p in self.parts[1:]:
            if p.shape[1:] != first.shape[1:] or any(
                    a is not None and b is not None and (a.shape != b.shape or not np.allclose(a, b))
                    for a, b in zip(p.coords, first.coords)):
                raise UserError(f"{p.path}: grid {p.shape[1]} x {p.shape[2]} ({p.dims[0]}, {p.dims[1]}) differs "
                                f"from {first.path.name}'s {first.shape[1]} x {first.shape[2]}; all inputs need one grid")
            if p.dates[0].calendar != first.dates[0].calendar:
                raise UserError(f"{p.path}: calendar {p.dates[0].calendar} differs from {first.path.name}'s "
                                f"{first.dates[0].calendar}")
        self.parts.sort(key=lambda p: int(cf.keys(p.dates[:1])[0]))
        self.offsets = np.cumsum([0] + [len(p.dates) for p in self.parts])
        self.dates = np.concatenate([p.dates for p in self.parts])
        self.keys = cf.keys(self.dates)
        self.channels, self.units = first.channels, first.units
        self.grid = first.shape[1:]
        self.dims, self.lat, self.lon = first.dims, first.lat, first.lon

    def frame_times(self, dates: np.ndarray):
        """`dates` as CF numbers in the first input's own time units and calendar (where those encode
        them exactly): what prepare stores and forecasts write back."""
        from svqbench.data.prepared import FrameTimes
        da, t, _ = self.parts[0].arrays[0]
        attrs = da[t].attrs if t in da.coords else {}
        return FrameTimes.encode(dates, attrs.get("units"), attrs.get("calendar"))

    def part_of(self, i: int) -> _Part:
        return self.parts[int(np.searchsorted(self.offsets, i, side="right")) - 1]

    def describe(self, i: int) -> str:
        return cf.iso(self.dates[i]) + (f" ({self.part_of(i).path.name})" if len(self.parts) > 1 else "")

    def read(self, a: int, b: int) -> np.ndarray:
        """(b - a, C, H, W) float32, NaN where the file has missing values."""
        out = np.empty((b - a, len(self.var), *self.grid), dtype=np.float32)
        for part, off in zip(self.parts, self.offsets):
            lo, hi = max(a, off), min(b, off + len(part.dates))
            if lo < hi:
                part.read(lo - off, hi - off, out[lo - a: hi - a], self.var)
        return out

    def __enter__(self) -> "_Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in self.parts:
            p.close()


def _parse_time_range(spec: str | None) -> tuple[int | None, int | None]:
    if not spec:
        return None, None
    bounds = cf.parse_range(spec) if ":" in spec else None
    if bounds is None:
        raise UserError(f"bad --time {spec!r}: expected START:END with ISO dates, e.g. 1990-01-01:2020-12-31 "
                        f"(either may be empty)")
    return bounds


def _parse_coarsen(spec: str) -> tuple[int, int]:
    parts = str(spec).lower().replace(",", "x").split("x")
    try:
        fy, fx = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        fy = fx = 0
    if fy < 1 or fx < 1:
        raise UserError(f"bad --coarsen {spec!r}: expected N (N x N blocks) or NxM (rows x columns), e.g. 2 or 2x4")
    return fy, fx


def _coarsen(block: np.ndarray, valid: np.ndarray, fy: int, fx: int) -> tuple[np.ndarray, np.ndarray]:
    """Block means over the valid cells (remainder rows/columns dropped) and the coarse validity."""
    n, c, h, w = block.shape
    h2, w2 = h // fy, w // fx
    v = valid[: h2 * fy, : w2 * fx]
    b = np.where(v, block[:, :, : h2 * fy, : w2 * fx], 0).reshape(n, c, h2, fy, w2, fx)
    weight = v.reshape(h2, fy, w2, fx).sum(axis=(1, 3))
    return (b.sum(axis=(3, 5), dtype=np.float64) / np.maximum(weight, 1)).astype(np.float32), weight > 0


def _coarsen_coord(values: np.ndarray | None, f: int, fy: int, fx: int) -> np.ndarray | None:
    """Block means of a 1-D coordinate (blocks of `f`) or a 2-D one (fy x fx)."""
    if values is None:
        return None
    if values.ndim == 2:
        h2, w2 = values.shape[0] // fy, values.shape[1] // fx
        return values[: h2 * fy, : w2 * fx].reshape(h2, fy, w2, fx).mean(axis=(1, 3))
    return values[: len(values) // f * f].reshape(-1, f).mean(axis=1)


def prepare(dest: Path, *, from_paths: list[Path] | None = None, var: list[str] | None = None,
            level: float | None = None, time: str | None = None, years: str | None = None,
            splits: str | None = None, resample: str | None = None, coarsen: str | None = None,
            output_name: str | None = None, in_len: int = 12, out_len: int = 12, progress: bool = True) -> Path:
    if not from_paths:
        raise UserError("netcdf needs --from FILE.nc (repeatable; also a folder, a quoted 'dir/*.nc' glob or a "
                        ".zarr store)")
    if not var:
        raise UserError("netcdf needs --var NAME (repeat it for several channels)")
    twice = sorted({v for v in var if var.count(v) > 1})
    if twice:
        raise UserError(f"--var {twice[0]} is given twice; name each variable once (one channel each)")
    if in_len < 1 or out_len < 1:
        raise UserError(f"--in-len and --out-len must be >= 1, got {in_len} and {out_len}")
    name = output_name or "netcdf-" + "-".join(var)
    if not all(c.isalnum() or c in "._-" for c in name) or name[:1] in ("", ".", "-"):
        raise UserError(f"bad --name {name!r}: use letters, digits, '.', '_' and '-' (not first)")
    if name in _reserved():
        raise UserError(f"--name {name!r} is a built-in dataset; choose another name")
    if years and splits:
        raise UserError("--years and --splits both choose the splits; give one of them")
    dest = dest.parent / name
    start, end = _parse_time_range(time)
    target = cf.parse_resample(resample) if resample else None
    factor = _parse_coarsen(coarsen) if coarsen else None
    length = in_len + out_len
    with _Source(_inputs(from_paths), list(var), level) as src:
        where = src.where
        chosen = np.flatnonzero((src.keys >= (start or np.iinfo(np.int64).min)) &
                                (src.keys <= (end or np.iinfo(np.int64).max)))
        if not len(chosen):
            raise UserError(f"{where}: --time {time} selects no time steps (data cover {cf.iso(src.dates[0])} .. "
                            f"{cf.iso(src.dates[-1])})")
        lo, hi = int(chosen[0]), int(chosen[-1]) + 1
        dates = src.dates[lo:hi]
        step = cf.infer_step(dates, lambda i: src.describe(lo + i), where)
        if target:
            starts, stops, dates = cf.resample_plan(dates, step, target, where)
            starts, stops = starts + lo, stops + lo
        else:
            starts = np.arange(lo, hi)
            stops = starts + 1
        n = len(dates)
        if n < length:
            raise UserError(f"{where}: {n} time steps{' after --time' if time else ''}"
                            f"{' after --resample' if target else ''}, fewer than one window of {length} "
                            f"(--in-len {in_len} + --out-len {out_len})")
        bounds = _split_bounds(dates, years, splits, where)
        _check_windows(bounds, dates, length, in_len, out_len, where)
        windows = {s: np.arange(a, b - length + 1, dtype=np.int64) for s, (a, b) in bounds.items()}
        h, w = src.grid
        lat, lon = src.lat, src.lon
        if factor:
            if h // factor[0] < 1 or w // factor[1] < 1:
                raise UserError(f"--coarsen {coarsen}: blocks larger than the {h} x {w} grid")
            lat, lon = _coarsen_coord(lat, factor[0], *factor), _coarsen_coord(lon, factor[1], *factor)
            h, w = h // factor[0], w // factor[1]
        chunk = max(1, _CHUNK_BYTES // (src.grid[0] * src.grid[1] * len(var) * 8))
        valid = valid2d = None
        with PreparedWriter(dest, n, len(var), (h, w)) as writer:
            j = 0
            while j < n:
                k = min(n, max(j + 1, int(np.searchsorted(stops, starts[j] + chunk, side="right"))))
                block = src.read(int(starts[j]), int(stops[k - 1]))
                if target:
                    sums = np.add.reduceat(block.astype(np.float64), starts[j:k] - starts[j], axis=0)
                    block = (sums / (stops[j:k] - starts[j:k])[:, None, None, None]).astype(np.float32)
                if np.isinf(block).any():
                    i = int(np.argmax(np.isinf(block).reshape(len(block), -1).any(axis=1)))
                    raise UserError(f"{src.part_of(int(starts[j + i])).path}: infinite values at "
                                    f"{cf.iso(dates[j + i])}; fill them or cut them out with --time")
                finite = np.isfinite(block)
                if valid is None:
                    valid = finite[0]
                    valid2d = valid.all(axis=0)
                changed = (finite != valid).reshape(len(block), -1).any(axis=1)
                if changed.any():
                    i = int(np.argmax(changed))
                    c = int(np.argmax((finite[i] != valid).reshape(len(var), -1).any(axis=1)))
                    cells = int((finite[i, c] != valid[c]).sum())
                    raise UserError(
                        f"{src.part_of(int(starts[j + i])).path}: {var[c]} has NaNs that move: at {cf.iso(dates[j + i])} "
                        f"{cells} cell(s) differ from the NaN cells of {cf.iso(dates[0])}; only NaNs that stay in "
                        f"the same cells at every time (a land/sea mask) are masked; fill them, or cut those times "
                        f"out with --time")
                if factor:
                    block, mask = _coarsen(block, valid2d, *factor)
                else:
                    block, mask = np.where(valid2d, block, np.float32(0)), valid2d
                writer.write(j, block, source=src.part_of(int(starts[j])).path.name)
                j = k
            grid = {"height": h, "width": w, "y": src.dims[0], "x": src.dims[1]}
            for key, values in (("lat", lat), ("lon", lon)):
                if values is not None:
                    grid[key if values.ndim == 1 else key + "2d"] = values.astype(float).tolist()
            if lat is None:
                grid["latitude"] = "none: the grid has no latitude coordinate (pixels or projected metres)"
            files = [p.path for p in src.parts]
            from svqbench.data.download import sha256
            meta = dict(
                name=name, kind="weather",
                description=f"{', '.join(src.channels)} from {files[0].name}"
                            + (f" and {len(files) - 1} more file(s)" if len(files) > 1 else ""),
                channels=src.channels, units=src.units, in_len=in_len, out_len=out_len, step=str(target or step),
                grid=grid,
                times={"first": cf.iso(dates[0]), "last": cf.iso(dates[-1]), "steps": n, "step": str(target or step),
                       "calendar": dates[0].calendar},
                splits={s: {"first": cf.iso(dates[a]), "last": cf.iso(dates[b - 1]), "steps": b - a}
                        for s, (a, b) in bounds.items()},
                sources=[{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} if p.is_file()
                         else {"file": str(p)} for p in files])
            if target:
                meta["resample"] = {"period": str(target), "source_step": str(step),
                                    "rule": "mean over each complete period; incomplete first/last periods dropped"}
            if factor:
                meta["coarsen"] = {"factor": list(factor), "rule": "block mean over the valid cells",
                                   "dropped": [src.grid[0] % factor[0], src.grid[1] % factor[1]]}
            return writer.finish(windows, meta, mask=mask, times=src.frame_times(dates))


def _split_bounds(dates: np.ndarray, years: str | None, splits: str | None, where: str) -> dict[str, tuple[int, int]]:
    """Frame index range [a, b) of each split."""
    n = len(dates)
    fractions = None
    if not years and not splits:
        fractions = [0.7, 0.15, 0.15]
    elif splits and "." in splits:
        try:
            fractions = [float(p) for p in splits.split(",")]
        except ValueError:
            fractions = []
        if len(fractions) != 3 or min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
            raise UserError(f"bad --splits {splits!r}: three fractions of the time steps, each > 0, summing to "
                            f"at most 1, e.g. 0.7,0.15,0.15")
    if fractions:
        return _fraction_bounds(n, fractions)
    keys = cf.keys(dates)
    ranges = {}
    if years:
        year_of = np.array([d.year for d in dates])
        for split, (first, last) in parse_years(years, {}).items():
            missing = sorted(set(range(first, last + 1)) - set(year_of.tolist()))
            if missing:
                raise UserError(f"{where}: {split} year {missing[0]} is missing (data cover {year_of[0]}-{year_of[-1]})")
            ranges[split] = (cf.date_key(str(first), end=False), cf.date_key(str(last), end=True))
    else:
        parts = splits.split(",")
        parsed = [cf.parse_range(p) for p in parts]
        if len(parts) != 3 or None in parsed:
            raise UserError(f"bad --splits {splits!r}: expected TRAIN,VAL,TEST as fractions (0.7,0.15,0.15) or date "
                            f"ranges START:END (1958:1999,2000:2004,2005:2010; 2000-01-01:2004-06-30; a bare 2016 is "
                            f"that whole year)")
        ranges = dict(zip(SPLITS, parsed))
    out = {}
    for split, (a, b) in ranges.items():
        idx = np.flatnonzero((keys >= (a or np.iinfo(np.int64).min)) & (keys <= (b or np.iinfo(np.int64).max)))
        if not len(idx):
            raise UserError(f"{where}: split {split!r} selects no time steps (data cover {cf.iso(dates[0])} .. "
                            f"{cf.iso(dates[-1])}); fix --splits")
        out[split] = (int(idx[0]), int(idx[-1]) + 1)
    spans = sorted(out.items(), key=lambda kv: kv[1])
    for (s1, (a1, b1)), (s2, (a2, b2)) in zip(spans, spans[1:]):
        if a2 < b1:
            raise UserError(f"{where}: splits {s1!r} and {s2!r} overlap ({cf.iso(dates[a2])} .. "
                            f"{cf.iso(dates[b1 - 1])}); fix --splits")
    return out


def _fraction_bounds(n: int, fractions: list[float]) -> dict[str, tuple[int, int]]:
    """Frame index range [a, b) of each split from fractions of the n time steps (the one rule `--splits
    0.7,0.15,0.15` and the hint that suggests such fractions both use)."""
    cuts = [0] + [int(n * round(sum(fractions[: i + 1]), 9)) for i in range(3)]
    return {s: (cuts[i], cuts[i + 1]) for i, s in enumerate(SPLITS)}


def _check_windows(bounds: dict, dates: np.ndarray, length: int, in_len: int, out_len: int, where: str) -> None:
    """Every split must hold a window; otherwise say how long it is and how to fix it. Both hints are
    values that will be accepted: the longest window every split holds, and split fractions whose
    three splits each hold a window of `length`."""
    n = len(dates)
    for split, (a, b) in bounds.items():
        if b - a >= length:
            continue
        span = f"{cf.iso(dates[a])} .. {cf.iso(dates[b - 1])}" if b > a else "empty"
        longest = min(hi - lo for lo, hi in bounds.values())  # in_len + out_len that every split holds
        fixes = [f"shorten --in-len/--out-len (at most {longest} steps in all)"] if longest >= 2 else []
        for percent in range(1, 34):  # the smallest equal val/test share (in whole percent) that fits
            f = percent / 100
            if all(hi - lo >= length for lo, hi in _fraction_bounds(n, [1 - 2 * f, f, f]).values()):
                fixes.insert(0, f"give it more steps, e.g. --splits {1 - 2 * f:.2f},{f:.2f},{f:.2f} or date ranges")
                break
        fix = " or ".join(fixes) if fixes else (f"the data hold {n} time steps, too few for three splits of "
                                                f"{length}; use more data or a shorter --in-len/--out-len")
        raise UserError(f"{where}: split {split!r} has {b - a} time steps ({span}), fewer than one window of {length} "
                        f"(--in-len {in_len} + --out-len {out_len}): no windows; {fix}")


def _reserved() -> set[str]:
    from svqbench.data import reserved_names
    return reserved_names()
