"""PredRNN++: Table 12's parameter counts from the reference configs, OpenSTL's state-dict names,
the gradient highway (its forecast interface, teacher forcing and quantizer slot: test_models.py)."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import build_model

from tiny_models import tiny_model

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
    model = tiny_model(MODEL)
    for conv in (model.gradient_highway.z_concat[0], model.gradient_highway.x_concat[0]):
        assert conv.weight.abs().max() <= 0.001 and conv.weight.abs().max() > 0
