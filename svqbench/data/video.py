"""Video datasets from user-supplied folders in their published layouts: KTH, KittiCaltech, Human3.6M.

Frames are stored as uint8 with meta["frame_scale"] = 1/255, so the dataset reads them in [0, 1]
(OpenSTL's convention) at a quarter of the float32 size. A clip is a run of frames that follow each
other in time; windows never cross clips. Validation is held out from the training part:
  kth           persons 01-15 train, 16 validation, 17-25 test (OpenSTL trains on 01-16, tests on 17-25);
                window stride 30 for boxing/handclapping/handwaving/walking, 3 for jogging/running
                (the PredRNN/OpenSTL rule, applied forwards), grayscale 128 x 128, 10 -> 20.
  kitticaltech  PredNet's KITTI X_train.hkl / X_val.hkl (+ sources_*.hkl) for train / validation,
                Caltech set06..set10 (.seq videos or folders of extracted frames, every 3rd frame,
                resized to height 128 and centre-cropped to 160) for test; non-overlapping windows
                of 11 frames, 10 -> 1, RGB 128 x 160.
  human36m      train.txt / test.txt lists (`images/<video>_,<first frame>`), one window of 8 frames
                5 apart per line, RGB 256 x 256, 4 -> 4; every 20th training video (whole videos,
                sorted by name) is the validation split.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from svqbench.config import PAPER_BASE, PAPER_VIDEO, scales
from svqbench.data import DatasetSpec
from svqbench.data.prepared import PreparedWriter
from svqbench.errors import UserError
from svqbench.models import ForecastShape

FRAME_SCALE = 1 / 255


@dataclass
class Clip:
    """Consecutive frames of one video: `read()` yields uint8 blocks (n, C, H, W) in order."""
    split: str
    length: int
    starts: list[int]                       # window starts within the clip
    read: Callable[[], Iterator[np.ndarray]]
    name: str = ""


def _load_image(path: Path, size: tuple[int, int], gray: bool) -> np.ndarray:
    """(C, H, W) uint8; resized (bilinear) to `size` = (H, W) when it differs."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("L" if gray else "RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: cannot be read as an image ({e}); the file is truncated or corrupt") from None
    return arr[None] if gray else arr.transpose(2, 0, 1)


def _write_clips(dest: Path, clips: list[Clip], *, channels: list[str], grid: tuple[int, int], in_len: int,
                 out_len: int, meta: dict) -> Path:
    length = in_len + out_len
    clips = [c for c in clips if c.starts]  # a clip shorter than one window is never read
    for split in ("train", "val", "test"):
        if not any(c.split == split for c in clips):
            raise UserError(f"{dest.name}: no {split} clip has {length} consecutive frames; "
                            f"check the folder layout (see docs/datasets.md)")
    n_frames = sum(c.length for c in clips)
    windows: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    with PreparedWriter(dest, n_frames, len(channels), grid, dtype="uint8", frame_scale=FRAME_SCALE) as writer:
        offset = 0
        for clip in clips:
            at = offset
            for block in clip.read():
                writer.write(at, block, source=clip.name)
                at += len(block)
            if at - offset != clip.length:
                raise UserError(f"{clip.name}: read {at - offset} frames, expected {clip.length}")
            windows[clip.split].append(offset + np.asarray(clip.starts, dtype=np.int64))
            offset += clip.length
        meta = dict(meta, name=dest.name, kind="video", channels=channels, units=["intensity (0-1)"] * len(channels),
                    value_range=[0.0, 1.0], in_len=in_len, out_len=out_len, grid={"height": grid[0], "width": grid[1]},
                    clips={s: sum(1 for c in clips if c.split == s) for s in windows})
        return writer.finish({s: np.concatenate(w) if w else np.zeros(0, np.int64) for s, w in windows.items()}, meta)


def _strided_starts(length: int, window: int, stride: int) -> list[int]:
    return list(range(0, length - window + 1, stride))


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """[start, stop) index ranges of runs where numbers increase by exactly one."""
    runs, start = [], 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def _image_clip(split: str, paths: list[Path], starts: list[int], size: tuple[int, int], gray: bool,
                name: str) -> Clip:
    def read() -> Iterator[np.ndarray]:
        for i in range(0, len(paths), 64):
            yield np.stack([_load_image(p, size, gray) for p in paths[i: i + 64]])
    return Clip(split, len(paths), starts, read, name)


def _need_folder(root, name: str) -> Path:
    if root is None:
        raise UserError(f"{name} cannot be downloaded by svqbench; run `svqbench prepare {name} --from FOLDER` "
                        f"with the dataset in its published layout (docs/datasets.md)")
    root = Path(root[0] if isinstance(root, (list, tuple)) else root)
    if not root.is_dir():
        raise UserError(f"--from {root}: not a folder; {name} needs the dataset folder")
    return root


# ------------------------------------------------------------------------------------------------ KTH

KTH_ACTIONS = {"boxing": 30, "handclapping": 30, "handwaving": 30, "walking": 30, "jogging": 3, "running": 3}
KTH_PERSONS = {"train": range(1, 16), "val": range(16, 17), "test": range(17, 26)}


def prepare_kth(dest: Path, *, from_paths: list[Path] | None = None, progress: bool = True) -> Path:
    root = _need_folder(from_paths, "kth")
    if (root / "kth").is_dir() and not any((root / a).is_dir() for a in KTH_ACTIONS):
        root = root / "kth"
    in_len, out_len, size = 10, 20, (128, 128)
    split_of = {p: s for s, persons in KTH_PERSONS.items() for p in persons}
    clips: list[Clip] = []
    for action, stride in KTH_ACTIONS.items():
        folder = root / action
        if not folder.is_dir():
            raise UserError(f"{root}: no {action}/ folder; expected the KTH layout <action>/personNN_<action>_dN/image_XXXX.jpg")
        for video in sorted(p for p in folder.iterdir() if p.is_dir()):
            m = re.match(r"person(\d\d)_", video.name)
            if not m or int(m.group(1)) not in split_of:
                raise UserError(f"{video}: folder name should start with personNN_ (NN in 01..25)")
            frames = sorted(video.glob("image_*.jpg")) + sorted(video.glob("image_*.png"))
            numbers = [int(re.sub(r"\D", "", p.stem) or -1) for p in frames]
            order = np.argsort(numbers, kind="stable")
            frames, numbers = [frames[i] for i in order], [numbers[i] for i in order]
            for a, b in _runs(numbers):  # frame numbers with gaps are separate clips
                starts = _strided_starts(b - a, in_len + out_len, stride)
                clips.append(_image_clip(split_of[int(m.group(1))], frames[a:b], starts, size, True,
                                         f"{video}/image_{numbers[a]:04d}.."))
    meta = dict(description="KTH Action, grayscale 128 x 128, 10 -> 20 frames",
                splits={s: {"persons": [f"{p:02d}" for p in ps]} for s, ps in KTH_PERSONS.items()},
                sources=[{"folder": str(root)}])
    return _write_clips(dest, clips, channels=["gray"], grid=size, in_len=in_len, out_len=out_len, meta=meta)


# ---------------------------------------------------------------------------------------- KittiCaltech


def _hickle_node(f, path: Path):
    """The array in an open PredNet hickle file (hickle 2: the HDF5 dataset `data_0`)."""
    import h5py
    node = f
    while isinstance(node, h5py.Group):
        keys = list(node.keys())
        if not keys:
            raise UserError(f"{path}: empty hickle file")
        node = node["data_0"] if "data_0" in node else node["data"] if "data" in node else node[keys[0]]
    return node


def _open_hickle(path: Path):
    import h5py
    if not path.exists():
        raise UserError(f"{path} not found; kitticaltech needs PredNet's kitti_hkl files (X_train.hkl, ...)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: cannot be read as a hickle/HDF5 file ({e}); truncated or corrupt") from None


def _kitti_clips(folder: Path, split: str, mode: str, window: int) -> list[Clip]:
    frames_file, sources_file = folder / f"X_{mode}.hkl", folder / f"sources_{mode}.hkl"
    with _open_hickle(frames_file) as f:
        shape = _hickle_node(f, frames_file).shape
    if len(shape) != 4 or shape[1:] != (128, 160, 3):
        raise UserError(f"{frames_file}: frames have shape {shape}, expected (N, 128, 160, 3)")
    with _open_hickle(sources_file) as f:
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in _hickle_node(f, sources_file)[()]]
    if len(names) != shape[0] or not names:
        raise UserError(f"{sources_file}: {len(names)} sources for {shape[0]} frames in {frames_file.name}")
    clips = []
    bounds = [0] + [i for i in range(1, len(names)) if names[i] != names[i - 1]] + [len(names)]
    for a, b in zip(bounds, bounds[1:]):
        def read(a=a, b=b) -> Iterator[np.ndarray]:
            with _open_hickle(frames_file) as f:
                frames = _hickle_node(f, frames_file)
                for i in range(a, b, 256):
                    yield np.asarray(frames[i: min(b, i + 256)], dtype=np.uint8).transpose(0, 3, 1, 2)
        clips.append(Clip(split, b - a, _strided_starts(b - a, window, window), read, f"{frames_file}:{names[a]}"))
    return clips


def _crop_resize(im, size: tuple[int, int]) -> np.ndarray:
    """PredNet's process_im: scale to the target height keeping aspect, centre-crop the width."""
    from PIL import Image
    h, w = size
    im = im.convert("RGB")
    new_w = int(round(im.size[0] * h / im.size[1]))
    im = im.resize((new_w, h), Image.BILINEAR)
    left = (new_w - w) // 2
    return np.asarray(im.crop((left, 0, left + w, h)), dtype=np.uint8).transpose(2, 0, 1)


def _seq_jpegs(path: Path) -> list[bytes]:
    """Frames of a Caltech Norpix .seq file: the JPEG images it holds, in order."""
    data = path.read_bytes()
    starts = [m.start() for m in re.finditer(b"\xff\xd8\xff", data)]
    if not starts:
        raise UserError(f"{path}: no JPEG frames found; not a Caltech .seq file or corrupt")
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]


def _caltech_clips(folder: Path, window: int, size: tuple[int, int]) -> list[Clip]:
    from PIL import Image
    clips = []
    sets = [folder / f"set{i:02d}" for i in range(6, 11)]
    present = [s for s in sets if s.is_dir()]
    if not present:
        raise UserError(f"{folder}: no set06..set10 folders; expected caltech/setNN/VNNN.seq (or VNNN/ frame folders)")
    for s in present:
        for video in sorted(s.iterdir()):
            if video.suffix == ".seq":
                count = len(_seq_jpegs(video)[2::3])  # every 3rd frame, as OpenSTL

                def read(video=video) -> Iterator[np.ndarray]:
                    blobs = _seq_jpegs(video)[2::3]
                    for i in range(0, len(blobs), 64):
                        out = []
                        for blob in blobs[i: i + 64]:
                            try:
                                out.append(_crop_resize(Image.open(io.BytesIO(blob)), size))
                            except OSError as e:
                                raise UserError(f"{video}: a frame cannot be decoded ({e})") from None
                        yield np.stack(out)
            elif video.is_dir():
                images = sorted(p for p in video.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[2::3]
                count = len(images)

                def read(images=images) -> Iterator[np.ndarray]:
                    for i in range(0, len(images), 64):
                        batch = []
                        for p in images[i: i + 64]:
                            try:
                                with Image.open(p) as im:
                                    batch.append(_crop_resize(im, size))
                            except OSError as e:
                                raise UserError(f"{p}: cannot be read as an image ({e})") from None
                        yield np.stack(batch)
            else:
                continue
            if count:
                clips.append(Clip("test", count, _strided_starts(count, window, window), read, str(video)))
    return clips


def prepare_kitticaltech(dest: Path, *, from_paths: list[Path] | None = None, progress: bool = True) -> Path:
    root = _need_folder(from_paths, "kitticaltech")
    kitti = root / "kitti_hkl" if (root / "kitti_hkl").is_dir() else root
    caltech = root / "caltech" if (root / "caltech").is_dir() else root
    in_len, out_len, size = 10, 1, (128, 160)
    window = in_len + out_len
    clips = (_kitti_clips(kitti, "train", "train", window) + _kitti_clips(kitti, "val", "val", window)
             + _caltech_clips(caltech, window, size))
    meta = dict(description="KITTI (train, val) -> Caltech Pedestrian (test), RGB 128 x 160, 10 -> 1 frames",
                splits={"train": {"source": "kitti_hkl/X_train.hkl"}, "val": {"source": "kitti_hkl/X_val.hkl"},
                        "test": {"source": "caltech set06-set10, every 3rd frame"}},
                sources=[{"folder": str(root)}])
    return _write_clips(dest, clips, channels=["red", "green", "blue"], grid=size, in_len=in_len,
                        out_len=out_len, meta=meta)


# ------------------------------------------------------------------------------------------- Human3.6M

H36M_STEP = 5


def prepare_human36m(dest: Path, *, from_paths: list[Path] | None = None, progress: bool = True) -> Path:
    root = _need_folder(from_paths, "human36m")
    if (root / "human").is_dir() and not (root / "train.txt").exists():
        root = root / "human"
    in_len, out_len, size = 4, 4, (256, 256)
    length = in_len + out_len
    lists = {}
    for part in ("train", "test"):
        path = root / f"{part}.txt"
        if not path.exists():
            raise UserError(f"{root}: no {part}.txt; expected human/{{train,test}}.txt and human/images/")
        entries = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split(",")
            try:
                entries.append((fields[0].strip(), int(fields[1])))
            except (IndexError, ValueError):
                raise UserError(f"{path}:{lineno}: expected `images/<video>_,<first frame>`, got {line!r}") from None
        lists[part] = entries
    train_videos = sorted({v for v, _ in lists["train"]})
    val_videos = set(train_videos[::20])
    # A track holds the frames of one video with the same residue modulo the step, so every window
    # (first, first + 5, ..., first + 35) is a contiguous run in storage.
    tracks: dict[tuple[str, str, int], set[int]] = {}
    firsts: dict[tuple[str, str, int], list[int]] = {}
    for part, entries in lists.items():
        for video, first in entries:
            split = "test" if part == "test" else "val" if video in val_videos else "train"
            key = (split, video, first % H36M_STEP)
            tracks.setdefault(key, set()).update(range(first, first + length * H36M_STEP, H36M_STEP))
            firsts.setdefault(key, []).append(first)
    clips = []
    for key in sorted(tracks):
        split, video, _ = key
        numbers = sorted(tracks[key])
        position = {n: i for i, n in enumerate(numbers)}
        paths = [root / f"{video}{n:06d}.jpg" for n in numbers]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UserError(f"{missing[0]} not found (listed in {'test' if split == 'test' else 'train'}.txt); "
                            f"{len(missing)} frame(s) of {video} missing")
        starts = sorted(position[f] for f in firsts[key])
        clips.append(_image_clip(split, paths, starts, size, False, f"{root / video}*"))
    meta = dict(description="Human3.6M, RGB 256 x 256, 4 -> 4 frames, 5 frames apart",
                splits={"train": {"list": "train.txt", "videos": len(train_videos) - len(val_videos)},
                        "val": {"list": "train.txt", "videos": len(val_videos), "rule": "every 20th video by name"},
                        "test": {"list": "test.txt"}},
                frame_step=H36M_STEP, sources=[{"folder": str(root)}])
    return _write_clips(dest, clips, channels=["red", "green", "blue"], grid=size, in_len=in_len,
                        out_len=out_len, meta=meta)


_VIDEO_PAPER = PAPER_BASE | PAPER_VIDEO
KTH = DatasetSpec(
    "kth", prepare_kth,
    scales(_VIDEO_PAPER | dict(backbone="incepu", lr=5e-4, schedule="onecycle", warmup_epochs=0), n_s=4),
    ForecastShape(10, 20, 1, 128, 128), "KTH human actions, 128 x 128 gray, 10 -> 20 frames (--from the jpg folders)")
KITTICALTECH = DatasetSpec(
    "kitticaltech", prepare_kitticaltech,
    scales(_VIDEO_PAPER | dict(backbone="gsta", lr=1.25e-3, drop_path=0.2, schedule="onecycle"), n_s=4),
    ForecastShape(10, 1, 3, 128, 160), "KITTI (train) and Caltech Pedestrian (test), 128 x 160 RGB, 10 -> 1 frames")
HUMAN36M = DatasetSpec(
    "human36m", prepare_human36m,
    scales(_VIDEO_PAPER | dict(backbone="gsta", hid_t=512, n_s=4, codebook_size=10000, lr=2.5e-4, warmup_epochs=0,
                               epochs=50), n_s=6),  # quick: 256 px -> 32
    ForecastShape(4, 4, 3, 256, 256), "Human3.6M, 256 x 256 RGB, frame step 5, 4 -> 4 frames")
