"""MIM: Table 12's parameter counts from the reference configs, OpenSTL's state-dict names, no state
carried from one batch to the next (its forecast interface, teacher forcing and quantizer slot:
test_models.py)."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import build_model

from tiny_models import tiny_batch, tiny_model

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
    x1, _ = tiny_batch(MODEL, 0)
    x2, _ = tiny_batch(MODEL, 1)
    model = tiny_model(MODEL).eval()
    with torch.no_grad():
        fresh, _ = model(x2)
        model(x1)
        after, _ = model(x2)
    assert torch.equal(fresh, after)
