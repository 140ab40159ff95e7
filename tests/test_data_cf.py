"""CF conventions (svqbench/data/cf.py) on real cftime calendars and xarray datasets laid out as real files."""
from __future__ import annotations

import cftime
import numpy as np
import pytest
import xarray as xr

from svqbench.data import cf
from svqbench.errors import UserError


def dates(values, units, calendar="standard"):
    return cf.decode_times(np.asarray(values, dtype=float), {"units": units, "calendar": calendar}, "f.nc: time")


def step_of(d):
    return cf.infer_step(d, lambda i: cf.iso(d[i]), "f.nc")


def test_calendars_decode_in_their_own_calendar():
    noleap = dates([0, 58, 59], "days since 2000-01-01", "noleap")   # no 29 February in noleap
    assert [cf.iso(d) for d in noleap] == ["2000-01-01", "2000-02-28", "2000-03-01"]
    d360 = dates([0, 59, 359], "days since 2000-01-01", "360_day")   # 30-day months
    assert [cf.iso(d) for d in d360] == ["2000-01-01", "2000-02-30", "2000-12-30"]
    same = dates([0, 59], "days since 2000-01-01", "365_day")
    assert same[1].calendar == "noleap" and cf.iso(same[1]) == "2000-03-01"
    assert cf.iso(dates([6], "hours since 1970-1-1 00:00:0.0", "gregorian")[0]) == "1970-01-01T06:00:00"


def test_months_since_and_year_zero_origins():
    # `months since` is calendar months in any calendar (cftime alone allows it for 360_day only)
    monthly = dates([0, 1, 13, 0.5], "months since 1958-1-1")
    assert [cf.iso(d) for d in monthly[:3]] == ["1958-01-01", "1958-02-01", "1959-02-01"]
    assert cf.iso(monthly[3]) == "1958-01-16T12:00:00"  # half of January's 31 days
    assert [d.year for d in dates([0, 2], "years since 1850-01-01", "noleap")] == [1850, 1852]
    assert cf.iso(dates([31], "months since 2000-01-31", "noleap")[0]) == "2002-08-31"
    # a year-0 origin in the standard calendar (CF deprecates it; CMIP-era files still have it)
    assert cf.iso(dates([366], "days since 0000-01-01")[0]) == "0001-01-01"


@pytest.mark.parametrize("attrs, message", [
    ({"units": "days"}, r"time units 'days' are not 'UNIT since DATE'"),
    ({"units": "days since 2000-01-01", "calendar": "lunar"}, "calendar 'lunar' is not a CF calendar"),
    ({"units": "furlongs since 2000-01-01"}, "cannot decode times 'furlongs since 2000-01-01'"),
])
def test_bad_time_units_are_named(attrs, message):
    with pytest.raises(UserError, match=message):
        cf.decode_times(np.arange(3.0), attrs, "f.nc: time")
    with pytest.raises(UserError, match="time value 2 is missing"):
        cf.decode_times(np.array([0, 1, np.nan]), {"units": "days since 2000-01-01"}, "f.nc: time")


def test_steps_are_judged_in_the_data_unit():
    assert str(step_of(dates(np.arange(48), "hours since 2000-01-01"))) == "1 hours"
    assert str(step_of(dates(np.arange(0, 96, 6), "hours since 2000-01-01"))) == "6 hours"
    assert str(step_of(dates(np.arange(800), "days since 2000-01-01", "noleap"))) == "1 days"
    # monthly means stamped mid-month: 28 to 31 days apart, still one step of 1 month
    ostia = cftime.num2date([318096, 318828, 319560, 320304], "hours since 1970-01-01", "gregorian")
    assert str(step_of(np.asarray(ostia))) == "1 months"
    assert str(step_of(dates(np.arange(0, 36, 3), "months since 1958-1-1"))) == "3 months"
    # yearly on a 360-day calendar (the embedded A1B file's layout)
    assert str(step_of(dates(np.arange(10) * 8640, "hours since 1860-06-01", "360_day"))) == "1 years"
    assert str(step_of(dates(np.arange(10) * 360, "days since 1860-06-01", "360_day"))) == "1 years"


def test_irregular_steps_name_the_gap_in_the_data_unit():
    with pytest.raises(UserError, match=r"between 1958-03-01 and 1958-05-01 \(2 months vs 1 months\)"):
        step_of(dates([0, 1, 2, 4, 5], "months since 1958-1-1"))
    with pytest.raises(UserError, match=r"between 2000-01-03 and 2000-01-05 \(2 days vs 1 days\)"):
        step_of(dates([0, 1, 2, 4, 5, 6], "days since 2000-01-01"))
    with pytest.raises(UserError, match="repeated or unsorted times"):
        step_of(dates([0, 1, 1, 2], "days since 2000-01-01"))


def test_date_bounds_work_on_every_calendar():
    d = dates(np.arange(360), "days since 2000-01-01", "360_day")
    keys = cf.keys(d)
    start, end = cf.parse_range("2000-02:2000-12-31")  # 31 December does not exist in a 360-day year
    assert keys[(keys >= start) & (keys <= end)].size == 330
    assert cf.parse_range("2016") == (cf.date_key("2016", end=False), cf.date_key("2016", end=True))
    assert cf.parse_range("2000-01-01T06:00:2000-02-01")[0] == 20000101060000
    assert cf.parse_range(":2001-03")[0] is None
    assert cf.parse_range("2001-13:") is None and cf.parse_range("next week") is None


def test_resample_averages_complete_periods_only():
    hourly = dates(np.arange(5, 24 * 3 + 5), "hours since 2000-01-01")  # starts 05:00, ends 04:00 on day 4
    starts, stops, out = cf.resample_plan(hourly, cf.Step(1, "hours"), cf.parse_resample("1D"), "f.nc")
    assert [cf.iso(o) for o in out] == ["2000-01-02", "2000-01-03"]  # the partial first and last days dropped
    assert (stops - starts).tolist() == [24, 24] and cf.iso(hourly[starts[0]]) == "2000-01-02"
    monthly = dates(np.arange(30), "months since 1958-1-1", "noleap")
    starts, stops, out = cf.resample_plan(monthly, cf.Step(1, "months"), cf.parse_resample("yearly"), "f.nc")
    assert [cf.iso(o) for o in out] == ["1958-01-01", "1959-01-01"] and (stops - starts).tolist() == [12, 12]
    daily = dates(np.arange(365), "days since 2001-01-01", "noleap")
    _, counts, out = cf.resample_plan(daily, cf.Step(1, "days"), cf.parse_resample("monthly"), "f.nc")
    assert len(out) == 12
    with pytest.raises(UserError, match="--resample 1 days cannot average steps of 1 months"):
        cf.resample_plan(monthly, cf.Step(1, "months"), cf.parse_resample("daily"), "f.nc")
    with pytest.raises(UserError, match="bad --resample 'fortnightly'"):
        cf.parse_resample("fortnightly")


def ds_with(dims, coords, extra=None):
    shape = tuple(3 for _ in dims)
    return xr.Dataset({"v": (dims, np.zeros(shape, np.float32)), **(extra or {})},
                      coords={k: (k, np.arange(3.0), a) for k, a in coords.items()})


@pytest.mark.parametrize("dims, attrs, expected", [
    (("TIME", "FNOCY", "FNOCX"), {"TIME": {"units": "hours since 1990-01-01"}, "FNOCY": {"axis": "Y"},
                                  "FNOCX": {"axis": "X"}}, ("TIME", "FNOCY", "FNOCX")),
    (("time", "hlat", "hlon"), {}, ("time", "hlat", "hlon")),                      # names only
    (("t", "rlat", "rlon"), {"rlat": {"standard_name": "grid_latitude"}}, ("t", "rlat", "rlon")),
    (("date", "FNOCY", "FNOCX"), {}, ("date", "FNOCY", "FNOCX")),                 # last two dims are y, x
    (("when", "a", "b"), {"when": {"standard_name": "time"}, "a": {"units": "degrees_east"},
                          "b": {"units": "degrees_north"}}, ("when", "b", "a")),  # attributes beat order
])
def test_axes_from_attributes_then_names_then_order(dims, attrs, expected):
    ds = ds_with(dims, {d: attrs.get(d, {}) for d in dims})
    axes = cf.find_axes(ds, ds["v"], "f.nc: v")
    assert (axes["T"], axes["Y"], axes["X"]) == expected


def test_latitude_only_where_cf_says_latitude():
    projected = ds_with(("time", "y", "x"), {"y": {"units": "m", "standard_name": "projection_y_coordinate"},
                                             "x": {"units": "m", "standard_name": "projection_x_coordinate"}})
    assert cf.lat_lon(projected, projected["v"], "y", "x") == (None, None)
    pixels = xr.Dataset({"v": (("time", "row", "col"), np.zeros((2, 3, 4), np.float32))})
    assert cf.lat_lon(pixels, pixels["v"], "row", "col") == (None, None)
    lat2d = np.add.outer(np.arange(3.0), np.arange(4.0)) + 40
    rotated = xr.Dataset({"v": (("rlat", "rlon"), np.zeros((3, 4)), {"coordinates": "lat lon"})},
                         coords={"rlat": ("rlat", np.arange(3.0), {"standard_name": "grid_latitude", "units": "degrees"}),
                                 "rlon": ("rlon", np.arange(4.0), {"standard_name": "grid_longitude", "units": "degrees"}),
                                 "lat": (("rlat", "rlon"), lat2d, {"standard_name": "latitude", "units": "degrees_north"}),
                                 "lon": (("rlat", "rlon"), lat2d - 40, {"units": "degrees_east"})})
    lat, lon = cf.lat_lon(rotated, rotated["v"], "rlat", "rlon")
    np.testing.assert_array_equal(lat, lat2d)
    assert lon.shape == (3, 4)
    regular = ds_with(("time", "lat", "lon"), {"lat": {"units": "degrees_north"}, "lon": {"units": "degrees_east"}})
    lat, lon = cf.lat_lon(regular, regular["v"], "lat", "lon")
    assert lat.tolist() == [0, 1, 2] and lon.tolist() == [0, 1, 2]


# cf_xarray (a test dependency) reads CF attributes only: where a file carries them, svqbench's axes and
# latitude/longitude are the ones cf_xarray names. svqbench keeps its own detection for what cf_xarray
# leaves out (README, architecture): time from undecoded `UNIT since DATE` units (svqbench opens files
# with decode_times=False to decode months/years since and year-0 origins itself), axes by name
# (hlat, TIME, date) and by CF's T, Z, Y, X order, and lat/lon named so without attributes.
@pytest.mark.parametrize("dims, attrs", [
    (("time", "lat", "lon"), {"time": {"standard_name": "time"}, "lat": {"standard_name": "latitude"},
                              "lon": {"units": "degrees_east"}}),
    (("TIME", "FNOCY", "FNOCX"), {"TIME": {"axis": "T"}, "FNOCY": {"axis": "Y"}, "FNOCX": {"axis": "X"}}),
    (("t", "height", "rlat", "rlon"), {"t": {"axis": "T"}, "height": {"units": "m", "positive": "up"},
                                       "rlat": {"standard_name": "grid_latitude", "units": "degrees"},
                                       "rlon": {"standard_name": "grid_longitude", "units": "degrees"}}),
    (("when", "a", "b"), {"when": {"standard_name": "time"}, "a": {"units": "degrees_east"},
                          "b": {"units": "degrees_north"}}),
    (("time", "y", "x"), {"time": {"standard_name": "time"},
                          "y": {"units": "m", "standard_name": "projection_y_coordinate"},
                          "x": {"units": "m", "standard_name": "projection_x_coordinate"}}),
])
def test_axes_and_latitudes_agree_with_cf_xarray_where_the_file_has_cf_attributes(dims, attrs):
    import cf_xarray  # noqa: F401 - registers the .cf accessor (the `test` extra installs it)
    ds = ds_with(dims, {d: attrs.get(d, {}) for d in dims})
    ours = cf.find_axes(ds, ds["v"], "f.nc: v")
    axes, coords = ds.cf.axes, ds.cf.coordinates

    def theirs(axis, coordinate):
        return (axes.get(axis) or coords.get(coordinate) or [None])[0]
    assert (ours["T"], ours["Y"], ours["X"]) == (theirs("T", "time"), theirs("Y", "latitude"),
                                                 theirs("X", "longitude"))
    lat, lon = cf.lat_lon(ds, ds["v"], ours["Y"], ours["X"])
    assert (lat is not None, lon is not None) == ("latitude" in coords, "longitude" in coords)
