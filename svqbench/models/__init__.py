"""Model construction: a RunConfig and a forecast shape -> the forecasting model it names.

`build_model` is the one place a model is made from a config (training, evaluation, analysis,
profile, a saved run); the modules in this package hold the layers. `--model simvp` (the default)
is SimVP with its translator and quantizer; every other name is one module here, registered in
`MODELS`, that exposes `build(cfg, shape)` and `PRESETS` (docs/models.md).
"""
from __future__ import annotations

import importlib
import math
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


# name -> module; each module but simvp's exposes build(cfg, shape) and PRESETS (docs/models.md)
MODELS: dict[str, str] = {}


def register_model(name: str, module: str) -> None:
    MODELS[name] = module


register_model("simvp", "svqbench.models.simvp")
register_model("convlstm", "svqbench.models.convlstm")
register_model("mau", "svqbench.models.mau")
register_model("phydnet", "svqbench.models.phydnet")
register_model("prednet", "svqbench.models.prednet")
register_model("dmvfn", "svqbench.models.dmvfn")
register_model("predrnn", "svqbench.models.predrnn")
register_model("predrnnpp", "svqbench.models.predrnnpp")
register_model("predrnnv2", "svqbench.models.predrnnv2")
register_model("mim", "svqbench.models.mim")
register_model("e3dlstm", "svqbench.models.e3dlstm")


# the names the paper's tables use
TITLES = {"simvp": "SimVP", "convlstm": "ConvLSTM", "prednet": "PredNet", "predrnn": "PredRNN", "predrnnpp": "PredRNN++",
          "mim": "MIM", "e3dlstm": "E3D-LSTM", "phydnet": "PhyDNet", "mau": "MAU", "predrnnv2": "PredRNN.V2",
          "dmvfn": "DMVFN"}


def describe_model(cfg) -> str:
    """"SimVP (gsta translator)" or the recurrent model's title, for file headers and READMEs."""
    if cfg.model == "simvp":
        return f"SimVP ({cfg.backbone} translator)"
    return TITLES.get(cfg.model, cfg.model)


def model_names() -> list[str]:
    return list(MODELS)


def model_spec(name: str):
    """The module of model `name` (its `build` and `PRESETS`); a one-line error for an unknown name."""
    from svqbench.errors import UserError
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    return importlib.import_module(MODELS[name])


def model_preset(name: str, dataset: str, scale: str) -> dict[str, Any]:
    """RunConfig values of model `name` for `dataset` at `scale` (its "default" entry for a dataset
    without a reference config); SimVP has none of its own (the dataset presets are SimVP's), and
    its module (torch) is not imported for that: `svqbench run --print-config` stays quick."""
    if name == "simvp":
        return {}
    spec = model_spec(name)
    presets = getattr(spec, "PRESETS", {})
    if not presets:
        return {}
    return dict((presets.get(dataset) or presets["default"])[scale])


def build_model(cfg, shape: "ForecastShape | Any", **overrides: Any):
    """The model `cfg.model` names for `cfg` (a RunConfig) on `shape` (a ForecastShape or a prepared dataset)."""
    if not isinstance(shape, ForecastShape):
        shape = ForecastShape.of(shape)
    if cfg.model != "simvp":
        from svqbench.errors import UserError
        from svqbench.models.recurrent import Recurrent
        if cfg.patch_size > min(shape.height, shape.width):
            raise UserError(f"patch-size {cfg.patch_size} is larger than the {shape.height} x {shape.width} frame; "
                            f"use at most {min(shape.height, shape.width)}")
        model = model_spec(cfg.model).build(cfg, shape, **overrides)
        if isinstance(model, Recurrent):
            model.loss_name = cfg.loss  # the criterion of its input-phase loss term (recurrent.py)
        return model
    from svqbench.models.simvp import SimVP
    from svqbench.quantizers import quantizer_kwargs
    return SimVP(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
                 width=shape.width, hid_s=cfg.hid_s, hid_t=cfg.hid_t, n_s=cfg.n_s, n_t=cfg.n_t,
                 backbone=cfg.backbone, mlp_ratio=cfg.mlp_ratio, drop_path=cfg.drop_path,
                 quantizer=cfg.quantizer, quantizer_kwargs=quantizer_kwargs(cfg), placement=cfg.placement,
                 **overrides)


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights, ~32 GB with gradients and Adam's state
MAX_WIDTH = 1 << 20             # any channel width or codebook size beyond this is a typo
MAX_TRANSLATOR_BLOCKS = 256


def check_model_size(cfg, shape: "ForecastShape | Any | None" = None) -> None:
    """Refuse, in one line and before anything is built or downloaded, a model that cannot be
    meant: absurd widths or depths, more downsampling than the frame allows, or an estimated
    parameter count beyond MAX_PARAMETERS (counted on the meta device, so nothing is allocated)."""
    from svqbench.errors import UserError
    for name in ("hid_s", "hid_t", "svq_hidden", "codebook_size"):
        if getattr(cfg, name) > MAX_WIDTH:
            raise UserError(f"{name.replace('_', '-')} {getattr(cfg, name)} is beyond any sensible model "
                            f"(at most {MAX_WIDTH})")
    if cfg.n_t > MAX_TRANSLATOR_BLOCKS:
        raise UserError(f"n-t {cfg.n_t} translator blocks is beyond any sensible model (at most "
                        f"{MAX_TRANSLATOR_BLOCKS})")
    if shape is None:
        if cfg.n_s > 64:
            raise UserError(f"n-s {cfg.n_s} encoder blocks is beyond any sensible model")
        return
    if not isinstance(shape, ForecastShape):
        shape = ForecastShape.of(shape)
    # every second encoder block halves the frame (n-s is even: config.validate); halvings that keep
    # at least one cell: floor(log2(the shorter side))
    fits, grid = min(shape.height, shape.width).bit_length() - 1, f"{shape.height} x {shape.width}"
    if fits < 1:
        raise UserError(f"a {grid} grid is too small for any SimVP encoder: even the smallest, n-s 2, halves the "
                        f"frame once, below one cell; prepare the data on a grid of at least 2 x 2 cells")
    if cfg.n_s // 2 > fits:
        raise UserError(f"n-s {cfg.n_s} halves the {grid} frame {cfg.n_s // 2} times, below one cell; "
                        f"use an even n-s <= {2 * fits}")
    import torch
    try:
        with torch.device("meta"):
            model = build_model(cfg, shape)
    except UserError:
        raise
    except Exception:  # an initialiser that needs real values (e.g. LISTA's norm): widths are bounded above
        return
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if n > MAX_PARAMETERS:
        raise UserError(f"this model would have about {n / 1e9:.1f} billion parameters ({4 * n / 2**30:.0f} GiB "
                        f"of float32 weights, about 4x that to train); at most {MAX_PARAMETERS / 1e9:.0f} billion")
