"""Forecast metrics: small pure functions and streaming accumulators, each named with its convention.

Conventions (named so nobody confuses them):
- `*_per_pixel`: mean over every sample, lead time, channel and grid cell (OpenSTL weather), in
  physical units.
- `*_per_frame`: mean over samples and lead times of the SUM over C x H x W of one frame (OpenSTL
  video/traffic; Human3.6M's MAE 1441 is ~0.0073 per pixel). `rmse_per_frame` is the square root
  of `mse_per_frame`, and `rmse_per_pixel` of `mse_per_pixel`, as in OpenSTL.
- `rmse_latweighted`: WeatherBench's score, the square root of the mean squared error weighted by
  cos(lat) / mean(cos(lat)) over the grid rows (mean over samples, lead times and the grid, as
  WeatherBench's `compute_weighted_rmse` over all dimensions).
- `ssim`: skimage's `structural_similarity(data_range=1, channel_axis=...)` of each frame on
  [0, 1]-clipped data (7 x 7 uniform window, sample covariance, K1 0.01, K2 0.03), averaged over
  frames; computed here in torch float64 for whole batches at once.
- `psnr`: 20 log10(1 / sqrt(mse)) of each [0, 1]-clipped frame, averaged over frames. A frame with
  zero error would score +inf; its mse is floored at 1e-10 (100 dB) so averages stay finite.
- `lpips`: the `lpips` package, AlexNet v0.1, inputs mapped from [0, 1] to [-1, 1]; one-channel
  frames are repeated to three.
Every accumulator keeps one value per forecast step (`*_by_lead`); memory does not grow with data.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_MSE_FLOOR = 1e-10
LPIPS_MIN_SIDE = 32
# Frames scored together: small enough that SSIM's float64 intermediate maps stay in cache (on a
# 2-core machine this beat both larger batches and skimage's own per-frame loop).
FRAMES_PER_CHUNK = 2


def latitude_weights(lat_degrees: np.ndarray) -> np.ndarray:
    """cos(lat) / mean(cos(lat)) for each grid row."""
    w = np.cos(np.deg2rad(np.asarray(lat_degrees, dtype=np.float64)))
    return w / w.mean()


# ---- pure functions over arrays (..., C, H, W) -------------------------------------------------

def mse_per_pixel(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - true) ** 2))


def mae_per_pixel(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - true)))


def rmse_per_pixel(pred: np.ndarray, true: np.ndarray) -> float:
    return math.sqrt(mse_per_pixel(pred, true))


def _frame_size(a: np.ndarray) -> int:
    return int(np.prod(np.shape(a)[-3:]))


def mse_per_frame(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over frames of the sum over C x H x W of squared errors."""
    return mse_per_pixel(pred, true) * _frame_size(pred)


def mae_per_frame(pred: np.ndarray, true: np.ndarray) -> float:
    return mae_per_pixel(pred, true) * _frame_size(pred)


def rmse_per_frame(pred: np.ndarray, true: np.ndarray) -> float:
    return math.sqrt(mse_per_frame(pred, true))


def rmse_latweighted(pred: np.ndarray, true: np.ndarray, lat_degrees: np.ndarray) -> float:
    """pred/true (..., H, W) with H rows at `lat_degrees`."""
    w = latitude_weights(lat_degrees)[:, None]
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - true) ** 2 * w)))


def to_unit_range(frames: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Map [lo, hi] to [0, 1] and clip (float64)."""
    lo, hi = value_range
    x = frames.double()
    if (lo, hi) != (0.0, 1.0):
        x = (x - lo) / (hi - lo)
    return x.clamp(0.0, 1.0)


def _window_sums(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sum of every `size` consecutive entries along `dim` (valid positions only).

    Built from sums over 1, 2, 4, ... entries (binary decomposition of `size`): 4 adds for a
    window of 7 instead of 6.
    """
    length = x.shape[dim]
    n = length - size + 1
    blocks = {1: x}
    width = 1
    while width * 2 <= size:
        prev = blocks[width]
        m = prev.shape[dim] - width
        blocks[width * 2] = prev.narrow(dim, 0, m) + prev.narrow(dim, width, m)
        width *= 2
    total, offset = None, 0
    for width in sorted(blocks, reverse=True):
        if size - offset >= width:
            part = blocks[width].narrow(dim, offset, n)
            total = part.clone() if total is None else total.add_(part)
            offset += width
    return total


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over every size x size window lying fully inside (..., H, W) maps: (..., H-size+1, W-size+1).

    These are exactly the positions skimage keeps after cropping (size-1)//2 pixels per border, so
    its reflect padding never enters. Separable window sums: several times faster than avg_pool2d
    in float64 on CPU.
    """
    return _window_sums(_window_sums(x, size, x.dim() - 2), size, x.dim() - 1).mul_(1.0 / (size * size))


def ssim_per_frame(pred: torch.Tensor, true: torch.Tensor, *, frames_per_chunk: int = FRAMES_PER_CHUNK) -> torch.Tensor:
    """skimage SSIM (data_range=1, channel_axis) of each (C, H, W) frame in [0, 1]: shape (...,).

    float64 throughout (float32 drifts ~2e-6 from skimage on flat frames); frames are processed a
    few at a time so the intermediate maps stay in cache.
    """
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch {tuple(pred.shape)} vs {tuple(true.shape)}")
    *lead, c, h, w = pred.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW} x {SSIM_WINDOW}, got {h} x {w}")
    x_all, y_all = pred.reshape(-1, c, h, w), true.reshape(-1, c, h, w)
    cov_norm = SSIM_WINDOW ** 2 / (SSIM_WINDOW ** 2 - 1)  # sample covariance, skimage's default
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data_range 1
    out = []
    for i in range(0, x_all.shape[0], frames_per_chunk):
        x, y = x_all[i: i + frames_per_chunk].double(), y_all[i: i + frames_per_chunk].double()
        ux, uy, uxx, uyy, uxy = _box_mean(torch.stack([x, y, x * x, y * y, x * y]), SSIM_WINDOW)
        uxuy, ux2, uy2 = ux * uy, ux * ux, uy * uy
        # S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)), v* = cov_norm (u** - u* u*);
        # in place, since every op here is a full pass over memory
        den2 = uxx.add_(uyy).sub_(ux2).sub_(uy2).mul_(cov_norm).add_(c2)
        den1 = ux2.add_(uy2).add_(c1)
        num2 = uxy.sub_(uxuy).mul_(2 * cov_norm).add_(c2)
        num1 = uxuy.mul_(2).add_(c1)
        s = num1.mul_(num2).div_(den1.mul_(den2))
        # skimage averages each channel's map, then the channels: equal-size maps, so one mean
        out.append(s.mean(dim=(-3, -2, -1)))
    return torch.cat(out).reshape(lead)


def psnr_per_frame(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """20 log10(1 / sqrt(mse)) of each (C, H, W) frame in [0, 1]: shape (...,)."""
    mse = (pred.double() - true.double()).pow(2).flatten(-3).mean(-1)
    return 20 * torch.log10(1 / mse.clamp_min(PSNR_MSE_FLOOR).sqrt())


# ---- streaming accumulators over (B, T, C, H, W) batches ----------------------------------------

class ErrorAccumulator:
    """MSE/MAE/RMSE per pixel (and per frame), lat-weighted RMSE, per lead time and channel.

    Streams (B, T, C, H, W) forecasts and truths in physical units; memory does not grow with data.
    """
    summed_fields = ("sq", "abs", "sq_lat", "pixels", "frames", "frame_values")  # additive state (distributed.reduce_accumulator)

    def __init__(self, out_len: int, lat_degrees: np.ndarray | None = None, *, per_frame: bool = False):
        self.out_len, self.per_frame = out_len, per_frame
        self.lat_w = None if lat_degrees is None else torch.from_numpy(latitude_weights(lat_degrees))
        self.sq = self.abs = self.sq_lat = None    # (T, C) sums, allocated at the first batch
        self.pixels = 0                            # per lead time and channel
        self.frames = 0                            # per lead time
        self.frame_values = 0                      # frames x C x H x W, per lead time

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape or pred.dim() != 5 or pred.shape[1] != self.out_len:
            raise ValueError(f"expected pred and true of shape (B, {self.out_len}, C, H, W), "
                             f"got {tuple(pred.shape)} and {tuple(true.shape)}")
        b, t, c, h, w = pred.shape
        if self.sq is None:
            self.sq, self.abs, self.sq_lat = (torch.zeros(t, c, dtype=torch.float64) for _ in range(3))
        for i in range(b):  # one sample at a time: ~6x faster than whole batches (cache), same sums
            err = pred[i].double() - true[i].double()
            sq = err.square()
            self.sq += sq.sum((2, 3))
            self.abs += err.abs().sum((2, 3))
            if self.lat_w is not None:
                self.sq_lat += sq.mul_(self.lat_w[:, None]).sum((2, 3))
        self.pixels += b * h * w
        self.frames += b
        self.frame_values += b * c * h * w

    def result(self) -> dict:
        if not self.frames:
            raise ValueError("no samples were accumulated")
        n = self.pixels
        mse_lead_ch, mae_lead_ch = self.sq / n, self.abs / n      # (T, C) per-pixel means
        mse_lead, mae_lead = mse_lead_ch.mean(1), mae_lead_ch.mean(1)
        out = {
            "mse_per_pixel": float(mse_lead.mean()),
            "mae_per_pixel": float(mae_lead.mean()),
            "rmse_per_pixel": math.sqrt(float(mse_lead.mean())),
            "mse_per_pixel_by_lead": mse_lead.tolist(),
            "mae_per_pixel_by_lead": mae_lead.tolist(),
            "rmse_per_pixel_by_lead": mse_lead.sqrt().tolist(),
        }
        channels = mse_lead_ch.shape[1]
        if channels > 1:
            out["mse_per_pixel_by_channel"] = mse_lead_ch.mean(0).tolist()
            out["mae_per_pixel_by_channel"] = mae_lead_ch.mean(0).tolist()
        if self.per_frame:
            size = self.frame_values // self.frames  # C x H x W
            out.update({
                "mse_per_frame": out["mse_per_pixel"] * size,
                "mae_per_frame": out["mae_per_pixel"] * size,
                "rmse_per_frame": math.sqrt(out["mse_per_pixel"] * size),
                "mse_per_frame_by_lead": (mse_lead * size).tolist(),
                "mae_per_frame_by_lead": (mae_lead * size).tolist(),
            })
        if self.lat_w is not None:
            lat_lead_ch = self.sq_lat / n
            out["rmse_latweighted"] = math.sqrt(float(lat_lead_ch.mean()))
            out["rmse_latweighted_by_lead"] = lat_lead_ch.mean(1).sqrt().tolist()
            if channels > 1:
                out["rmse_latweighted_by_channel"] = lat_lead_ch.mean(0).sqrt().tolist()
        return out


class ImageQualityAccumulator:
    """SSIM and PSNR of every frame, mapped from `value_range` to [0, 1] and clipped, per lead time."""
    summed_fields = ("ssim", "psnr", "frames")  # additive state (distributed.reduce_accumulator)

    def __init__(self, out_len: int, value_range: tuple[float, float] = (0.0, 1.0)):
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.ssim = torch.zeros(out_len, dtype=torch.float64)
        self.psnr = torch.zeros(out_len, dtype=torch.float64)
        self.frames = 0   # per lead time

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        b, t = pred.shape[:2]
        pred, true = pred.reshape(b * t, *pred.shape[2:]), true.reshape(b * t, *true.shape[2:])
        ssim, psnr = torch.empty(b * t, dtype=torch.float64), torch.empty(b * t, dtype=torch.float64)
        for i in range(0, b * t, FRAMES_PER_CHUNK):  # a few frames at a time: everything stays in cache
            p = to_unit_range(pred[i: i + FRAMES_PER_CHUNK], self.value_range)
            y = to_unit_range(true[i: i + FRAMES_PER_CHUNK], self.value_range)
            ssim[i: i + FRAMES_PER_CHUNK] = ssim_per_frame(p, y)
            psnr[i: i + FRAMES_PER_CHUNK] = psnr_per_frame(p, y)
        self.ssim += ssim.reshape(b, t).sum(0)
        self.psnr += psnr.reshape(b, t).sum(0)
        self.frames += b

    def result(self) -> dict:
        if not self.frames:
            raise ValueError("no samples were accumulated")
        ssim, psnr = self.ssim / self.frames, self.psnr / self.frames
        return {"ssim": float(ssim.mean()), "psnr": float(psnr.mean()),
                "ssim_by_lead": ssim.tolist(), "psnr_by_lead": psnr.tolist()}


class LPIPSAccumulator:
    """LPIPS (AlexNet) of every frame per lead time; `model` from lpips_weights.build_lpips_alex."""
    summed_fields = ("total", "frames")  # additive state (distributed.reduce_accumulator)

    def __init__(self, out_len: int, model, *, value_range: tuple[float, float] = (0.0, 1.0),
                 device: torch.device = torch.device("cpu"), frames_per_call: int = 64):
        self.model, self.device, self.frames_per_call = model.to(device), device, frames_per_call
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.total = torch.zeros(out_len, dtype=torch.float64)
        self.frames = 0

    @staticmethod
    def check_applicable(channels: int, height: int, width: int) -> str | None:
        """None if LPIPS can score such frames, else the reason it cannot."""
        if channels not in (1, 3):
            return f"LPIPS needs 1 or 3 channels, the data have {channels}"
        if min(height, width) < LPIPS_MIN_SIDE:
            return f"LPIPS needs frames of at least {LPIPS_MIN_SIDE} px a side, the data are {height} x {width}"
        return None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        b, t, c, h, w = pred.shape
        reason = self.check_applicable(c, h, w)
        if reason:
            raise ValueError(reason)
        # [0, 1] -> [-1, 1]; float32 is what the network runs in
        p = (to_unit_range(pred, self.value_range) * 2 - 1).float().reshape(b * t, c, h, w)
        y = (to_unit_range(true, self.value_range) * 2 - 1).float().reshape(b * t, c, h, w)
        if c == 1:
            p, y = p.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        scores = torch.cat([self.model(p[i: i + self.frames_per_call].to(self.device),
                                       y[i: i + self.frames_per_call].to(self.device)).flatten().cpu()
                            for i in range(0, b * t, self.frames_per_call)])
        self.total += scores.double().reshape(b, t).sum(0)
        self.frames += b

    def result(self) -> dict:
        if not self.frames:
            raise ValueError("no samples were accumulated")
        lpips = self.total / self.frames
        return {"lpips": float(lpips.mean()), "lpips_by_lead": lpips.tolist()}
