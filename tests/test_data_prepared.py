"""The prepared format: streaming writer, train-only statistics, uint8 video frames, batches."""
from __future__ import annotations

import json

import numpy as np
import pytest

from svqbench.data import prepared
from svqbench.data.prepared import PreparedDataset, PreparedWriter, write_prepared
from svqbench.errors import UserError

META = dict(name="toy", channels=["a", "b"], units=["K", "K"], in_len=3, out_len=2)


def toy(n=60, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal([[[10.0]], [[-5.0]]], [[[2.0]], [[0.5]]], size=(n, 2, 4, 6)).astype(np.float32)
    windows = {"train": np.arange(0, 20), "val": np.arange(30, 36), "test": np.arange(45, 56)}
    return frames, windows


def test_chunked_statistics_equal_numpy_on_train_frames_only(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "_CHUNK_BYTES", 3 * 2 * 4 * 6 * 4)  # three frames per chunk
    frames, windows = toy()
    frames[40:] += 100.0  # val/test far away: they must not leak into the statistics
    ds = PreparedDataset(write_prepared(tmp_path / "toy", frames, windows, META))
    train = frames[:24].astype(np.float64)  # windows 0..19 of 5 frames touch frames 0..23
    np.testing.assert_allclose(ds.mean, train.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(ds.std, train.std(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(ds.climatology, train.mean(axis=0), rtol=1e-6)
    assert ds.meta["stats"]["computed_on"] == "train" and ds.meta["windows"] == {"train": 20, "val": 6, "test": 11}


def test_batches_match_windows_and_shuffle_visits_each_once(tmp_path):
    frames, windows = toy()
    ds = PreparedDataset(write_prepared(tmp_path / "toy", frames, windows, META))
    seen = []
    for batch in ds.batches("train", 6, shuffle=True, rng=np.random.default_rng(1)):
        for k, start in enumerate(batch.index):
            i = int(np.flatnonzero(ds.splits["train"] == start)[0])
            x, y = ds.window("train", i)
            np.testing.assert_array_equal(batch.x[k], x)
            np.testing.assert_array_equal(batch.y[k], y)
            seen.append(int(start))
    assert sorted(seen) == list(range(20)) and ds.num_batches("train", 6) == 4


def test_uint8_frames_read_back_in_unit_range(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (30, 1, 5, 5), dtype=np.uint8)
    windows = {"train": np.arange(0, 10), "val": np.arange(12, 15), "test": np.arange(20, 25)}
    with PreparedWriter(tmp_path / "vid", 30, 1, (5, 5), dtype="uint8", frame_scale=1 / 255) as w:
        w.write(0, stored)
        path = w.finish(windows, dict(META, channels=["gray"], units=["0-1"], kind="video"))
    ds = PreparedDataset(path)
    assert ds.frames.dtype == np.uint8 and ds.meta["frame_scale"] == 1 / 255
    batch = next(ds.batches("test", 2))
    assert batch.x.dtype == np.float32
    np.testing.assert_allclose(batch.x[1], stored[21:24] / 255, rtol=1e-6)
    np.testing.assert_allclose(ds.mean, [stored[:14].mean() / 255], rtol=1e-6)
    xn, yn, offset = ds.normalise(batch, "global")
    np.testing.assert_allclose(ds.denormalise(yn, offset), batch.y, atol=1e-6)


def test_failed_write_keeps_previous_dataset_and_cleans_temp(tmp_path):
    frames, windows = toy()
    path = write_prepared(tmp_path / "toy", frames, windows, META)
    before = (path / "meta.json").read_text()
    frames[7, 1, 2, 3] = np.nan
    with pytest.raises(UserError, match=r"NaN or infinite values \(first in frame 7\)"):
        write_prepared(tmp_path / "toy", frames, windows, META)
    with pytest.raises(UserError, match="split 'val' has no windows of 5 frames"):
        write_prepared(tmp_path / "toy", toy()[0], dict(windows, val=np.zeros(0, np.int64)), META)
    assert (path / "meta.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    assert json.loads(before)["shape"] == [60, 2, 4, 6]
