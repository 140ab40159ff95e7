"""Model construction: a RunConfig and a forecast shape -> SimVP with its translator and quantizer.

`build_model` is the one place a model is made from a config (training, evaluation, analysis,
profile, a saved run); the modules in this package hold the layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ForecastShape:
    """What the model sees: in_len input frames -> out_len output frames of (channels, height, width)."""
    in_len: int
    out_len: int
    channels: int
    height: int
    width: int

    @classmethod
    def of(cls, ds) -> "ForecastShape":
        """The shape of a prepared dataset."""
        h, w = ds.grid
        return cls(ds.in_len, ds.out_len, len(ds.channels), h, w)


def build_model(cfg, shape: "ForecastShape | Any", **overrides: Any):
    """SimVP for `cfg` (a RunConfig) on `shape` (a ForecastShape or a prepared dataset)."""
    from svqbench.models.simvp import SimVP
    from svqbench.quantizers import quantizer_kwargs
    if not isinstance(shape, ForecastShape):
        shape = ForecastShape.of(shape)
    return SimVP(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
                 width=shape.width, hid_s=cfg.hid_s, hid_t=cfg.hid_t, n_s=cfg.n_s, n_t=cfg.n_t,
                 backbone=cfg.backbone, mlp_ratio=cfg.mlp_ratio, drop_path=cfg.drop_path,
                 quantizer=cfg.quantizer, quantizer_kwargs=quantizer_kwargs(cfg), placement=cfg.placement,
                 **overrides)
