"""TaxiBJ from the four BJ1x_M32x32_T30_InOut.h5 files (and OpenSTL's dataset.npz)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from svqbench.data import prepare
from svqbench.data.prepared import PreparedDataset
from svqbench.errors import UserError

# (file, first day, days); one slot of 2013-07-03 is missing, so that day must be dropped
FILES = [("BJ13", "2013-07-01", 25), ("BJ14", "2014-03-01", 25), ("BJ15", "2015-03-01", 25), ("BJ16", "2015-11-01", 30)]


def slot_times(first_day: str, days: int) -> np.ndarray:
    start = np.datetime64(first_day, "m")
    return start + np.arange(days * 48) * np.timedelta64(30, "m")


def flows(times: np.ndarray) -> np.ndarray:
    """Deterministic flows (float64, as published) that differ per slot, channel and cell."""
    k = ((times - np.datetime64("2013-01-01T00:00")) // np.timedelta64(30, "m")).astype(np.float64)
    cell = np.arange(2 * 32 * 32, dtype=np.float64).reshape(2, 32, 32) % 97
    return (k[:, None, None, None] % 500) + cell[None]


@pytest.fixture(scope="module")
def taxibj_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("TaxiBJ")
    for name, first, days in FILES:
        times = slot_times(first, days)
        if name == "BJ13":
            times = np.delete(times, 2 * 48 + 16)  # 2013-07-03 slot 17 missing
        dates = [f"{str(t)[:10].replace('-', '')}{(int(str(t)[11:13]) * 2 + int(str(t)[14:16]) // 30) + 1:02d}".encode()
                 for t in times]
        with h5py.File(folder / f"{name}_M32x32_T30_InOut.h5", "w") as f:
            f["data"] = flows(times)
            f["date"] = np.array(dates, dtype="S10")
    return folder


def test_taxibj_h5_drops_incomplete_days_splits_by_time_and_scales_with_train(taxibj_folder, tmp_path):
    ds = PreparedDataset(prepare("taxibj", root=tmp_path, from_paths=[taxibj_folder]))
    days = 24 + 25 + 25 + 30
    assert ds.frames.shape == (days * 48, 2, 32, 32)
    assert (ds.in_len, ds.out_len, ds.kind, ds.meta["value_range"]) == (4, 4, "traffic", [0.0, 1.0])
    # expected times: every complete day, in order
    times = np.concatenate([slot_times(f, d) for _, f, d in FILES])
    times = times[(times < np.datetime64("2013-07-03")) | (times >= np.datetime64("2013-07-04"))]
    raw = flows(times)
    n, held = len(times), 28 * 48
    lo, hi = raw[: n - 2 * held].min(), raw[: n - 2 * held].max()
    np.testing.assert_allclose(ds.frames, (raw - lo) / (hi - lo), rtol=1e-6, atol=1e-7)
    assert ds.meta["scaling"] == {"min": lo, "max": hi, "to_flow": "flow = value * (max - min) + min"}

    def expected(a, b):
        s = np.arange(a, b - 7)
        return s[(times[s + 7] - times[s]) == np.timedelta64(210, "m")]
    for split, (a, b) in {"train": (0, n - 2 * held), "val": (n - 2 * held, n - held), "test": (n - held, n)}.items():
        np.testing.assert_array_equal(ds.splits[split], expected(a, b))
    assert len(ds.splits["test"]) == held - 7
    # no window crosses the dropped day or the months between files
    w = ds.splits["train"]
    assert ((times[w + 7] - times[w]) == np.timedelta64(210, "m")).all()
    assert ds.meta["splits"]["test"]["slots"] == ["2015-11-03T00:00", "2015-11-30T23:30"]


def test_taxibj_missing_file_and_bad_dates_are_named(taxibj_folder, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("BJ13", "BJ14", "BJ15"):
        (partial / f"{name}_M32x32_T30_InOut.h5").symlink_to(taxibj_folder / f"{name}_M32x32_T30_InOut.h5")
    with pytest.raises(UserError, match="BJ16_M32x32_T30_InOut.h5 not found under --from"):
        prepare("taxibj", root=tmp_path, from_paths=[partial])
    with h5py.File(partial / "BJ16_M32x32_T30_InOut.h5", "w") as f:
        f["data"] = np.zeros((2, 2, 32, 32))
        f["date"] = np.array([b"2015110101", b"2015110149"])
    with pytest.raises(UserError, match=r"BJ16_M32x32_T30_InOut.h5: date '2015110149' has slot 49, expected 01..48"):
        prepare("taxibj", root=tmp_path, from_paths=[partial])
    with pytest.raises(UserError, match="run `svqbench prepare taxibj --from FOLDER` with the folder holding BJ13..BJ16"):
        prepare("taxibj", root=tmp_path)


def test_taxibj_openstl_npz_maps_to_unit_range_and_holds_out_validation(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {k: rng.uniform(-1, 1, (n, 4, 2, 32, 32)).astype(np.float64)
              for k, n in (("X_train", 50), ("Y_train", 50), ("X_test", 10), ("Y_test", 10))}
    np.savez(tmp_path / "dataset.npz", **arrays)
    ds = PreparedDataset(prepare("taxibj", root=tmp_path / "data", from_paths=[tmp_path / "dataset.npz"]))
    assert ds.frames.shape == (60 * 8, 2, 32, 32)
    assert {s: len(w) for s, w in ds.splits.items()} == {"train": 41, "val": 2, "test": 10}
    x, y = ds.window("test", 3)
    np.testing.assert_allclose(x, (arrays["X_test"][3] + 1) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y, (arrays["Y_test"][3] + 1) / 2, rtol=1e-6, atol=1e-7)
    x, y = ds.window("val", 1)
    np.testing.assert_allclose(x, (arrays["X_train"][49] + 1) / 2, rtol=1e-6, atol=1e-7)
    train = np.concatenate([arrays["X_train"][:41], arrays["Y_train"][:41]], axis=1)
    np.testing.assert_allclose(ds.mean, ((train + 1) / 2).mean(axis=(0, 1, 3, 4)), rtol=1e-5)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "dataset.npz").write_bytes((tmp_path / "dataset.npz").read_bytes()[:200_000])
    with pytest.raises(UserError, match="dataset.npz"):
        prepare("taxibj", root=tmp_path / "data", from_paths=[tmp_path / "cut"])
