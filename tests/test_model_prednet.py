"""PredNet (svqbench/models/prednet.py): Table 12 sizes, the reference's state-dict names, the
layer-weighted error loss as its only trained loss, a clipped extrapolation at evaluation (its forecast
interface and quantizer slot: test_models.py)."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import RunConfig
from svqbench.errors import UserError
from svqbench.models import ForecastShape
from svqbench.models import prednet

from tiny_models import tiny_model

# dataset -> (paper shape, parameters the reference config builds, Table 12's 12.5M); the table has
# no PredNet on WeatherBench-S
PAPER = {
    "human36m": (ForecastShape(4, 4, 3, 256, 256), 12_515_244),
    "kth": (ForecastShape(10, 20, 1, 128, 128), 12_510_842),
    "kitticaltech": (ForecastShape(10, 1, 3, 128, 160), 12_515_244),
    "taxibj": (ForecastShape(4, 4, 2, 32, 32), 12_512_926),
}


def config(dataset="default", scale="quick", **overrides) -> RunConfig:
    return RunConfig(**{**prednet.PRESETS[dataset][scale], "quantizer": "none", **overrides})


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_parameter_count(dataset):
    shape, built = PAPER[dataset]
    with torch.device("meta"):
        model = prednet.build(config(dataset, "paper"), shape)
    n = sum(p.numel() for p in model.parameters())
    assert n == built
    assert round(n / 1e6, 1) == 12.5


def test_state_dict_names_follow_the_reference():
    # three layers: four LSTM gate convs per layer, A convs between layers (ReLUs at odd indices),
    # Ahat convs per layer
    names = list(tiny_model("prednet").state_dict())
    expected = [f"{g}.{l}.{w}" for g in ("i", "f", "c", "o") for l in range(3) for w in ("weight", "bias")]
    expected += [f"A.{j}.{w}" for j in (0, 2) for w in ("weight", "bias")]
    expected += [f"Ahat.{j}.{w}" for j in (0, 2, 4) for w in ("weight", "bias")]
    assert names == expected


def test_hard_sigmoid_is_keras_slope():
    x = torch.tensor([-3.0, -2.5, 0.0, 1.0, 2.5, 3.0])
    assert torch.allclose(prednet.hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.5, 0.7, 1.0, 1.0]))


def test_eval_forecast_is_clipped():
    """Clipped to [0, PIXEL_MAX] (that it ignores the target: test_models.py)."""
    model = tiny_model("prednet").eval()
    x = torch.randn(2, 3, 1, 9, 14)
    with torch.no_grad():
        a, _ = model(x)
    assert float(a.min()) >= 0.0 and float(a.max()) <= prednet.PIXEL_MAX


def test_training_sees_true_frames_and_trains_on_the_error_loss_only():
    model = tiny_model("prednet")
    x = torch.randn(2, 3, 1, 9, 14)
    y1, y2 = torch.randn(2, 2, 1, 9, 14), torch.randn(2, 2, 1, 9, 14)
    a, aux = model(x, target=y1, step=0)
    b, _ = model(x, target=y2, step=0)
    # the first target's prediction is made before it is seen; the second after the true first
    assert torch.equal(a[:, 0], b[:, 0])
    assert not torch.equal(a[:, 1], b[:, 1])
    assert not a.requires_grad            # the loop's forecast loss adds no gradient
    assert float(aux.detach()) > 0
    aux.backward()
    assert model.i[0].weight.grad.abs().sum() > 0


def test_layer_weights_change_the_loss():
    x, y = torch.randn(2, 3, 1, 9, 14), torch.randn(2, 2, 1, 9, 14)
    _, bottom = tiny_model("prednet", prednet_weight_mode="L_0")(x, target=y, step=0)
    _, every = tiny_model("prednet", prednet_weight_mode="L_all")(x, target=y, step=0)
    assert float(every.detach()) > float(bottom.detach()) > 0


@pytest.mark.parametrize("bad", ["", "32,x", "32,0"])
def test_bad_stack_sizes_are_one_line(bad):
    with pytest.raises(UserError, match="prednet-stack-sizes must be comma-separated positive integers"):
        tiny_model("prednet", prednet_stack_sizes=bad)


def test_macs_per_pass_against_table_12():
    # one pass = one frame step; Table 12: Human3.6M 13.7G and KTH 3.4G per step; its TaxiBJ 0.85G is
    # four steps (0.21G each), pinned here as built
    from torch.utils.flop_counter import FlopCounterMode
    expected = {"human36m": (13.7, 0.01), "kth": (3.4, 0.03), "taxibj": (0.85 / 4, 0.01)}
    for dataset, (value, rel) in expected.items():
        shape = PAPER[dataset][0]
        with torch.device("meta"):
            model = prednet.build(config(dataset, "paper"), shape).eval()
            x = torch.empty(1, shape.in_len, shape.channels, shape.height, shape.width)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
        assert counter.get_total_flops() / 2 / model.passes / 1e9 == pytest.approx(value, rel=rel), dataset
