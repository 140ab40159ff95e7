"""PredRNN++: Table 12's parameter counts from the reference configs, OpenSTL's state-dict names,
teacher forcing in training only, the quantizer slot."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import ForecastShape, build_model

MODEL = "predrnnpp"
# Table 12 (printed, digits after the point) and what the reference config builds at the paper shape.
TABLE12 = {
    "human36m": (39.3, 1, 39_305_216),
    "kth": (38.3, 1, 38_313_984),
    "kitticaltech": (38.5, 1, 38_494_208),
    "weatherbench-s-t2m": (38.31, 2, 38_313_984),  # no t2m_5_625/PredRNNpp.py: r_5_625's (same architecture)
    "taxibj": (38.40, 2, 38_404_096),
}


def paper_model(dataset: str, **cli):
    cfg = resolve(cli=dict(model=MODEL, dataset=dataset, scale="paper", **cli))
    with torch.device("meta"):
        return build_model(cfg, dataset_spec(dataset).shape)


@pytest.mark.parametrize("dataset", sorted(TABLE12))
def test_table12_parameter_count(dataset):
    printed, digits, built = TABLE12[dataset]
    n = sum(p.numel() for p in paper_model(dataset).parameters())
    assert n == built
    assert round(n / 1e6, digits) == printed


def test_paper_preset_is_the_reference_config():
    cfg = resolve(cli=dict(model=MODEL, dataset="taxibj", scale="paper"))
    assert (cfg.rnn_hidden, cfg.rnn_layers, cfg.filter_size, cfg.patch_size, cfg.stride, cfg.layer_norm) == \
        (128, 4, 5, 2, 1, False)
    assert (cfg.lr, cfg.batch_size, cfg.schedule, cfg.warmup_epochs, cfg.loss, cfg.quantizer) == \
        (1e-4, 16, "cosine", 5, "l2", "none")
    assert resolve(cli=dict(model=MODEL, dataset="kitticaltech", scale="paper")).lr == 5e-3
    assert (cfg.sampling_start_value, cfg.sampling_changing_rate, cfg.sampling_stop_iter) == (1.0, 2e-5, 50000)


def test_state_dict_keys_are_openstls():
    """Keys as openstl/models/predrnnpp_model.py + modules/predrnnpp_modules.py name them (4 layers, no LN)."""
    cell = ["conv_x.0.weight", "conv_h.0.weight", "conv_c.0.weight", "conv_m.0.weight", "conv_o.0.weight",
            "conv_c2m.0.weight", "conv_om.0.weight", "conv_last.weight"]
    expected = ({f"cell_list.{i}.{k}" for i in range(4) for k in cell} | {"conv_last.weight"}
                | {"gradient_highway.z_concat.0.weight", "gradient_highway.x_concat.0.weight"})
    assert set(paper_model("kth").state_dict()) == expected


def test_layer_norm_and_single_layer_are_refused_in_one_line():
    """The reference's gradient highway cannot run with layer norm (a LayerNorm of half its conv's
    width), and needs two layers."""
    from svqbench.errors import UserError
    with pytest.raises(UserError, match="layer"):
        paper_model("kth", layer_norm=True)
    with pytest.raises(UserError, match="rnn-layers >= 2"):
        paper_model("kth", rnn_layers=1)


def test_gradient_highway_starts_near_zero():
    """The reference initialises the highway's convolutions U(-0.001, 0.001)."""
    model = tiny()
    for conv in (model.gradient_highway.z_concat[0], model.gradient_highway.x_concat[0]):
        assert conv.weight.abs().max() <= 0.001 and conv.weight.abs().max() > 0


SHAPE = ForecastShape(in_len=3, out_len=3, channels=2, height=7, width=9)  # 7 x 9: padded to the patch


def tiny(**cli):
    torch.manual_seed(0)
    cfg = resolve(cli=dict(model=MODEL, dataset="embedded", rnn_hidden=4, rnn_layers=2, **cli))
    return build_model(cfg, SHAPE)


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, SHAPE.in_len, 2, 7, 9, generator=g), torch.randn(2, SHAPE.out_len, 2, 7, 9, generator=g))


def test_output_shape_with_padding():
    x, _ = batch(0)
    pred, aux = tiny()(x)
    assert pred.shape == (2, 3, 2, 7, 9) and aux.shape == ()


def test_evaluation_forecasts_from_inputs_alone():
    model = tiny().eval()
    x, y1 = batch(0)
    _, y2 = batch(1)
    with torch.no_grad():
        a, _ = model(x, target=y1)
        b, _ = model(x, target=y2)
        c, _ = model(x)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_teacher_forcing_uses_the_target_in_training():
    model = tiny(sampling_start_value=1.0, sampling_changing_rate=0.0)  # every future frame is the true one
    x, y1 = batch(0)
    _, y2 = batch(1)
    a, _ = model(x, target=y1, step=0, generator=torch.Generator().manual_seed(3))
    b, _ = model(x, target=y2, step=0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[:, 0], b[:, 0])  # the first future frame comes from the inputs alone
    assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-6)


def test_no_teacher_forcing_after_the_schedule_ends():
    model = tiny(sampling_stop_iter=10)
    x, y1 = batch(0)
    _, y2 = batch(1)
    a, _ = model(x, target=y1, step=10, generator=torch.Generator().manual_seed(3))
    b, _ = model(x, target=y2, step=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_svq_changes_the_model():
    plain, svq = tiny(), tiny(quantizer="svq", codebook_size=16)
    assert sum(p.numel() for p in svq.parameters()) > sum(p.numel() for p in plain.parameters())
    assert set(plain.state_dict()) < set(svq.state_dict())
    x, _ = batch(0)
    assert not torch.allclose(plain(x)[0], svq(x)[0])


def test_quick_preset_is_small():
    cfg = resolve(cli=dict(model=MODEL, dataset="embedded"))
    n = sum(p.numel() for p in build_model(cfg, dataset_spec("embedded").shape).parameters())
    assert (cfg.scale, cfg.rnn_layers, cfg.rnn_hidden, cfg.quantizer) == ("quick", 2, 16, "none") and n < 200_000
