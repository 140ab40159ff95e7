"""MIM: Table 12's parameter counts from the reference configs, OpenSTL's state-dict names,
teacher forcing in training only, no state carried from one batch to the next, the quantizer slot."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import ForecastShape, build_model

MODEL = "mim"
# Table 12 (printed, digits after the point) and what the reference config builds at the paper shape.
TABLE12 = {
    "human36m": (47.6, 1, 47_611_904),
    "kth": (39.8, 1, 39_813_120),
    "kitticaltech": (49.2, 1, 49_160_192),
    "weatherbench-s-t2m": (37.75, 2, 37_748_736),  # no t2m_5_625/MIM.py: uv10_5_625's (patch 4)
    "taxibj": (37.86, 2, 37_863_424),
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
        (1e-2, 16, "cosine", 5, "l2", "none")
    assert resolve(cli=dict(model=MODEL, dataset="weatherbench-s-t2m", scale="paper")).patch_size == 4
    assert (cfg.sampling_start_value, cfg.sampling_changing_rate, cfg.sampling_stop_iter) == (1.0, 2e-5, 50000)


def test_state_dict_keys_are_openstls():
    """Keys as openstl/models/mim_model.py + modules/mim_modules.py name them (4 layers, no LN): an
    ST-LSTM cell, three MIM blocks, three MIMN cells."""
    st_lstm = ["conv_x.0.weight", "conv_h.0.weight", "conv_m.0.weight", "conv_o.0.weight", "conv_last.weight"]
    lstm = ["ct_weight", "oc_weight", "conv_h_concat.0.weight", "conv_x_concat.0.weight", "conv_last.weight"]
    block = lstm + ["conv_t_cc.0.weight", "conv_s_cc.0.weight", "conv_x_cc.0.weight"]
    expected = ({f"stlstm_layer.0.{k}" for k in st_lstm} | {f"stlstm_layer.{i}.{k}" for i in (1, 2, 3) for k in block}
                | {f"stlstm_layer_diff.{i}.{k}" for i in (0, 1, 2) for k in lstm} | {"conv_last.weight"})
    assert set(paper_model("kth").state_dict()) == expected
    with_ln = set(paper_model("kth", layer_norm=True).state_dict())
    assert {"stlstm_layer.1.conv_t_cc.1.weight", "stlstm_layer_diff.2.conv_x_concat.1.bias"} <= with_ln


def test_no_state_carries_over_between_batches():
    """The reference keeps its MIMS cell state on the module from one batch to the next; here each
    sequence starts from zeros, so a forecast does not depend on what ran before it."""
    x1, _ = batch(0)
    x2, _ = batch(1)
    model = tiny().eval()
    with torch.no_grad():
        fresh, _ = model(x2)
        model(x1)
        after, _ = model(x2)
    assert torch.equal(fresh, after)


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
