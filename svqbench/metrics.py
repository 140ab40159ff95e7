"""Forecast metrics as small pure functions and one streaming accumulator.

Conventions (named so nobody confuses them):
- `*_per_pixel`: mean over every sample, lead time, channel and grid cell (OpenSTL weather), in
  physical units.
- `rmse_latweighted`: WeatherBench's score, sqrt of the mean squared error weighted by
  cos(lat) / mean(cos(lat)) over the grid rows.
Per-lead-time curves keep one value per forecast step.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def latitude_weights(lat_degrees: np.ndarray) -> np.ndarray:
    """cos(lat) / mean(cos(lat)) for each grid row."""
    w = np.cos(np.deg2rad(np.asarray(lat_degrees, dtype=np.float64)))
    return w / w.mean()


def mse_per_pixel(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - true) ** 2))


def mae_per_pixel(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - true)))


def rmse_latweighted(pred: np.ndarray, true: np.ndarray, lat_degrees: np.ndarray) -> float:
    """pred/true (..., H, W) with H rows at `lat_degrees`."""
    w = latitude_weights(lat_degrees)[:, None]
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - true) ** 2 * w)))


class ErrorAccumulator:
    """Streams (B, T, C, H, W) forecasts and truths in physical units; memory does not grow with data."""

    def __init__(self, out_len: int, lat_degrees: np.ndarray | None = None):
        self.sq = torch.zeros(out_len, dtype=torch.float64)
        self.abs = torch.zeros(out_len, dtype=torch.float64)
        self.sq_lat = torch.zeros(out_len, dtype=torch.float64)
        self.count = torch.zeros(out_len, dtype=torch.float64)
        self.lat_w = None if lat_degrees is None else torch.from_numpy(latitude_weights(lat_degrees))

    @torch.no_grad()
    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        err = pred.double() - true.double()
        dims = (0, 2, 3, 4)
        self.sq += (err ** 2).sum(dims)
        self.abs += err.abs().sum(dims)
        if self.lat_w is not None:
            self.sq_lat += ((err ** 2) * self.lat_w[:, None]).sum(dims)
        self.count += err[:, 0].numel()

    def result(self) -> dict:
        if self.count.sum() == 0:
            raise ValueError("no samples were accumulated")
        n = self.count.sum()
        out = {
            "mse_per_pixel": float(self.sq.sum() / n),
            "mae_per_pixel": float(self.abs.sum() / n),
            "rmse_per_pixel": math.sqrt(float(self.sq.sum() / n)),
            "mse_per_pixel_by_lead": (self.sq / self.count).tolist(),
            "mae_per_pixel_by_lead": (self.abs / self.count).tolist(),
        }
        if self.lat_w is not None:
            out["rmse_latweighted"] = math.sqrt(float(self.sq_lat.sum() / n))
            out["rmse_latweighted_by_lead"] = (self.sq_lat / self.count).sqrt().tolist()
        return out
