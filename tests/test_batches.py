"""The training data path: device-resident and prefetched host batches are the very tensors the numpy
path makes (global and window normalisation, input frames, masks, uint8 frames), in the same order."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from svqbench.data import batches as batches_module
from svqbench.data.batches import Loader, chunks, normalise_tensors, read_batch, resident, split_positions, to_tensors
from svqbench.data.prepared import PreparedDataset, PreparedWriter
from svqbench.distributed import DistContext
from svqbench.errors import UserError

N, C, H, W, IN, OUT = 48, 2, 6, 10, 4, 3
WINDOWS = {"train": np.arange(0, 25), "val": np.arange(26, 36), "test": np.arange(36, N - IN - OUT + 1)}


def make(path, *, inputs: bool = False, mask: bool = False, uint8: bool = False) -> PreparedDataset:
    rng = np.random.default_rng(3)
    frames = (250 + 40 * rng.random((N, C, H, W))).astype(np.float32)
    kw = {}
    if uint8:
        frames = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
        kw = dict(dtype="uint8", frame_scale=1 / 255)
    meta = dict(name=path.name, channels=["a", "b"], units=["K", "K"], in_len=IN, out_len=OUT)
    valid = None
    if mask:
        valid = np.ones((H, W), dtype=bool)
        valid[0, :3] = valid[4, 7:] = False
    with PreparedWriter(path, N, C, (H, W), **kw) as w:
        w.write(0, frames)
        if inputs:  # noisy observations of the same frames, as the synthetic benchmark stores them
            noisy = (255 - frames) if uint8 else (frames + rng.normal(0, 2, frames.shape)).astype(np.float32)
            np.save(w.tmp / "inputs.npy", noisy)
            meta["input_frames"] = "inputs.npy"
        w.finish(WINDOWS, meta, mask=valid)
    return PreparedDataset(path)


VARIANTS = {"plain": {}, "inputs": {"inputs": True}, "mask": {"mask": True},
            "inputs+mask": {"inputs": True, "mask": True}, "uint8": {"uint8": True},
            "uint8+inputs": {"uint8": True, "inputs": True}}


@pytest.fixture(scope="module", params=list(VARIANTS))
def ds(request, tmp_path_factory) -> PreparedDataset:
    return make(tmp_path_factory.mktemp("ds") / request.param, **VARIANTS[request.param])


def _reference(ds, split, positions, norm):
    """The numpy path (what evaluation and the previous training loop use)."""
    x, y, _ = to_tensors(ds, read_batch(ds, split, positions), norm, torch.device("cpu"))
    return x, y


@pytest.mark.parametrize("norm", ["global", "window"])
def test_device_resident_and_prefetched_batches_equal_the_numpy_path(ds, norm):
    order = np.random.default_rng(0).permutation(len(ds.splits["train"]))
    slices = chunks(len(order), 4)[:-1] + [(20, 25), (3, 4)]  # any slices, incl. overlapping and single windows
    device = Loader(ds, norm, torch.device("cpu"), on_device=True)
    host = Loader(ds, norm, torch.device("cpu"), on_device=False, prefetch=2)
    got_device = list(device.batches("train", order, slices))
    got_host = list(host.batches("train", order, slices))
    assert len(got_device) == len(got_host) == len(slices)
    for (a, b), (xd, yd), (xh, yh) in zip(slices, got_device, got_host):
        xr, yr = _reference(ds, "train", order[a:b], norm)
        assert xd.dtype == torch.float32 and xd.shape == (b - a, IN, C, H, W) and yd.shape == (b - a, OUT, C, H, W)
        for got in (xd, xh):
            assert torch.equal(got, xr)  # bit-identical, not just close
        for got in (yd, yh):
            assert torch.equal(got, yr)


def test_validation_split_batches_equal_the_numpy_path(ds):
    for dist in (DistContext(), DistContext(rank=1, world_size=3)):
        for limit in (0, 5):
            positions = split_positions(ds, "val", dist, limit=limit)
            loader = Loader(ds, "window", torch.device("cpu"), on_device=True)
            got = list(loader.split("val", 3, dist, limit=limit))
            assert sum(len(x) for x, _ in got) == len(positions)
            for (a, b), (x, y) in zip(chunks(len(positions), 3), got):
                xr, yr = _reference(ds, "val", positions[a:b], "window")
                assert torch.equal(x, xr) and torch.equal(y, yr)


def test_input_frames_feed_the_inputs_and_frames_the_targets(tmp_path):
    ds = make(tmp_path / "noisy", inputs=True)
    inputs, frames = np.load(tmp_path / "noisy" / "inputs.npy"), np.load(tmp_path / "noisy" / "frames.npy")
    assert not np.array_equal(inputs, frames)
    batch = read_batch(ds, "test", np.array([2, 0]))
    for row, i in enumerate([2, 0]):
        s = ds.splits["test"][i]
        np.testing.assert_array_equal(batch.x[row], inputs[s: s + IN])
        np.testing.assert_array_equal(batch.y[row], frames[s + IN: s + IN + OUT])
    x, y = ds.window("test", 2)
    np.testing.assert_array_equal(x, batch.x[0])
    np.testing.assert_array_equal(y, batch.y[0])
    first = next(ds.batches("test", 2))
    np.testing.assert_array_equal(first.x[0], inputs[ds.splits["test"][0]: ds.splits["test"][0] + IN])
    xd, yd = next(Loader(ds, "global", torch.device("cpu"), on_device=True).batches("test", np.array([2]), [(0, 1)]))
    expected = (inputs[ds.splits["test"][2]: ds.splits["test"][2] + IN] - ds.mean[:, None, None]) / ds.std[:, None, None]
    np.testing.assert_array_equal(xd[0].numpy(), expected.astype(np.float32))


def test_bad_input_frames_are_refused(tmp_path):
    make(tmp_path / "bad", inputs=True)
    np.save(tmp_path / "bad" / "inputs.npy", np.zeros((N, C, H, W + 1), dtype=np.float32))
    with pytest.raises(UserError, match="does not match frames.npy"):
        PreparedDataset(tmp_path / "bad").window("train", 0)
    meta = json.loads((tmp_path / "bad" / "meta.json").read_text())
    (tmp_path / "bad" / "meta.json").write_text(json.dumps(dict(meta, input_frames="../elsewhere.npy")))
    with pytest.raises(UserError, match="must be a file name"):
        PreparedDataset(tmp_path / "bad").input_frames


def test_mask_is_on_the_device_with_its_valid_cell_count(tmp_path):
    ds = make(tmp_path / "m", mask=True)
    loader = Loader(ds, "global", torch.device("cpu"), on_device=True)
    assert loader.mask.dtype == torch.bool and loader.mask.shape == (H, W)
    assert loader.valid_cells == H * W - 6 and torch.equal(loader.mask, torch.from_numpy(ds.mask))
    plain = Loader(make(tmp_path / "p"), "global", torch.device("cpu"), on_device=True)
    assert plain.mask is None and plain.valid_cells == 0


@pytest.mark.parametrize("shape", [(16, 24, 1, 32, 64), (16, 20, 1, 37, 49), (3, 6, 2, 5, 7)])
def test_normalise_tensors_is_bit_identical_to_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    frames = (280 + 30 * rng.standard_normal(shape)).astype(np.float32)
    t_in = shape[1] // 2
    mean = (270 + rng.random(shape[2])).astype(np.float32)
    std = (5 + rng.random(shape[2])).astype(np.float32)

    class Stats:  # PreparedDataset.normalise reads only these
        pass
    stats = Stats()
    stats.mean, stats.std = mean, std
    from svqbench.data.prepared import Batch
    batch = Batch(frames[:, :t_in], frames[:, t_in:], np.arange(shape[0]))
    for mode in ("global", "window"):
        xn, yn, on = PreparedDataset.normalise(stats, batch, mode)
        x = torch.from_numpy(frames)
        xt, yt, ot = normalise_tensors(x[:, :t_in], x[:, t_in:], torch.from_numpy(mean)[:, None, None],
                                       torch.from_numpy(std)[:, None, None], mode)
        assert np.array_equal(xt.numpy(), xn) and np.array_equal(yt.numpy(), yn) and np.array_equal(ot.numpy(), on)


def test_prefetching_thread_stops_when_the_consumer_stops_and_passes_errors_on(tmp_path):
    ds = make(tmp_path / "t")
    loader = Loader(ds, "global", torch.device("cpu"), on_device=False, prefetch=1)
    it = loader.batches("train", np.arange(25), chunks(25, 2))
    next(it)
    assert any(t.name == "svqbench-prefetch" for t in threading.enumerate())
    it.close()
    assert not any(t.name == "svqbench-prefetch" for t in threading.enumerate())
    bad = loader.batches("train", np.arange(30), [(0, 2), (24, 30)])  # positions past the split
    next(bad)
    with pytest.raises(IndexError):
        next(bad)
    assert not any(t.name == "svqbench-prefetch" for t in threading.enumerate())


def test_data_on_device_decision(tmp_path, monkeypatch):
    ds = make(tmp_path / "d")
    cpu = torch.device("cpu")
    assert resident(ds, cpu, "auto") and resident(ds, cpu, "yes") and not resident(ds, cpu, "no")
    monkeypatch.setattr(batches_module, "DEVICE_FRACTION", 0.0)  # nothing fits: auto takes the host path
    assert not resident(ds, cpu, "auto") and resident(ds, cpu, "yes")
    with pytest.raises(UserError, match="data-on-device"):
        resident(ds, cpu, "always")


def test_data_on_device_counts_the_memory_limit_like_the_memory_check(tmp_path, monkeypatch):
    """`auto` asks memory.available_memory (MemAvailable, the cgroup's room, SVQBENCH_MEMORY_LIMIT), the
    figure the batch check uses: frames over half the user's cap stay on the host."""
    from svqbench import memory
    ds = make(tmp_path / "d")
    need = batches_module.data_bytes(ds)
    monkeypatch.setenv(memory.LIMIT_ENV, repr(1.5 * need / 2**30))  # half of it is less than the frames
    batches_module.free_memory.cache_clear()
    try:
        assert not resident(ds, torch.device("cpu"), "auto")
        monkeypatch.setenv(memory.LIMIT_ENV, repr(3 * need / 2**30))
        batches_module.free_memory.cache_clear()
        assert resident(ds, torch.device("cpu"), "auto")
    finally:
        batches_module.free_memory.cache_clear()
