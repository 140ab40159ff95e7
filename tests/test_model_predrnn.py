"""PredRNN: Table 12's parameter counts from the reference configs, OpenSTL's state-dict names
(its forecast interface, teacher forcing and quantizer slot: test_models.py)."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import build_model

MODEL = "predrnn"
# Table 12 (printed, digits after the point) and what the reference config builds at the paper shape.
TABLE12 = {
    "human36m": (24.6, 1, 24_559_616),
    "kth": (23.6, 1, 23_568_384),
    "kitticaltech": (23.7, 1, 23_748_608),     # no configs/kitticaltech/PredRNN.py: patch 2 as its PredRNNv2.py
    "weatherbench-s-t2m": (23.57, 2, 23_568_384),
    "taxibj": (23.66, 2, 23_658_496),
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
    assert (cfg.sampling_start_value, cfg.sampling_changing_rate, cfg.sampling_stop_iter) == (1.0, 2e-5, 50000)


def test_state_dict_keys_are_openstls():
    """Keys as openstl/models/predrnn_model.py + modules/predrnn_modules.py name them (4 layers, no LN)."""
    cell = ["conv_x.0.weight", "conv_h.0.weight", "conv_m.0.weight", "conv_o.0.weight", "conv_last.weight"]
    expected = {f"cell_list.{i}.{k}" for i in range(4) for k in cell} | {"conv_last.weight"}
    assert set(paper_model("kth").state_dict()) == expected
    with_ln = set(paper_model("kth", layer_norm=True).state_dict())
    assert {"cell_list.0.conv_x.1.weight", "cell_list.3.conv_m.1.bias", "cell_list.2.conv_o.1.weight"} <= with_ln
