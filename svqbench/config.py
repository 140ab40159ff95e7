"""Run configuration. Precedence: defaults < dataset preset (scale) < recipe < command line.

Every run writes its resolved config; an unknown key anywhere is an error, never ignored.
"""
from __future__ import annotations

import dataclasses
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
    # training-time noise injection (Table 5): fraction of input elements multiplied by U(-2, 2)
    noise: float = 0.0

    def quantizer_kwargs(self) -> dict[str, Any]:
        if self.quantizer == "svq":
            return dict(codebook_size=self.codebook_size, hidden=self.svq_hidden, init=self.codebook_init,
                        frozen=self.frozen_codebook, impl=self.svq_impl)
        return {}

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


def resolve(dataset: str | None = None, scale: str | None = None, recipe: dict[str, Any] | None = None,
            cli: dict[str, Any] | None = None) -> RunConfig:
    """Merge defaults < preset < recipe < CLI (None values in `cli` mean "not given")."""
    recipe = recipe or {}
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    _check_keys(recipe, "recipe")
    _check_keys(cli, "command line")
    dataset = cli.get("dataset", recipe.get("dataset", dataset or RunConfig.dataset))
    scale = cli.get("scale", recipe.get("scale", scale or RunConfig.scale))
    if scale not in CHOICES["scale"]:
        raise UserError(f"unknown scale {scale!r}; choose one of: {', '.join(CHOICES['scale'])}")
    if dataset not in PRESETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(PRESETS))}")
    merged: dict[str, Any] = {"dataset": dataset, "scale": scale}
    for where, layer in (("preset", PRESETS[dataset][scale]), ("recipe", recipe), ("command line", cli)):
        for key, value in layer.items():
            merged[key] = _coerce(key, value, where)
    cfg = RunConfig(**merged)
    validate(cfg)
    return cfg


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
    if cfg.hid_s % 2:
        raise UserError(f"hid-s must be even (GroupNorm with 2 groups), got {cfg.hid_s}")
