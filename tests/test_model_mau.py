"""MAU (svqbench/models/mau.py): Table 12 sizes, the reference's state-dict names, its own loss, its
modes (its forecast interface, teacher forcing and quantizer slot: test_models.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from svqbench.config import RunConfig
from svqbench.errors import UserError
from svqbench.models import ForecastShape
from svqbench.models import mau

from tiny_models import tiny_model

# each dataset's paper shape (svqbench.data) -> (parameters the reference config builds, Table 12's
# printed value in millions, its printed decimals); all five agree with the table
PAPER = {
    "human36m": (ForecastShape(4, 4, 3, 256, 256), 20_212_504, 20.2, 1),
    "kth": (ForecastShape(10, 20, 1, 128, 128), 20_138_372, 20.1, 1),
    "kitticaltech": (ForecastShape(10, 1, 3, 128, 160), 24_332_952, 24.3, 1),
    "weatherbench-s-t2m": (ForecastShape(12, 12, 1, 32, 64), 5_458_308, 5.46, 2),
    "taxibj": (ForecastShape(4, 4, 2, 32, 32), 4_409_868, 4.41, 2),
}


def config(dataset="default", scale="quick", **overrides) -> RunConfig:
    return RunConfig(**{**mau.PRESETS[dataset][scale], "quantizer": "none", **overrides})


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_parameter_count(dataset):
    shape, built, printed, decimals = PAPER[dataset]
    with torch.device("meta"):
        model = mau.build(config(dataset, "paper"), shape)
    n = sum(p.numel() for p in model.parameters())
    assert n == built
    assert round(n / 1e6, decimals) == printed


def test_state_dict_names_follow_the_reference():
    # openstl/models/mau_model.py + modules/mau_modules.py, num_hidden 2 layers, sr_size 4
    model = tiny_model("mau", rnn_layers=2, mau_sr_size=4)
    cell = [f"cell_list.{i}.{conv}.{j}.{w}" for i in range(2)
            for conv in ("conv_t", "conv_t_next", "conv_s", "conv_s_next") for j in (0, 1) for w in ("weight", "bias")]
    expected = cell + [
        "encoders.0.encoder_t_conv-1.weight", "encoders.0.encoder_t_conv-1.bias",
        "encoders.1.encoder_t0.weight", "encoders.1.encoder_t0.bias",
        "encoders.2.encoder_t1.weight", "encoders.2.encoder_t1.bias",
        "decoders.0.c_decoder0.weight", "decoders.0.c_decoder0.bias",
        "decoders.1.c_decoder1.weight", "decoders.1.c_decoder1.bias",
        "srcnn.0.weight", "srcnn.0.bias", "merge.weight", "merge.bias", "conv_last_sr.weight", "conv_last_sr.bias"]
    assert list(model.state_dict()) == expected


def test_training_loss_includes_the_input_frames():
    # the reference's MSE covers every next-frame prediction; the input part comes back in aux
    model = tiny_model("mau")
    x = torch.randn(2, 3, 1, 9, 13)
    pred, aux = model(x, target=torch.randn(2, 2, 1, 9, 13), step=0, generator=torch.Generator().manual_seed(0))
    assert float(aux.detach()) > 0
    aux.backward()
    assert model.encoders[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", [dict(mau_cell_mode="residual"), dict(mau_model_mode="recall")])
def test_other_modes_run(mode):
    pred, _ = tiny_model("mau", **mode).eval()(torch.randn(1, 3, 1, 9, 13))
    assert pred.shape == (1, 2, 1, 9, 13) and torch.isfinite(pred).all()


def test_bad_sr_size_is_one_line():
    with pytest.raises(UserError, match="mau-sr-size must be a power of 2, got 3"):
        tiny_model("mau", mau_sr_size=3)


def test_presets_are_valid_config():
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for dataset, scales in mau.PRESETS.items():
        for values in scales.values():
            assert set(values) <= names, dataset


def test_macs_match_table_12():
    # one pass = the whole sequence (Table 12's convention for the recurrent models); OpenSTL's counter
    # also counts norms and activations, so torch's count reads up to ~1% lower
    from torch.utils.flop_counter import FlopCounterMode
    printed = {"human36m": 105.0, "kth": 399.0, "kitticaltech": 172.0, "weatherbench-s-t2m": 39.6, "taxibj": 6.02}
    for dataset, (shape, *_rest) in PAPER.items():
        with torch.device("meta"):
            model = mau.build(config(dataset, "paper"), shape).eval()
            x = torch.empty(1, shape.in_len, shape.channels, shape.height, shape.width)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
        assert counter.get_total_flops() / 2 / 1e9 == pytest.approx(printed[dataset], rel=0.01), dataset
