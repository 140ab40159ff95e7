"""Run configuration. Precedence: defaults < dataset preset (scale) < recipe < command line.

Every run writes its resolved config; an unknown key anywhere is an error, never ignored.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from svqbench.errors import UserError


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "embedded"
    scale: str = "quick"
    backbone: str = "gsta"
    quantizer: str = "svq"
    seed: int = 42
    # model
    hid_s: int = 32
    hid_t: int = 256
    n_s: int = 2
    n_t: int = 8
    mlp_ratio: float = 8.0
    drop_path: float = 0.0
    placement: str = "before"
    # SVQ
    codebook_size: int = 10000
    svq_hidden: int = 128
    codebook_init: str = "kaiming_uniform"
    frozen_codebook: bool = False
    svq_impl: str = "factorized"
    # SVQ ablations (Tables 6, 15): W = zA + a; W = ReLU(MLP(z)) (forces the dense path); frozen MLP
    svq_one_layer: bool = False
    svq_post_relu: bool = False
    svq_frozen_projection: bool = False
    # data
    norm: str = "global"
    # optimisation
    epochs: int = 50
    batch_size: int = 16
    lr: float = 5e-3
    schedule: str = "cosine"
    warmup_epochs: int = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-6
    weight_decay: float = 0.0
    loss: str = "l1"
    patience: int = 10
    # caps for CPU-sized runs on big datasets (0 = no cap): optimiser steps per epoch (each epoch draws
    # a fresh random subset of the train windows) and validation windows (an evenly spaced, fixed subset)
    max_steps_per_epoch: int = 0
    max_val_windows: int = 0
    # training-time noise injection (Table 5): fraction of input elements multiplied by U(-2, 2)
    noise: float = 0.0

    def quantizer_kwargs(self) -> dict[str, Any]:
        if self.quantizer == "svq":
            return dict(codebook_size=self.codebook_size, hidden=self.svq_hidden, init=self.codebook_init,
                        frozen=self.frozen_codebook, impl=self.svq_impl, one_layer=self.svq_one_layer,
                        post_relu=self.svq_post_relu, frozen_projection=self.svq_frozen_projection)
        if self.quantizer == "svq-raw":
            return dict(codebook_size=self.codebook_size, init=self.codebook_init, frozen=self.frozen_codebook)
        if self.quantizer == "mlp":
            return dict(hidden=self.svq_hidden)
        if self.quantizer == "none":
            return {}
        return dict(codebook_size=self.codebook_size)  # the vector-quantize-pytorch baselines

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "scale": ("quick", "paper"),
    "placement": ("before", "after"),
    "norm": ("global", "window"),
    "schedule": ("cosine", "onecycle", "constant"),
    "loss": ("l1", "l2"),
    "svq_impl": ("factorized", "dense"),
}

# The paper's WeatherBench-S t2m recipe (REFERENCE.md): the architecture and optimiser every
# weather preset starts from at paper scale.
_PAPER_T2M = dict(hid_s=32, hid_t=256, n_t=8, n_s=2, mlp_ratio=8.0, drop_path=0.1, lr=5e-3, batch_size=16,
                  schedule="cosine", warmup_epochs=5, epochs=50, patience=10, loss="l1", codebook_size=10000,
                  codebook_init="normal")

# dataset -> scale -> overrides. `quick` trains on 2 CPU cores in minutes.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "embedded": {
        "paper": dict(_PAPER_T2M),
        "quick": dict(hid_s=16, hid_t=64, n_t=4, n_s=2, mlp_ratio=4.0, drop_path=0.0, lr=5e-3, batch_size=16,
                      schedule="cosine", warmup_epochs=2, epochs=30, patience=8, loss="l1",
                      codebook_size=10000, codebook_init="normal", norm="window"),
    },
}
PRESETS["embedded-e1"] = PRESETS["embedded"]

# The paper's datasets (REFERENCE.md, paper Table 10 and the reference configs). Architecture and
# optimiser at `paper` scale; `quick` keeps the backbone but shrinks the model (and downsamples large
# frames more) so a few epochs run on 2 CPU cores.
_PAPER_BASE = dict(_PAPER_T2M, codebook_init="kaiming_uniform")
_QUICK = dict(hid_s=16, hid_t=64, n_t=4, n_s=2, mlp_ratio=4.0, drop_path=0.0, batch_size=16, schedule="cosine",
              warmup_epochs=1, epochs=5, patience=3, loss="l1", codebook_size=1000, max_steps_per_epoch=40,
              max_val_windows=256)
_VIDEO = dict(hid_s=64, hid_t=256, n_t=6, n_s=2, batch_size=16, epochs=100, patience=50, codebook_size=6000)


def _preset(paper: dict[str, Any], **quick) -> dict[str, dict[str, Any]]:
    """paper overrides, and the quick scale: same backbone, lr and schedule, a small model."""
    same = {k: paper[k] for k in ("backbone", "lr", "schedule", "codebook_init") if k in paper}
    return {"paper": paper, "quick": {**_QUICK, **same, **quick}}


PRESETS.update({
    "weatherbench-s-t2m": _preset(dict(_PAPER_T2M, backbone="gsta")),
    "weatherbench-s-r": _preset(dict(_PAPER_BASE, backbone="swin", lr=1e-3, drop_path=0.2)),
    "weatherbench-s-uv10": _preset(dict(_PAPER_BASE, backbone="swin", lr=1e-3, drop_path=0.2)),
    "weatherbench-s-tcc": _preset(dict(_PAPER_BASE, backbone="gsta", lr=1e-2)),
    "weatherbench-m": _preset(dict(_PAPER_BASE, backbone="moganet", lr=5e-3)),
    # Table 10 names gSTA; Table 12's 7.84M / 9.45M are the ConvNeXt model (--backbone convnext)
    "taxibj": _preset(dict(_PAPER_BASE, backbone="gsta", lr=5e-4)),
    "kth": _preset(_PAPER_BASE | _VIDEO | dict(backbone="incepu", lr=5e-4, schedule="onecycle", warmup_epochs=0),
                   n_s=4),
    "kitticaltech": _preset(_PAPER_BASE | _VIDEO | dict(backbone="gsta", lr=1.25e-3, drop_path=0.2,
                                                        schedule="onecycle"), n_s=4),
    "human36m": _preset(_PAPER_BASE | _VIDEO | dict(backbone="gsta", hid_t=512, n_s=4, codebook_size=10000, lr=2.5e-4,
                                                    warmup_epochs=0, epochs=50), n_s=6),  # 256 px -> 32
})


def field_names() -> set[str]:
    return {f.name for f in fields(RunConfig)}


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - field_names())
    if unknown:
        raise UserError(f"unknown config key(s) in {where}: {', '.join(unknown)}; "
                        f"valid keys: {', '.join(sorted(field_names()))}")


def _coerce(name: str, value: Any, where: str) -> Any:
    kind = {f.name: f.type for f in fields(RunConfig)}[name]
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"bad value {value!r} for {name} in {where}: expected {kind}") from None


# A dataset the user prepared (`svqbench prepare netcdf --name NAME`) has no preset of its own.
GENERIC_PRESET: dict[str, dict[str, Any]] = {
    "paper": dict(_PAPER_T2M, codebook_init="kaiming_uniform"),
    "quick": dict(_QUICK),
}


def _preset_for(dataset: str, data_dir: Any) -> dict[str, dict[str, Any]]:
    if dataset in PRESETS:
        return PRESETS[dataset]
    from svqbench.data.prepared import data_root
    if (data_root(data_dir) / dataset / "meta.json").exists():
        return GENERIC_PRESET
    raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(PRESETS))}, "
                    f"or a dataset prepared with `svqbench prepare netcdf --name {dataset}`")


def resolve(dataset: str | None = None, scale: str | None = None, recipe: dict[str, Any] | None = None,
            cli: dict[str, Any] | None = None, data_dir: Any = None) -> RunConfig:
    """Merge defaults < preset < recipe < CLI (None values in `cli` mean "not given").

    A dataset without a preset gets GENERIC_PRESET when it is prepared under `data_dir`."""
    recipe = recipe or {}
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    _check_keys(recipe, "recipe")
    _check_keys(cli, "command line")
    dataset = cli.get("dataset", recipe.get("dataset", dataset or RunConfig.dataset))
    scale = cli.get("scale", recipe.get("scale", scale or RunConfig.scale))
    if scale not in CHOICES["scale"]:
        raise UserError(f"unknown scale {scale!r}; choose one of: {', '.join(CHOICES['scale'])}")
    if not isinstance(dataset, str) or not all(c.isalnum() or c in "._-" for c in dataset) or dataset[:1] in ("", "."):
        raise UserError(f"bad dataset name {dataset!r}: use letters, digits, '.', '_' and '-' (not first)")
    preset = _preset_for(dataset, data_dir)
    merged: dict[str, Any] = {"dataset": dataset, "scale": scale}
    for where, layer in (("preset", preset[scale]), ("recipe", recipe), ("command line", cli)):
        for key, value in layer.items():
            merged[key] = _coerce(key, value, where)
    _method_codebook_size(merged, given="codebook_size" in recipe or "codebook_size" in cli)
    cfg = RunConfig(**merged)
    validate(cfg)
    return cfg


def _method_codebook_size(merged: dict[str, Any], *, given: bool) -> None:
    """A preset's codebook_size is SVQ's K; other quantizers keep their own (Table 11) unless a
    recipe or the command line sets one."""
    from svqbench.quantizers import default_codebook_size
    own = default_codebook_size(merged.get("quantizer", RunConfig.quantizer))
    if own is not None and not given:
        merged["codebook_size"] = own


def validate(cfg: RunConfig) -> None:
    from svqbench.models.translators import translator_names
    from svqbench.quantizers import quantizer_names
    for name, allowed in (("backbone", translator_names()), ("quantizer", quantizer_names())):
        if getattr(cfg, name) not in allowed:
            raise UserError(f"unknown {name} {getattr(cfg, name)!r}; choose one of: {', '.join(allowed)}")
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise UserError(f"unknown {name.replace('_', '-')} {value!r}; choose one of: {', '.join(allowed)}")
    positive = ("hid_s", "hid_t", "n_s", "epochs", "batch_size", "codebook_size", "svq_hidden")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.n_t < 2:
        raise UserError(f"n-t must be >= 2 (first and last translator blocks), got {cfg.n_t}")
    if not cfg.lr > 0:
        raise UserError(f"lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.noise < 1.0:
        raise UserError(f"noise must be in [0, 1), got {cfg.noise}")
    if not 0 <= cfg.seed < 2 ** 63 - 1:  # numpy and torch generators take non-negative 64-bit seeds
        raise UserError(f"seed must be in [0, 2**63 - 1), got {cfg.seed}")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise UserError(f"drop-path must be in [0, 1), got {cfg.drop_path}")
    if cfg.max_steps_per_epoch < 0 or cfg.max_val_windows < 0:
        raise UserError(f"max-steps-per-epoch and max-val-windows must be >= 0 (0 = no cap), got "
                        f"{cfg.max_steps_per_epoch} and {cfg.max_val_windows}")
    if cfg.patience < 1 or cfg.warmup_epochs < 0:
        raise UserError(f"patience must be >= 1 and warmup-epochs >= 0, got {cfg.patience} and {cfg.warmup_epochs}")
    for name in ("lr", "warmup_lr", "min_lr", "weight_decay", "mlp_ratio"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    for flag in ("svq_one_layer", "svq_post_relu", "svq_frozen_projection"):
        if getattr(cfg, flag) and cfg.quantizer != "svq":
            raise UserError(f"--{flag.replace('_', '-')} applies to --quantizer svq only, not {cfg.quantizer!r}")
    from svqbench.quantizers.baselines import METHODS, check_codebook_size
    if cfg.quantizer in METHODS:
        check_codebook_size(cfg.quantizer, cfg.codebook_size)
    if cfg.frozen_codebook and cfg.quantizer not in ("svq", "svq-raw"):
        raise UserError(f"--frozen-codebook applies to svq and svq-raw, not {cfg.quantizer!r} "
                        f"(the baselines' EMA codebooks are not trained by the optimiser)")
    if cfg.hid_s % 2:
        raise UserError(f"hid-s must be even (GroupNorm with 2 groups), got {cfg.hid_s}")
