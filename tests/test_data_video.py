"""KTH, Human3.6M and KittiCaltech from folders synthesised in their published layouts."""
from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from svqbench.data import prepare
from svqbench.data.prepared import PreparedDataset
from svqbench.errors import UserError

TOL = 3 / 255  # JPEG of a flat image is exact to a level or two


def flat(size_wh, value) -> Image.Image:
    value = (value,) * 3 if isinstance(value, int) else value
    return Image.new("RGB", size_wh, tuple(int(v) for v in value))


# ---------------------------------------------------------------------------------------------- KTH

def kth_video(root: Path, action: str, person: int, numbers) -> None:
    folder = root / action / f"person{person:02d}_{action}_d1_uncomp"
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        flat((160, 120), (n * 2) % 256).save(folder / f"image_{n:04d}.jpg", quality=95)


@pytest.fixture(scope="module")
def kth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kth")
    for action in ("boxing", "handclapping", "handwaving", "walking", "jogging", "running"):
        (root / action).mkdir()
    kth_video(root, "boxing", 1, range(1, 41))             # 40 frames, stride 30: one window
    kth_video(root, "jogging", 1, range(1, 41))            # stride 3: starts 0, 3, 6, 9
    kth_video(root, "walking", 2, [*range(1, 36), *range(51, 86)])  # a gap: two clips of 35, one window each
    kth_video(root, "handwaving", 3, range(1, 11))         # shorter than a window: not stored
    kth_video(root, "boxing", 16, range(1, 31))            # validation person
    kth_video(root, "running", 17, range(1, 34))           # test person, stride 3: starts 0, 3
    return root


def test_kth_persons_split_strides_and_gray_frames(kth_root, tmp_path):
    ds = PreparedDataset(prepare("kth", root=tmp_path, from_paths=[kth_root]))
    assert ds.frames.shape == (40 + 40 + 70 + 30 + 33, 1, 128, 128) and ds.frames.dtype == np.uint8
    assert (ds.in_len, ds.out_len, ds.kind, ds.meta["value_range"]) == (10, 20, "video", [0.0, 1.0])
    assert {s: len(w) for s, w in ds.splits.items()} == {"train": 1 + 4 + 2, "val": 1, "test": 2}
    # train windows in action order: boxing p01 (0), walking p02 clips (1, 2), jogging p01 (3-6)
    x, y = ds.window("train", 4)   # jogging person01 from image_0004
    assert x.dtype == np.float32 and x.shape == (10, 1, 128, 128) and y.shape == (20, 1, 128, 128)
    np.testing.assert_allclose(x[:, 0, 64, 64], np.arange(4, 14) * 2 / 255, atol=TOL)
    x, y = ds.window("train", 2)   # walking person02, second clip starts at image_0051
    np.testing.assert_allclose(x[0, 0, 0, 0], 51 * 2 / 255, atol=TOL)
    batch = next(ds.batches("test", 8))
    np.testing.assert_allclose(batch.y[1, -1, 0, 5, 5], (3 + 30) * 2 / 255, atol=TOL)
    assert 0.0 <= ds.mean[0] <= 1.0 and ds.meta["splits"]["val"]["persons"] == ["16"]


def test_kth_wrong_layout_is_named(tmp_path):
    (tmp_path / "kth" / "boxing").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no handclapping/ folder; expected the KTH layout"):
        prepare("kth", root=tmp_path / "data", from_paths=[tmp_path / "kth"])
    with pytest.raises(UserError, match=r"kth cannot be downloaded by svqbench; run `svqbench prepare kth --from FOLDER`"):
        prepare("kth", root=tmp_path / "data")


# ----------------------------------------------------------------------------------------- Human3.6M

def color(n: int) -> tuple[int, int, int]:
    return (n * 5) % 256, (n * 3 + 40) % 256, 200 - n


@pytest.fixture(scope="module")
def human_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("h36m") / "human"
    (root / "images").mkdir(parents=True)
    lists = {"train": [("images/S1_Directions.54138969_", 1), ("images/S1_Walking.55011271_", 1),
                       ("images/S1_Walking.55011271_", 3), ("images/S1_Walking.55011271_", 6)],
             "test": [("images/S9_Walking.60457274_", 11)]}
    for part, entries in lists.items():
        (root / f"{part}.txt").write_text("".join(f"{v},{b}\n" for v, b in entries))
        for video, first in entries:
            for n in range(first, first + 40, 5):
                flat((256, 256), color(n)).save(root / f"{video}{n:06d}.jpg", quality=95)
    return root


def test_human36m_lists_step_five_and_video_heldout_validation(human_root, tmp_path):
    ds = PreparedDataset(prepare("human36m", root=tmp_path, from_paths=[human_root.parent]))
    assert ds.frames.shape[1:] == (3, 256, 256) and (ds.in_len, ds.out_len) == (4, 4)
    # S1_Directions (first video by name) is validation; S1_Walking keeps 3 windows in two tracks
    assert {s: len(w) for s, w in ds.splits.items()} == {"train": 3, "val": 1, "test": 1}
    assert ds.frames.shape[0] == 8 + (9 + 8) + 8  # frames 1..41 step 5 and 3..38 step 5 stored once
    for split, i, first in (("train", 0, 1), ("train", 1, 6), ("train", 2, 3), ("test", 0, 11)):
        x, y = ds.window(split, i)
        frames = np.concatenate([x, y])[:, :, 100, 100]
        np.testing.assert_allclose(frames, np.array([color(n) for n in range(first, first + 40, 5)]) / 255, atol=TOL)
    (human_root.parent.parent / "broken").mkdir(exist_ok=True)
    broken = human_root.parent.parent / "broken"
    (broken / "train.txt").write_text("images/S1_X_,1\n")
    (broken / "test.txt").write_text("images/S9_X_;11\n")
    with pytest.raises(UserError, match=r"test.txt:1: expected `images/<video>_,<first frame>`"):
        prepare("human36m", root=tmp_path, from_paths=[broken])
    (broken / "test.txt").write_text("images/S9_X_,11\n")
    with pytest.raises(UserError, match=r"S9_X_000011.jpg not found \(listed in test.txt\); 8 frame\(s\)"):
        prepare("human36m", root=tmp_path, from_paths=[broken])


# -------------------------------------------------------------------------------------- KittiCaltech

def write_hickle(path: Path, array) -> None:
    """hickle 2 layout (PredNet's files): the array is the HDF5 dataset `data_0`."""
    with h5py.File(path, "w") as f:
        f.attrs["CLASS"] = b"hickle"
        f.create_dataset("data_0", data=array)


def seq_file(path: Path, frames) -> None:
    """A Norpix .seq: a 1024-byte header, then JPEG images each preceded by a size field."""
    out = bytearray(b"\xfe\xed" + b"\x00" * 1022)
    for im in frames:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=95)
        out += len(buf.getvalue()).to_bytes(4, "little") + buf.getvalue() + b"\x00" * 8
    path.write_bytes(bytes(out))


@pytest.fixture(scope="module")
def kitticaltech_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitticaltech")
    kitti = root / "kitti_hkl"
    kitti.mkdir()
    n = np.arange(37)
    frames = np.broadcast_to((n * 6 % 256).astype(np.uint8)[:, None, None, None], (37, 128, 160, 3)).copy()
    write_hickle(kitti / "X_train.hkl", frames)
    write_hickle(kitti / "sources_train.hkl", np.array([b"city-2011_09_26_drive_0001_sync"] * 25
                                                       + [b"road-2011_09_26_drive_0015_sync"] * 12))
    write_hickle(kitti / "X_val.hkl", frames[:11])
    write_hickle(kitti / "sources_val.hkl", np.array([b"city-2011_09_26_drive_0005_sync"] * 11))
    (root / "caltech" / "set06").mkdir(parents=True)
    seq_file(root / "caltech" / "set06" / "V000.seq", [flat((640, 480), (i * 7) % 256) for i in range(36)])
    (root / "caltech" / "set07" / "V001").mkdir(parents=True)
    for i in range(33):
        flat((213, 160), 100).save(root / "caltech" / "set07" / "V001" / f"I{i:05d}.jpg", quality=95)
    return root


def test_kitticaltech_hickle_train_val_and_caltech_test(kitticaltech_root, tmp_path):
    ds = PreparedDataset(prepare("kitticaltech", root=tmp_path, from_paths=[kitticaltech_root]))
    assert ds.frames.shape == (37 + 11 + 12 + 11, 3, 128, 160)
    assert (ds.in_len, ds.out_len, ds.channels) == (10, 1, ["red", "green", "blue"])
    # non-overlapping windows of 11 inside each source: city 0, 11 (25 frames); road 25 (12 frames)
    np.testing.assert_array_equal(ds.splits["train"], [0, 11, 25])
    assert len(ds.splits["val"]) == 1 and len(ds.splits["test"]) == 2
    x, y = ds.window("train", 2)
    np.testing.assert_allclose(x[:, 0, 0, 0], (np.arange(25, 35) * 6 % 256) / 255, atol=1e-6)
    x, y = ds.window("test", 0)  # every 3rd .seq frame: 2, 5, 8, ...
    np.testing.assert_allclose(x[:, 1, 60, 80], (np.arange(2, 32, 3) * 7 % 256) / 255, atol=TOL)
    x, y = ds.window("test", 1)
    np.testing.assert_allclose(y, 100 / 255, atol=TOL)
    with pytest.raises(UserError, match=r"X_train.hkl not found; kitticaltech needs PredNet's kitti_hkl files"):
        prepare("kitticaltech", root=tmp_path, from_paths=[kitticaltech_root / "caltech"])
