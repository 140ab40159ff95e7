"""Run configuration. Precedence: defaults < dataset preset (scale) < model preset < recipe < command line.

Every run writes its resolved config; an unknown key anywhere is an error, never ignored. Each
RunConfig field carries its help line (`metadata["help"]`), from which the CLI makes its flag.
Presets live with their dataset (`svqbench.data`); quantizers declare the fields they read
(`svqbench.quantizers`); the building blocks shared by many presets are defined here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from svqbench.errors import UserError


# The panels of `svqbench run --help`, in order; every RunConfig field names one (tests/test_cli_help.py).
PANELS = ("Data", "Model", "Recurrent & video models", "Quantizer", "Optimisation", "Evaluation")


def _opt(default: Any, help: str, *, panel: str | None = None, flag: str | None = None) -> Any:
    """A RunConfig field with its command-line help, its help panel (one of PANELS) and its flag
    spelling when not --field-name."""
    return dataclasses.field(default=default, metadata={"help": help, "panel": panel,
                                                        **({"flag": flag} if flag else {})})


@dataclass(frozen=True)
class RunConfig:
    dataset: str = _opt("embedded", "prepared dataset name (`svqbench datasets` lists them)", panel="Data")
    scale: str = _opt("quick", "preset scale: quick (2 CPU cores, minutes) or paper (published settings)", panel="Data")
    model: str = _opt("simvp", "forecasting model: SimVP (--backbone picks its translator) or a recurrent/video "
                               "baseline (docs/models.md)", panel="Model")
    backbone: str = _opt("gsta", "SimVP translator", panel="Model")
    quantizer: str = _opt("svq", "quantizer between encoder and translator (docs/quantizers.md)", panel="Quantizer")
    seed: int = _opt(42, "seed of weights, shuffling and noise", panel="Optimisation")
    # model
    hid_s: int = _opt(32, "encoder/decoder channels (the latent width C)", panel="Model")
    hid_t: int = _opt(256, "translator hidden channels", panel="Model")
    n_s: int = _opt(2, "encoder/decoder blocks (every second one halves the frame)", panel="Model")
    n_t: int = _opt(8, "translator blocks", panel="Model")
    mlp_ratio: float = _opt(8.0, "translator MLP expansion ratio", panel="Model")
    drop_path: float = _opt(0.0, "final stochastic-depth rate of the translator (linear from 0.01)", panel="Model")
    placement: str = _opt("before", "quantizer before or after the translator (Table 15)", panel="Model")
    # recurrent models (--model other than simvp; OpenSTL's names in docs/models.md)
    rnn_hidden: int = _opt(128, "recurrent models: channels of every recurrent layer (OpenSTL's num_hidden)",
                           panel="Recurrent & video models")
    rnn_layers: int = _opt(4, "recurrent models: stacked recurrent layers", panel="Recurrent & video models")
    filter_size: int = _opt(5, "recurrent models: convolution kernel size", panel="Recurrent & video models")
    patch_size: int = _opt(2, "recurrent models: frames enter as p x p patches stacked on channels (padded to a multiple)",
                           panel="Recurrent & video models")
    layer_norm: bool = _opt(False, "recurrent models: LayerNorm after each gate convolution",
                            panel="Recurrent & video models")
    stride: int = _opt(1, "recurrent models: gate convolution stride", panel="Recurrent & video models")
    sampling_start_value: float = _opt(1.0, "scheduled sampling: teacher-forcing probability at step 0",
                                       panel="Recurrent & video models")
    sampling_changing_rate: float = _opt(2e-5, "scheduled sampling: decrease of that probability per optimiser step",
                                         panel="Recurrent & video models")
    sampling_stop_iter: int = _opt(50000, "scheduled sampling: optimiser step after which no true frame is fed",
                                   panel="Recurrent & video models")
    r_sampling_step_1: int = _opt(25000, "reverse scheduled sampling: step where its schedules start moving",
                                  panel="Recurrent & video models")
    r_sampling_step_2: int = _opt(50000, "reverse scheduled sampling: step where they end",
                                  panel="Recurrent & video models")
    r_exp_alpha: float = _opt(5000.0, "reverse scheduled sampling: time constant of the input-frame schedule",
                              panel="Recurrent & video models")
    decouple_beta: float = _opt(0.1, "PredRNN.V2: weight of its memory-decoupling loss",
                                panel="Recurrent & video models")
    mau_tau: int = _opt(5, "MAU: past steps its attention looks back over (OpenSTL's tau)",
                        panel="Recurrent & video models")
    mau_sr_size: int = _opt(2, "MAU: spatial downsampling factor of its encoder (OpenSTL's sr_size; a power of 2)",
                            panel="Recurrent & video models")
    mau_cell_mode: str = _opt("normal", "MAU: normal, or residual (adds the cell's input to its spatial output)",
                              panel="Recurrent & video models")
    mau_model_mode: str = _opt("normal", "MAU: normal, or recall (decoder adds the encoder's features)",
                               panel="Recurrent & video models")
    prednet_stack_sizes: str = _opt("32,64,128,256", "PredNet: channels of the layers above the frame (the "
                                    "reference's stack_sizes after the data channels; R stacks equal)",
                                    panel="Recurrent & video models")
    prednet_filt_size: int = _opt(3, "PredNet: kernel size of its A, Ahat and R convolutions",
                                  panel="Recurrent & video models")
    prednet_weight_mode: str = _opt("L_0", "PredNet: error-loss layer weights: L_0 (bottom layer only) or L_all "
                                           "(bottom 1, others 0.1)", panel="Recurrent & video models")
    dmvfn_num_features: str = _opt("160,160,160,80,80,80,44,44,44", "DMVFN: width of each multi-scale flow block",
                                   panel="Recurrent & video models")
    dmvfn_scales: str = _opt("4,4,4,2,2,2,1,1,1", "DMVFN: downsampling factor of each block",
                             panel="Recurrent & video models")
    dmvfn_routing_channels: int = _opt(32, "DMVFN: width of the routing module", panel="Recurrent & video models")
    dmvfn_beta: float = _opt(0.5, "DMVFN: expected fraction of blocks the routing activates",
                             panel="Recurrent & video models")
    dmvfn_gamma: float = _opt(0.8, "DMVFN: decay of the earlier blocks' loss weights", panel="Recurrent & video models")
    phydnet_latent: int = _opt(64, "PhyDNet: channels of its frame encoding (a multiple of 32; the reference: 64)",
                               panel="Recurrent & video models")
    phydnet_lstm_hidden: str = _opt("128,128,64", "PhyDNet: widths of its ConvLSTM branch's layers",
                                    panel="Recurrent & video models")
    # SVQ
    codebook_size: int = _opt(10000, "codebook size K (svq: the preset's; baselines: Table 11's)", panel="Quantizer")
    svq_hidden: int = _opt(128, "SVQ hidden width (bucket shape: 1280 with K 1280); also the mlp control's",
                           panel="Quantizer")
    codebook_init: str = _opt("kaiming_uniform", "codebook initialiser (svq, svq-raw)", panel="Quantizer")
    frozen_codebook: bool = _opt(False, "freeze the codebook (svq, svq-raw)", flag="--frozen-codebook/--learnable-codebook",
                                 panel="Quantizer")
    svq_impl: str = _opt("factorized", "SVQ path: factorized ReLU(zA+a)(BM)+bM, or dense (the paper's)",
                         panel="Quantizer")
    # SVQ ablations (Tables 6, 15): W = zA + a; W = ReLU(MLP(z)) (forces the dense path); frozen MLP
    svq_one_layer: bool = _opt(False, "SVQ weights W = zA + a (Table 6)", panel="Quantizer")
    svq_post_relu: bool = _opt(False, "SVQ weights W = ReLU(MLP(z)) (Table 6; uses the dense path)", panel="Quantizer")
    svq_frozen_projection: bool = _opt(False, "freeze SVQ's MLP projection (Table 15)", panel="Quantizer")
    svq_hidden_cap: bool = _opt(False, "cap SVQ's hidden width at K when K is smaller, as the reference code does "
                                       "(its Table 6 K=10 rows: hidden 10)", panel="Quantizer")
    svq_hid_relu: bool = _opt(True, "ReLU after SVQ's first layer (the reference code's hid_relu switch)",
                              panel="Quantizer")
    # data
    norm: str = _opt("global", "global: z-score with train stats; window: remove each window's input mean",
                     panel="Data")
    # optimisation
    epochs: int = _opt(50, "maximum epochs", panel="Optimisation")
    batch_size: int = _opt(16, "global batch size (split across ranks under torchrun)", panel="Optimisation")
    lr: float = _opt(5e-3, "peak learning rate (Adam)", panel="Optimisation")
    schedule: str = _opt("cosine", "learning-rate schedule, stepped per batch", panel="Optimisation")
    warmup_epochs: int = _opt(5, "cosine: linear warm-up epochs", panel="Optimisation")
    warmup_lr: float = _opt(1e-5, "cosine: learning rate at the start of the warm-up", panel="Optimisation")
    min_lr: float = _opt(1e-6, "cosine: final learning rate", panel="Optimisation")
    weight_decay: float = _opt(0.0, "Adam weight decay (L2)", panel="Optimisation")
    loss: str = _opt("l1", "forecast loss in normalised space", panel="Optimisation")
    patience: int = _opt(10, "early-stop patience in epochs (validation split)", panel="Optimisation")
    # caps for CPU-sized runs on big datasets (0 = no cap): optimiser steps per epoch (each epoch draws
    # a fresh random subset of the train windows) and validation windows (an evenly spaced, fixed subset)
    max_steps_per_epoch: int = _opt(0, "cap optimiser steps per epoch (0 = all windows)", panel="Optimisation")
    max_val_windows: int = _opt(0, "validate on this many evenly spaced windows (0 = all)", panel="Optimisation")
    # training-time noise injection (Table 5): fraction of input elements multiplied by U(-2, 2)
    noise: float = _opt(0.0, "training-time noise: fraction eta of input elements multiplied by U(-2, 2) (Table 5)",
                        panel="Optimisation")
    # weather evaluation (docs/metrics.md): what ACC and the climatology forecast are measured against,
    # and the regions scored besides the whole grid; neither changes training
    climatology: str = _opt("seasonal", "weather scores: seasonal (day of year, by time of day if sub-daily, or "
                                        "month of year; train split, WeatherBench 2 smoothing) or static (one train "
                                        "mean per cell)", panel="Evaluation")
    regions: str = _opt("wb2", "weather scores: regions besides the whole grid: wb2 (its latitude bands), a band "
                               "name, NAME=LAT0,LAT1[,LON0,LON1], NAME=MASK.npy|.nc, or none; several separated "
                               "by spaces or ';'", panel="Evaluation")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fixed sets of values; backbone, quantizer and dataset come from their registries.
CHOICES: dict[str, tuple[str, ...]] = {
    "scale": ("quick", "paper"),
    "placement": ("before", "after"),
    "norm": ("global", "window"),
    "schedule": ("cosine", "onecycle", "constant"),
    "loss": ("l1", "l2"),
    "svq_impl": ("factorized", "dense"),
    "codebook_init": ("normal", "kaiming_uniform", "xavier", "sparse", "trunc_normal", "orthogonal"),
    "mau_cell_mode": ("normal", "residual"),
    "mau_model_mode": ("normal", "recall"),
    "prednet_weight_mode": ("L_0", "L_all"),
    "climatology": ("seasonal", "static"),
}


def choices(name: str) -> list[str]:
    """The allowed values of a config field, from its registry or CHOICES; [] when free."""
    if name == "backbone":
        from svqbench.models.translators import translator_names
        return translator_names()
    if name == "quantizer":
        from svqbench.quantizers import quantizer_names
        return quantizer_names()
    if name == "dataset":
        from svqbench.data import dataset_names
        return dataset_names()
    if name == "model":
        from svqbench.models import model_names
        return model_names()
    return list(CHOICES.get(name, ()))


# ---- preset building blocks (each dataset's presets live in its module; see svqbench.data)

# The paper's WeatherBench-S t2m recipe (docs/reference.md): the architecture and optimiser every
# weather preset starts from at paper scale.
PAPER_T2M = dict(hid_s=32, hid_t=256, n_t=8, n_s=2, mlp_ratio=8.0, drop_path=0.1, lr=5e-3, batch_size=16,
                 schedule="cosine", warmup_epochs=5, epochs=50, patience=10, loss="l1", codebook_size=10000,
                 codebook_init="normal")
# The other datasets' reference configs start from it with kaiming_uniform codebooks.
PAPER_BASE = dict(PAPER_T2M, codebook_init="kaiming_uniform")
# `quick` keeps the backbone but shrinks the model so a few epochs run on 2 CPU cores.
QUICK = dict(hid_s=16, hid_t=64, n_t=4, n_s=2, mlp_ratio=4.0, drop_path=0.0, batch_size=16, schedule="cosine",
             warmup_epochs=1, epochs=5, patience=3, loss="l1", codebook_size=1000, max_steps_per_epoch=40,
             max_val_windows=256)
PAPER_VIDEO = dict(hid_s=64, hid_t=256, n_t=6, n_s=2, batch_size=16, epochs=100, patience=50, codebook_size=6000)


def scales(paper: dict[str, Any], **quick: Any) -> dict[str, dict[str, Any]]:
    """A dataset's presets: `paper` overrides, and the quick scale (same backbone, lr and schedule,
    a small model)."""
    same = {k: paper[k] for k in ("backbone", "lr", "schedule", "codebook_init") if k in paper}
    return {"paper": paper, "quick": {**QUICK, **same, **quick}}


# A dataset the user prepared (`svqbench prepare netcdf --name NAME`) has no preset of its own.
# Window normalisation: climate records trend, and on the embedded A1B record (the same file through
# `prepare netcdf`) it had the lower validation loss (0.054 vs 0.130 with global z-scores).
GENERIC_PRESET: dict[str, dict[str, Any]] = {"paper": dict(PAPER_BASE, norm="window"),
                                             "quick": dict(QUICK, norm="window")}


def field_names() -> set[str]:
    return {f.name for f in fields(RunConfig)}


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - field_names())
    if unknown:
        raise UserError(f"unknown config key(s) in {where}: {', '.join(unknown)}; "
                        f"valid keys: {', '.join(sorted(field_names()))}")


def _coerce(name: str, value: Any, where: str) -> Any:
    """The value as its field's type; a bool is never taken for a number nor a number for a switch."""
    kind = {f.name: f.type for f in fields(RunConfig)}[name]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            raise ValueError(value)
        if isinstance(value, bool):
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"bad value {value!r} for {name} in {where}: expected {kind}") from None


def presets_for(dataset: str, data_dir: Any = None) -> dict[str, dict[str, Any]]:
    """The dataset's presets, or GENERIC_PRESET for a dataset the user prepared under `data_dir`."""
    from svqbench.data import dataset_names, dataset_spec
    if dataset in dataset_names():
        return dataset_spec(dataset).presets
    from svqbench.data.prepared import data_root
    if (data_root(data_dir) / dataset / "meta.json").exists():
        return GENERIC_PRESET
    raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(dataset_names())}, "
                    f"or a dataset prepared with `svqbench prepare netcdf --name {dataset}`")


def resolve(dataset: str | None = None, scale: str | None = None, recipe: dict[str, Any] | None = None,
            cli: dict[str, Any] | None = None, data_dir: Any = None, notes: list[str] | None = None) -> RunConfig:
    """Merge defaults < preset < recipe < CLI (None values in `cli` mean "not given").

    A dataset without a preset gets GENERIC_PRESET when it is prepared under `data_dir`. What was
    adjusted rather than refused (a preset's warm-up longer than the run) is said in `notes` when
    given, else as a UserWarning."""
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
    preset = presets_for(dataset, data_dir)
    from svqbench.models import model_preset
    model = _coerce("model", cli["model"], "command line") if "model" in cli else \
        _coerce("model", recipe["model"], "recipe") if "model" in recipe else RunConfig.model
    merged: dict[str, Any] = {"dataset": dataset, "scale": scale}
    origin: dict[str, str] = {}  # field -> the layer its value came from
    for where, layer in (("preset", preset[scale]), ("model preset", model_preset(model, dataset, scale)),
                         ("recipe", recipe), ("command line", cli)):
        for key, value in layer.items():
            merged[key] = _coerce(key, value, where)
            origin[key] = where
    _method_codebook_size(merged, given="codebook_size" in recipe or "codebook_size" in cli)
    cfg = RunConfig(**merged)
    validate(cfg)
    check_quantizer_fields(cfg, given=set(cli))
    return _warmup_within_epochs(cfg, origin, notes)


def _warmup_within_epochs(cfg: RunConfig, origin: dict[str, str], notes: list[str] | None) -> RunConfig:
    """A cosine warm-up of at least `epochs` never lets the learning rate decay. Asked for on the
    command line it is refused (a value the user typed is never changed); taken from a preset, a
    recipe or a recorded config (e.g. the quick preset's 2 warm-up epochs under --epochs 2) it is
    shortened to epochs - 1, with a note. Saved runs keep theirs: this is for new configs only."""
    if cfg.schedule != "cosine" or cfg.warmup_epochs < cfg.epochs:
        return cfg
    if origin.get("warmup_epochs") == "command line":
        raise UserError(f"--warmup-epochs {cfg.warmup_epochs} is not below epochs {cfg.epochs}: the cosine "
                        f"schedule would only warm up, never decay; give --warmup-epochs {cfg.epochs - 1} or less")
    where = origin.get("warmup_epochs", "defaults")
    note = (f"note: warmup-epochs {cfg.warmup_epochs} (from the {where}) is not below epochs {cfg.epochs}: using "
            f"{cfg.epochs - 1} so that the cosine schedule decays; give --warmup-epochs to choose another")
    if notes is None:
        import warnings
        warnings.warn(note, UserWarning, stacklevel=3)
    else:
        notes.append(note)
    return dataclasses.replace(cfg, warmup_epochs=cfg.epochs - 1)


def check_quantizer_fields(cfg: RunConfig, given: set[str] = frozenset()) -> None:
    """A quantizer option is refused for a quantizer that does not read it: a switch turned on, or
    any value given on the command line (`given`). Then the quantizer checks its own values."""
    from svqbench.quantizers import quantizer_fields, quantizer_spec
    spec = quantizer_spec(cfg.quantizer)
    reads = spec.reads
    for name, readers in quantizer_fields().items():
        if name in reads:
            continue
        value = getattr(cfg, name)
        switched = isinstance(value, bool) and value != RunConfig.__dataclass_fields__[name].default
        if switched or (name in given and not isinstance(value, bool)):
            flag = name.replace("_", "-")
            raise UserError(f"--{flag} applies to {' and '.join(readers)} only, not --quantizer {cfg.quantizer}; "
                            f"drop --{flag}")
    if spec.check is not None:
        spec.check(**spec.options, **{kw: getattr(cfg, name) for name, kw in reads.items()})


def _method_codebook_size(merged: dict[str, Any], *, given: bool) -> None:
    """A preset's codebook_size is SVQ's K; other quantizers keep their own (Table 11) unless a
    recipe or the command line sets one."""
    from svqbench.quantizers import default_codebook_size
    own = default_codebook_size(merged.get("quantizer", RunConfig.quantizer))
    if own is not None and not given:
        merged["codebook_size"] = own


FLOAT32_MAX = 3.4028234663852886e38


def validate(cfg: RunConfig) -> None:
    for name in ("model", "backbone", "quantizer", *CHOICES):
        allowed = choices(name)
        if getattr(cfg, name) not in allowed:
            raise UserError(f"unknown {name.replace('_', '-')} {getattr(cfg, name)!r}; "
                            f"choose one of: {', '.join(allowed)}")
    from svqbench.models.layout import n_s_problem
    if n_s_problem(cfg.n_s):  # odd or < 2: the reference would silently build fewer blocks
        raise UserError(n_s_problem(cfg.n_s))
    positive = ("hid_s", "hid_t", "n_s", "epochs", "batch_size", "codebook_size", "svq_hidden")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("rnn_hidden", "rnn_layers", "filter_size", "patch_size", "stride"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.filter_size % 2 == 0:  # "same" padding (filter_size // 2) keeps the frame size only for odd kernels
        raise UserError(f"filter-size must be odd, got {cfg.filter_size}")
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
        if value > FLOAT32_MAX:  # the optimiser and the model compute in float32
            raise UserError(f"{name.replace('_', '-')} {value} is beyond float32's range (max {FLOAT32_MAX:.3e})")
    check_quantizer_fields(cfg)
    if cfg.hid_s % 2:
        raise UserError(f"hid-s must be even (GroupNorm with 2 groups), got {cfg.hid_s}")
    from svqbench.regions import parse_regions
    parse_regions(cfg.regions)  # its syntax now; whether each region holds cells of the grid, before training
