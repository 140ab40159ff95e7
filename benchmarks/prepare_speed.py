"""Issue 5 target: preparing one synthetic WeatherBench-S year at full size (8760 x 32 x 64) takes
under 10 s. A WeatherBench-S task needs a train, a val and a test year, so this prepares three
hourly years (2010, 2011, 2012: 26,304 frames) from WeatherBench 1 NetCDF files and reports the
time per year. In the same run it times the I/O floor (read each file with xarray, np.save it), so
the ratio stays meaningful when other jobs load the CPU; the CPU time of this process is printed too.
Memory: the conversion runs in a child process whose peak RSS (VmHWM) is printed for three years
and again for six; equal peaks show that memory is bounded by one source year, not the set.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prepare_speed.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from svqbench.data import prepare

YEARS = (2010, 2011, 2012)
LONG_EXTRA, LONG_YEARS = (2013, 2014, 2015), "2010-2013,2014,2015"  # twice the frames, same memory
CHILD = """
import sys, time
from pathlib import Path
import numpy, xarray
from svqbench.data import prepare
def peak_mb():  # VmHWM: this process's peak resident set (ru_maxrss would include the parent's)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024
base = peak_mb()
work = Path(sys.argv[1])
t0, cpu0 = time.perf_counter(), time.process_time()
prepare("weatherbench-s-t2m", root=work / sys.argv[3], from_paths=[work / "src"], years=sys.argv[2], progress=False)
print(time.perf_counter() - t0, time.process_time() - cpu0, peak_mb(), base)
"""


def write_year(folder: Path, year: int) -> Path:
    times = np.arange(np.datetime64(f"{year}-01-01T00", "h"), np.datetime64(f"{year + 1}-01-01T00", "h"),
                      np.timedelta64(1, "h")).astype("datetime64[ns]")
    lat, lon = np.linspace(-87.1875, 87.1875, 32), np.arange(64) * 5.625
    rng = np.random.default_rng(year)
    data = (280 + 20 * np.cos(np.deg2rad(lat))[None, :, None] + rng.normal(0, 1, (len(times), 32, 64))).astype(np.float32)
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), data, {"units": "K"})},
                    coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                            "lon": ("lon", lon, {"units": "degrees_east"})})
    path = folder / "2m_temperature" / f"2m_temperature_{year}_5.625deg.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="svqbench-prepare-speed-"))
    try:
        files = [write_year(work / "src", y) for y in YEARS]
        t0 = time.perf_counter()
        for i, f in enumerate(files):  # I/O floor: read every file, write its array
            with xr.open_dataset(f) as ds:
                np.save(work / f"floor{i}.npy", ds["t2m"].values)
        floor = time.perf_counter() - t0
        # a child process, so its peak RSS is the conversion's alone
        child = subprocess.run([sys.executable, "-c", CHILD, str(work), ",".join(map(str, YEARS)), "data"],
                               capture_output=True, text=True, check=True)
        seconds, cpu, peak_mb, base_mb = map(float, child.stdout.split())
        for y in LONG_EXTRA:
            write_year(work / "src", y)
        child = subprocess.run([sys.executable, "-c", CHILD, str(work), LONG_YEARS, "data-long"],
                               capture_output=True, text=True, check=True)
        long_peak_mb = float(child.stdout.split()[2])
        long_mb = (work / "data-long" / "weatherbench-s-t2m" / "frames.npy").stat().st_size / 1e6
        n = sum(xr.open_dataset(f).sizes["time"] for f in files)
        print(f"prepared {len(YEARS)} full-size years ({n} x 32 x 64 frames) in {seconds:.2f} s: "
              f"{seconds / len(YEARS):.2f} s per year (target < 10 s; CPU time {cpu / len(YEARS):.2f} s per year)")
        frames_mb = (work / "data" / "weatherbench-s-t2m" / "frames.npy").stat().st_size / 1e6
        print(f"peak RSS {peak_mb:.0f} MB ({base_mb:.0f} MB after imports) for {frames_mb:.0f} MB of frames; "
              f"{long_peak_mb:.0f} MB for {long_mb:.0f} MB ({LONG_YEARS}): memory does not grow with the years")
        print(f"I/O floor (xarray read + np.save, same files): {floor:.2f} s; prepare / floor = {seconds / floor:.1f}x "
              f"(validation, sha256 of each source, train statistics, atomic swap)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
