"""Every recurrent model at tiny settings, shared by test_models.py and the test_model_*.py files."""
from __future__ import annotations

import torch

from svqbench.config import RunConfig, resolve
from svqbench.models import ForecastShape, build_model, model_spec

# Each model at tiny settings, on a frame that is not a multiple of its patch (every forecast is
# padded and cropped back): the OpenSTL recurrent cells at 4 hidden channels x 2 layers over the
# embedded quick preset, 3 -> 3 frames of two channels; MAU, PhyDNet, PredNet and DMVFN at their
# module's default quick preset, 3 -> 2 frames of one channel.
CELLS = ["convlstm", "predrnn", "predrnnpp", "predrnnv2", "mim", "e3dlstm"]
TINY = {**dict.fromkeys(CELLS, ForecastShape(in_len=3, out_len=3, channels=2, height=7, width=9)),
        "mau": ForecastShape(3, 2, 1, 9, 13),       # odd grid
        "phydnet": ForecastShape(3, 2, 1, 9, 14),   # not a multiple of its patch 4
        "prednet": ForecastShape(3, 2, 1, 9, 14),   # not a multiple of 4
        "dmvfn": ForecastShape(3, 2, 1, 9, 14)}     # not a multiple of 16


def tiny_model(model: str, **cli):
    """`model` at its TINY settings (training mode), `cli` over them; the same weights on every call."""
    torch.manual_seed(0)
    if model in CELLS:
        cfg = resolve(cli=dict(model=model, dataset="embedded", rnn_hidden=4, rnn_layers=2, **cli))
        return build_model(cfg, TINY[model])
    spec = model_spec(model)
    return spec.build(RunConfig(**{**spec.PRESETS["default"]["quick"], "quantizer": "none", **cli}), TINY[model])


def tiny_batch(model: str, seed: int):
    """(inputs, target) of two sequences on `model`'s TINY shape."""
    shape, g = TINY[model], torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, n, shape.channels, shape.height, shape.width, generator=g)
                 for n in (shape.in_len, shape.out_len))
