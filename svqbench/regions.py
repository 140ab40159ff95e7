"""Regions that weather scores are also reported for, as WeatherBench 2 defines them.

`--regions` lists them, separated by spaces or ';':
- `wb2` (the default): WeatherBench 2's predefined latitude bands (scripts/evaluate.py), bounds
  inclusive: tropics 20S-20N, extratropics |lat| >= 20, northern_extratropics 20N-90N,
  southern_extratropics 90S-20S (WB2 calls the last two northern-/southern-hemisphere). Bands
  that hold no cell of the grid (a regional dataset) are left out, and metrics.json says so.
- a band's name alone (`tropics`): that band; refused if it holds no cell of the grid.
- `NAME=LAT0,LAT1` or `NAME=LAT0,LAT1,LON0,LON1`: a box, degrees, bounds inclusive; longitudes are
  compared modulo 360 and LON0 > LON1 crosses the 0/360 meridian (`europe=35,75,347.5,42.5`).
- `NAME=FILE.npy` or `NAME=FILE.nc`: a mask on the prepared grid ((H, W), rows in the prepared
  dataset's order; nonzero = inside; a .nc file holds one 2-D variable).
- `none`: no regions.
The whole grid is always scored: its numbers are the keys without a region suffix
(`rmse_latweighted`, `acc_latweighted`). A region's scores are `<metric>_<name>` (and `_by_lead`).
Within a region, cells are weighted as WeatherBench 2 does: cos(lat) normalised over the region's
(valid) cells, i.e. sum(w e) / sum(w) over the region.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svqbench.errors import UserError

WB2_BANDS: dict[str, tuple[tuple[float, float], ...]] = {
    "tropics": ((-20.0, 20.0),),
    "extratropics": ((-90.0, -20.0), (20.0, 90.0)),
    "northern_extratropics": ((20.0, 90.0),),
    "southern_extratropics": ((-90.0, -20.0),),
}
DEFAULT_REGIONS = "wb2"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RegionSpec:
    name: str
    lat: tuple[tuple[float, float], ...] | None = None  # latitude bands (any one holds a cell)
    lon: tuple[float, float] | None = None
    file: str | None = None
    asked: bool = True  # named by the user (an empty region is refused) or implied by `wb2` (left out)

    def definition(self) -> str:
        if self.file:
            return f"mask file {self.file}"
        bands = " or ".join(f"lat {a:g}..{b:g}" for a, b in self.lat)
        return bands + ("" if self.lon is None else f", lon {self.lon[0]:g}..{self.lon[1]:g}")


def parse_regions(spec: str) -> list[RegionSpec]:
    """The regions of a `--regions` value (see the module doc); UserError naming a bad entry."""
    out: dict[str, RegionSpec] = {}
    for entry in (e for e in re.split(r"[;\s]+", str(spec).strip()) if e):
        if entry == "none":
            continue
        if entry == DEFAULT_REGIONS:
            for name, bands in WB2_BANDS.items():
                out.setdefault(name, RegionSpec(name, bands, asked=False))
            continue
        name, eq, value = entry.partition("=")
        if not eq:
            if name not in WB2_BANDS:
                raise UserError(f"unknown region {name!r} in --regions; use one of: {DEFAULT_REGIONS}, none, "
                                f"{', '.join(WB2_BANDS)}, or NAME=LAT0,LAT1[,LON0,LON1] or NAME=MASK.npy|.nc")
            out[name] = RegionSpec(name, WB2_BANDS[name])
            continue
        if not _NAME.match(name) or name.startswith("by") or name == "global" or name in WB2_BANDS:
            raise UserError(f"bad region name {name!r} in --regions: use lower-case letters, digits and '_', "
                            f"starting with a letter, not 'by...', 'global' or a WeatherBench 2 band name")
        if name in out:
            raise UserError(f"region {name!r} is given twice in --regions")
        if value.lower().endswith((".npy", ".nc")):
            out[name] = RegionSpec(name, file=value)
            continue
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 4) or not all(np.isfinite(numbers)):
            raise UserError(f"bad region {entry!r} in --regions: give NAME=LAT0,LAT1 or NAME=LAT0,LAT1,LON0,LON1 "
                            f"(degrees) or NAME=MASK.npy|.nc")
        lat0, lat1 = numbers[:2]
        if not -90 <= lat0 <= lat1 <= 90:
            raise UserError(f"bad region {entry!r} in --regions: latitudes must satisfy -90 <= LAT0 <= LAT1 <= 90")
        out[name] = RegionSpec(name, ((lat0, lat1),), None if len(numbers) == 2 else (numbers[2], numbers[3]))
    return list(out.values())


def region_mask(spec: RegionSpec, grid: tuple[int, int], *, lat: np.ndarray | None = None,
                lon: np.ndarray | None = None, lat2d: np.ndarray | None = None,
                lon2d: np.ndarray | None = None, where: str = "the dataset") -> np.ndarray:
    """(H, W) bool: the cells of `grid` inside the region (rows' `lat` (H,) and columns' `lon` (W,),
    or every cell's `lat2d`/`lon2d`)."""
    h, w = grid
    if spec.file:
        return _mask_file(Path(spec.file), grid, spec.name)
    if lat2d is None and lat is None:
        raise UserError(f"region {spec.name} ({spec.definition()}) needs latitudes; {where} has none "
                        f"(pixels or metres): give a mask file (NAME=MASK.npy) or drop --regions")
    la = np.asarray(lat2d, np.float64) if lat2d is not None else \
        np.broadcast_to(np.asarray(lat, np.float64)[:, None], (h, w))
    inside = np.zeros((h, w), dtype=bool)
    for a, b in spec.lat:
        inside |= (la >= a) & (la <= b)
    if spec.lon is not None:
        if lon2d is None and lon is None:
            raise UserError(f"region {spec.name} ({spec.definition()}) needs longitudes; {where} has none: "
                            f"give only LAT0,LAT1")
        lo = np.asarray(lon2d, np.float64) if lon2d is not None else \
            np.broadcast_to(np.asarray(lon, np.float64)[None, :], (h, w))
        lo, (a, b) = np.mod(lo, 360.0), (spec.lon[0] % 360.0, spec.lon[1] % 360.0)
        inside &= ((lo >= a) & (lo <= b)) if a <= b else ((lo >= a) | (lo <= b))
    return inside


def _mask_file(path: Path, grid: tuple[int, int], name: str) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            import xarray as xr
            with xr.open_dataset(path) as ds:
                arrays = [v for v in ds.data_vars.values() if v.ndim == 2]
                if len(arrays) != 1:
                    raise UserError(f"region {name}: {path} holds {len(arrays)} 2-D variables; give it exactly one")
                values = arrays[0].values
    except (OSError, ValueError) as e:
        raise UserError(f"region {name}: cannot read mask file {path} ({e})") from None
    values = np.asarray(values)
    if values.shape != tuple(grid):
        raise UserError(f"region {name}: mask {path} has shape {values.shape}, the grid is {tuple(grid)}")
    if values.dtype != bool and not np.issubdtype(values.dtype, np.number):
        raise UserError(f"region {name}: mask {path} holds {values.dtype} values; give booleans or numbers")
    return np.isfinite(values) & (values != 0) if values.dtype != bool else values


def region_weights(inside: np.ndarray, *, lat: np.ndarray | None = None, lat2d: np.ndarray | None = None,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) WeatherBench 2 weights of a region: cos(lat) normalised to mean 1 over the region's
    valid cells, 0 elsewhere (so sum(w x) / cells = sum(w x) / sum(w)). Without latitudes (a mask
    on a pixel grid) every region cell weighs 1."""
    cells = inside if valid is None else inside & np.asarray(valid, dtype=bool)
    if not cells.any():
        raise ValueError("the region holds no valid cell")
    h, w = inside.shape
    if lat2d is not None:
        cos = np.cos(np.deg2rad(np.asarray(lat2d, np.float64)))
    elif lat is not None:
        cos = np.broadcast_to(np.cos(np.deg2rad(np.asarray(lat, np.float64)))[:, None], (h, w))
    else:
        cos = np.ones((h, w))
    return np.where(cells, cos / cos[cells].mean(), 0.0)
