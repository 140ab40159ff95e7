"""DMVFN (svqbench/models/dmvfn.py): Table 12 sizes, the reference's state-dict names, routing and the
multi-scale Laplacian loss as its objective, roll-out forecasting, no quantizer slot (its forecast
interface: test_models.py)."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import RunConfig
from svqbench.errors import UserError
from svqbench.models import ForecastShape
from svqbench.models import dmvfn

from tiny_models import tiny_model

# dataset -> (paper shape, parameters the reference config builds, Table 12's value, its decimals);
# the table has no DMVFN on Human3.6M or WeatherBench-S
PAPER = {
    "kth": (ForecastShape(10, 20, 1, 128, 128), 3_522_922, 3.5, 1),
    "kitticaltech": (ForecastShape(10, 1, 3, 128, 160), 3_559_930, 3.6, 1),
    "taxibj": (ForecastShape(4, 4, 2, 32, 32), 3_541_426, 3.54, 2),
}


def config(dataset="default", scale="quick", **overrides) -> RunConfig:
    return RunConfig(**{**dmvfn.PRESETS[dataset][scale], **overrides})


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_parameter_count(dataset):
    shape, built, printed, decimals = PAPER[dataset]
    with torch.device("meta"):
        model = dmvfn.build(config(dataset, "paper"), shape)
    n = sum(p.numel() for p in model.parameters())
    assert n == built
    assert round(n / 1e6, decimals) == printed


def test_state_dict_names_follow_the_reference():
    names = list(tiny_model("dmvfn", dmvfn_num_features="8", dmvfn_scales="1").state_dict())
    conv = lambda p: [f"{p}.0.weight", f"{p}.0.bias", f"{p}.1.weight"]  # noqa: E731  Conv2d + PReLU
    expected = (conv("stu.0.conv0.0") + conv("stu.0.conv0.1") + conv("stu.0.convblock.0") + conv("stu.0.convblock.1")
                + conv("stu.0.convblock.2") + conv("stu.0.conv_sq") + conv("stu.0.conv1.0") + conv("stu.0.convblock1.0")
                + ["stu.0.lastconv.weight", "stu.0.lastconv.bias", "routing.routing.0.weight", "routing.routing.0.bias",
                   "routing.routing.2.weight", "routing.routing.2.bias", "l1.weight", "l1.bias"])
    assert names == expected


def test_warp_by_zero_flow_is_identity_and_by_one_pixel_shifts():
    img = torch.rand(1, 1, 6, 7, dtype=torch.float64)
    flow = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    assert torch.allclose(dmvfn.warp(img, flow), img, atol=1e-12)
    flow[:, 0] = 1.0   # sample one pixel to the right
    assert torch.allclose(dmvfn.warp(img, flow)[..., :-1], img[..., 1:], atol=1e-12)


def test_laplacian_loss():
    a = torch.rand(2, 1, 48, 64)
    assert float(dmvfn.laplacian_l1(a, a, 4)) == 0.0
    assert float(dmvfn.laplacian_l1(a, a + 0.1 * torch.randn_like(a), 4)) > 0.0
    # levels: the reference's 5 where the frame holds them; fewer on small or odd-sized frames
    assert [dmvfn.pyramid_levels(*s) for s in ((128, 128), (128, 160), (32, 32), (48, 64))] == [5, 5, 4, 4]


def test_training_uses_true_frames_and_its_own_loss():
    model = tiny_model("dmvfn")
    x = torch.rand(2, 3, 1, 9, 14)
    y1, y2 = torch.rand(2, 2, 1, 9, 14), torch.rand(2, 2, 1, 9, 14)
    a, aux = model(x, target=y1, step=0, generator=torch.Generator().manual_seed(3))
    b, _ = model(x, target=y2, step=0, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 2, 1, 9, 14)
    assert torch.equal(a[:, 0], b[:, 0])       # from the last two inputs
    assert not torch.equal(a[:, 1], b[:, 1])   # from the last input and the true first target
    assert not a.requires_grad                 # the objective is aux alone
    assert float(aux.detach()) > 0
    aux.backward()
    # the straight-through routing passes gradient to the router
    assert model.l1.weight.grad.abs().sum() > 0
    assert model.stu[0].lastconv.weight.grad.abs().sum() > 0


def test_routing_draws_come_from_the_generator():
    model = tiny_model("dmvfn")
    x, y = torch.rand(2, 3, 1, 9, 14), torch.rand(2, 2, 1, 9, 14)
    a, _ = model(x, target=y, step=0, generator=torch.Generator().manual_seed(5))
    b, _ = model(x, target=y, step=0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["svq", "vq"])
def test_quantizer_refused_in_one_line(name):
    with pytest.raises(UserError, match="dmvfn has no latent state to quantize"):
        tiny_model("dmvfn", quantizer=name)


def test_bad_scales_are_one_line():
    with pytest.raises(UserError, match="dmvfn-scales needs one of 1, 2, 4, 8 per block"):
        tiny_model("dmvfn", dmvfn_scales="4,2")


def test_macs_per_pass_match_table_12():
    # Table 12 counts one prediction step (two frames -> one); OpenSTL's counter also counts norms
    # and activations, so torch's count may read a little lower
    from torch.utils.flop_counter import FlopCounterMode
    printed = {"kth": 0.88, "kitticaltech": 1.2, "taxibj": 0.057}
    for dataset, (shape, *_rest) in PAPER.items():
        with torch.device("meta"):
            model = dmvfn.build(config(dataset, "paper"), shape).eval()
            x = torch.empty(1, shape.in_len, shape.channels, shape.height, shape.width)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
        macs_per_pass = counter.get_total_flops() / 2 / model.passes / 1e9
        assert macs_per_pass == pytest.approx(printed[dataset], rel=0.03), dataset
