"""Forecast metrics: small pure functions and streaming accumulators, each named with its convention.

Conventions (named so nobody confuses them):
- `*_per_pixel`: mean over every sample, lead time, channel and grid cell (OpenSTL weather), in
  physical units.
- `*_per_frame`: mean over samples and lead times of the SUM over C x H x W of one frame (OpenSTL
  video/traffic; Human3.6M's MAE 1441 is ~0.0073 per pixel). `rmse_per_frame` is the square root
  of `mse_per_frame`, and `rmse_per_pixel` of `mse_per_pixel`, as in OpenSTL.
- `rmse_latweighted`: WeatherBench's score, the square root of the mean squared error weighted by
  cos(lat) / mean(cos(lat)) over the grid rows (mean over samples, lead times and the grid, as
  WeatherBench's `compute_weighted_rmse` over all dimensions). `mae_latweighted` and
  `bias_latweighted` weight the same way. A 2-D latitude (curvilinear grid) weights every cell by
  cos(lat2d) / mean over valid cells of cos(lat2d); without latitudes nothing is latitude-weighted.
- `bias_per_pixel`: mean of forecast minus truth (positive = too high), per pixel like the MSE.
- `rmse_mean_over_channels`: the mean over channels of each channel's RMSE (the reference code's
  multi-variable number), beside `rmse_per_pixel` = sqrt of the MSE averaged over all channels.
- `acc_latweighted` (`acc_unweighted` without latitudes): WeatherBench 2's anomaly correlation.
  Anomalies against the train climatology c (per channel and cell): f' = pred - c, o' = true - c;
  for every forecast (window, lead time, channel) sum(w f' o') / sqrt(sum(w f'^2) sum(w o'^2)) over
  the (valid) grid, uncentered, w the latitude weights (1 without latitudes); then the mean over
  forecasts. A forecast with no anomaly (f' = 0 everywhere, e.g. the climatology itself) has no
  ACC and is left out; if no forecast has one the value is None. The climatology is static (one
  map) or seasonal (a map per window and lead, given to `update`): svqbench.climatology.
- Regions (svqbench.regions): `<metric>_<region>` for rmse_latweighted and acc_latweighted
  (rmse_per_pixel and acc_unweighted without latitudes), overall and `_by_lead`; within a region
  each cell is weighted by the region's WeatherBench 2 weights (cos(lat) normalised over the
  region's valid cells), so a region's RMSE is sqrt(mean over forecasts of sum(w e^2) / sum(w)).
- Masks ((H, W), True = valid cell): every per-pixel sum runs over valid cells only and counts them.
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


def cell_weights(grid: tuple[int, int], *, lat: np.ndarray | None = None, lat2d: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> np.ndarray | None:
    """(H, W) latitude weights, cos(lat) / mean over the valid cells of cos(lat), 0 at masked cells;
    None without a latitude (pixel indices, metres: nothing to weight by). `lat2d` (H, W) wins over
    the rows' `lat` (H,)."""
    h, w = grid
    if lat2d is not None:
        cos = np.cos(np.deg2rad(np.asarray(lat2d, dtype=np.float64)))
    elif lat is not None:
        cos = np.broadcast_to(np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64)))[:, None], (h, w))
    else:
        return None
    if cos.shape != (h, w):
        raise ValueError(f"latitudes of shape {cos.shape} do not fit the grid {(h, w)}")
    valid = np.ones((h, w), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return np.where(valid, cos / cos[valid].mean(), 0.0)


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
    """MSE/MAE/RMSE per pixel (and per frame), lat-weighted RMSE, per lead time and channel; for
    weather (per_frame False) also the bias, the channel-mean RMSE, lat-weighted MAE and bias, and
    the anomaly correlation (ACC) when a climatology is given.

    Streams (B, T, C, H, W) forecasts and truths in physical units; memory does not grow with data
    (except the two numbers per window kept with `keep_windows`). Latitude weights come from the
    rows' `lat_degrees` (H,) or the cells' `lat2d` (H, W); `mask` (H, W, True = valid) restricts
    every sum to the valid cells and counts only them.
    """
    summed_fields = ("sq", "abs", "err", "sq_lat", "abs_lat", "err_lat", "acc_sum", "acc_count", "pixels", "frames",
                     "frame_values", "sq_region", "acc_sum_region",
                     "acc_count_region")  # additive state (distributed.reduce_accumulator)

    def __init__(self, out_len: int, lat_degrees: np.ndarray | None = None, *, per_frame: bool = False,
                 lat2d: np.ndarray | None = None, mask: np.ndarray | None = None,
                 climatology: np.ndarray | None = None, keep_windows: bool = False,
                 regions: dict[str, np.ndarray] | None = None):
        """`climatology` (C, H, W): a static climatology for ACC (a seasonal one goes to `update`);
        `regions`: name -> (H, W) region weights (svqbench.regions.region_weights), weather only."""
        self.out_len, self.per_frame, self.keep_windows = out_len, per_frame, keep_windows
        self.lat_w = None if lat_degrees is None else torch.from_numpy(latitude_weights(lat_degrees))
        self.mask = None if mask is None or np.asarray(mask).all() else torch.from_numpy(np.asarray(mask, dtype=bool))
        self.valid = None if self.mask is None else self.mask.double()
        self.valid_cells = None if self.mask is None else int(self.mask.sum())
        if lat2d is not None or (lat_degrees is not None and self.mask is not None):
            grid = tuple((lat2d if lat2d is not None else self.mask).shape)
            self.w = torch.from_numpy(cell_weights(grid, lat=lat_degrees, lat2d=lat2d,
                                                   mask=None if self.mask is None else self.mask.numpy()))
        else:  # rows only: (H, 1) broadcast, the very numbers of the unmasked 1-D case
            self.w = None if self.lat_w is None else self.lat_w[:, None]
        self.climatology = None if climatology is None else torch.from_numpy(np.asarray(climatology, np.float64))
        self.acc_scored = climatology is not None  # a climatology came with the construction or any update
        self.sq = self.abs = self.err = None       # (T, C) sums, allocated at the first batch
        self.sq_lat = self.abs_lat = self.err_lat = None
        self.acc_sum = self.acc_count = None       # (T, C): sum of per-forecast ACCs, forecasts that have one
        self.pixels = 0                            # (valid) cells per lead time and channel
        self.frames = 0                            # per lead time
        self.frame_values = 0                      # frames x C x H x W, per lead time
        self.window_sq, self.window_abs = [], []   # per window (keep_windows): sums over T x C x valid cells
        self.region_names = list(regions or {})
        self.region_w = None if not self.region_names else torch.from_numpy(
            np.stack([np.asarray(regions[r], np.float64).reshape(-1) for r in self.region_names]).T.copy())  # (HW, R)
        self.region_cells = None if self.region_w is None else (self.region_w > 0).sum(0).double()  # (R,)
        self.sq_region = self.acc_sum_region = self.acc_count_region = None  # (T, C, R)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor, climatology: torch.Tensor | None = None) -> None:
        """`climatology`: the climatology at every target frame, (B, T, C, H, W) like `true`
        (a seasonal one); None uses the static one given at construction."""
        if pred.shape != true.shape or pred.dim() != 5 or pred.shape[1] != self.out_len:
            raise ValueError(f"expected pred and true of shape (B, {self.out_len}, C, H, W), "
                             f"got {tuple(pred.shape)} and {tuple(true.shape)}")
        b, t, c, h, w = pred.shape
        if self.mask is not None and tuple(self.mask.shape) != (h, w):
            raise ValueError(f"mask of shape {tuple(self.mask.shape)} does not fit frames of {h} x {w}")
        if self.sq is None:
            self.sq, self.abs, self.err = (torch.zeros(t, c, dtype=torch.float64) for _ in range(3))
            self.sq_lat, self.abs_lat, self.err_lat = (torch.zeros(t, c, dtype=torch.float64) for _ in range(3))
            self.acc_sum, self.acc_count = (torch.zeros(t, c, dtype=torch.float64) for _ in range(2))
            if self.region_w is not None:
                self.sq_region, self.acc_sum_region, self.acc_count_region = (
                    torch.zeros(t, c, len(self.region_names), dtype=torch.float64) for _ in range(3))
        if climatology is not None and tuple(climatology.shape) != tuple(pred.shape):
            raise ValueError(f"climatology of shape {tuple(climatology.shape)} does not fit forecasts of shape "
                             f"{tuple(pred.shape)}")
        weather = not self.per_frame
        self.acc_scored = self.acc_scored or (weather and climatology is not None)
        regions = weather and self.region_w is not None
        for i in range(b):  # one sample at a time: ~6x faster than whole batches (cache), same sums
            err = pred[i].double() - true[i].double()
            if self.valid is not None:
                err.mul_(self.valid)  # masked cells contribute nothing
            sq = err.square()
            if regions:  # before sq is weighted in place below
                self.sq_region += sq.reshape(t, c, h * w) @ self.region_w
            sq_sum, abs_err = sq.sum((2, 3)), err.abs()
            abs_sum = abs_err.sum((2, 3))
            self.sq += sq_sum
            self.abs += abs_sum
            if self.keep_windows:
                self.window_sq.append(float(sq_sum.sum()))
                self.window_abs.append(float(abs_sum.sum()))
            if weather:
                self.err += err.sum((2, 3))
            if self.w is not None:
                if weather:
                    self.abs_lat += abs_err.mul_(self.w).sum((2, 3))
                    self.err_lat += (err * self.w).sum((2, 3))
                self.sq_lat += sq.mul_(self.w).sum((2, 3))
            clim = self.climatology if climatology is None else climatology[i].double()
            if weather and clim is not None:
                self._add_acc(pred[i].double(), true[i].double(), clim)
        self.pixels += b * (h * w if self.valid_cells is None else self.valid_cells)
        self.frames += b
        self.frame_values += b * c * h * w

    def _add_acc(self, pred: torch.Tensor, true: torch.Tensor, climatology: torch.Tensor) -> None:
        """Uncentered, weighted anomaly correlation of each (lead, channel) map of one window."""
        fa, oa = pred - climatology, true - climatology
        weight = self.w if self.w is not None else self.valid  # None: every cell counts once
        wfa = fa if weight is None else fa * weight
        cross, f2 = (wfa * oa).sum((2, 3)), (wfa * fa).sum((2, 3))
        o2 = (oa * oa if weight is None else oa * oa * weight).sum((2, 3))
        defined = (f2 > 0) & (o2 > 0)
        acc = cross / (f2 * o2).sqrt()
        self.acc_sum += torch.where(defined, acc, torch.zeros_like(acc))
        self.acc_count += defined.double()
        if self.region_w is not None:  # the same per region, with the region's weights: (T, C, R)
            t, c = fa.shape[:2]
            fa, oa = fa.reshape(t, c, -1), oa.reshape(t, c, -1)
            if self.valid is not None:  # masked cells carry no anomaly (their region weight is 0 too)
                valid = self.valid.reshape(-1)
                fa, oa = fa * valid, oa * valid
            cross, f2, o2 = (fa * oa) @ self.region_w, fa.square() @ self.region_w, oa.square() @ self.region_w
            defined = (f2 > 0) & (o2 > 0)
            acc = cross / (f2 * o2).sqrt()
            self.acc_sum_region += torch.where(defined, acc, torch.zeros_like(acc))
            self.acc_count_region += defined.double()

    def window_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """(mse, mae) per pixel of every window scored (keep_windows), in the order they came."""
        if not self.keep_windows:
            raise ValueError("this accumulator does not keep per-window errors (keep_windows=False)")
        if not self.frames:
            return np.zeros(0), np.zeros(0)
        values = self.out_len * self.sq.shape[1] * (self.pixels // self.frames)  # T x C x (valid) cells
        return np.asarray(self.window_sq) / values, np.asarray(self.window_abs) / values

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
        if self.w is not None:
            lat_lead_ch = self.sq_lat / n
            out["rmse_latweighted"] = math.sqrt(float(lat_lead_ch.mean()))
            out["rmse_latweighted_by_lead"] = lat_lead_ch.mean(1).sqrt().tolist()
            if channels > 1:
                out["rmse_latweighted_by_channel"] = lat_lead_ch.mean(0).sqrt().tolist()
        if not self.per_frame:
            out.update(self._weather_scores(mse_lead_ch, n))
        return out

    def _weather_scores(self, mse_lead_ch: torch.Tensor, n: int) -> dict:
        """Bias, channel-mean RMSE, lat-weighted MAE and bias, ACC; by lead, channel, lead x channel."""
        out: dict = {}
        channels = mse_lead_ch.shape[1]

        def add(name: str, lead_ch: torch.Tensor, *, root: bool = False) -> None:
            """`name` overall, by lead, and (several channels) by channel and by lead x channel, from a
            (T, C) table of per-pixel means; `root`: square roots of those means (RMSE)."""
            f = torch.sqrt if root else (lambda v: v)
            out[name] = math.sqrt(float(lead_ch.mean())) if root else float(lead_ch.mean())
            out[f"{name}_by_lead"] = f(lead_ch.mean(1)).tolist()
            if channels > 1:
                out[f"{name}_by_channel"] = f(lead_ch.mean(0)).tolist()
                out[f"{name}_by_lead_by_channel"] = f(lead_ch).tolist()

        add("bias_per_pixel", self.err / n)
        if channels > 1:
            out["rmse_per_pixel_by_channel"] = mse_lead_ch.mean(0).sqrt().tolist()
            out["rmse_per_pixel_by_lead_by_channel"] = mse_lead_ch.sqrt().tolist()
            # the reference code's multi-variable RMSE: each channel's RMSE, then their mean
            out["rmse_mean_over_channels"] = float(mse_lead_ch.mean(0).sqrt().mean())
            out["rmse_mean_over_channels_by_lead"] = mse_lead_ch.sqrt().mean(1).tolist()
        if self.w is not None:
            add("mae_latweighted", self.abs_lat / n)
            add("bias_latweighted", self.err_lat / n)
            if channels > 1:
                out["rmse_latweighted_by_lead_by_channel"] = (self.sq_lat / n).sqrt().tolist()
        if self.region_w is not None:
            rmse_name = "rmse_latweighted" if self.w is not None else "rmse_per_pixel"
            per_cell = self.sq_region / (self.frames * self.region_cells)  # (T, C, R) region-weighted means
            for r, region in enumerate(self.region_names):
                out[f"{rmse_name}_{region}"] = math.sqrt(float(per_cell[:, :, r].mean()))
                out[f"{rmse_name}_{region}_by_lead"] = per_cell[:, :, r].mean(1).sqrt().tolist()
        if self.acc_scored:
            name = "acc_latweighted" if self.w is not None else "acc_unweighted"

            def ratio(total: torch.Tensor, count: torch.Tensor):
                values = (total / count).tolist() if total.dim() else float(total / count)
                undefined = (count == 0).tolist() if count.dim() else bool(count == 0)
                if isinstance(values, float):
                    return None if undefined else values
                if values and isinstance(values[0], list):
                    return [[None if u else v for v, u in zip(row, urow)] for row, urow in zip(values, undefined)]
                return [None if u else v for v, u in zip(values, undefined)]

            out[name] = ratio(self.acc_sum.sum(), self.acc_count.sum())
            out[f"{name}_by_lead"] = ratio(self.acc_sum.sum(1), self.acc_count.sum(1))
            if channels > 1:
                out[f"{name}_by_channel"] = ratio(self.acc_sum.sum(0), self.acc_count.sum(0))
                out[f"{name}_by_lead_by_channel"] = ratio(self.acc_sum, self.acc_count)
            for r, region in enumerate(self.region_names):
                total, count = self.acc_sum_region[:, :, r], self.acc_count_region[:, :, r]
                out[f"{name}_{region}"] = ratio(total.sum(), count.sum())
                out[f"{name}_{region}_by_lead"] = ratio(total.sum(1), count.sum(1))
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
