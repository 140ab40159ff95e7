"""E3D-LSTM: Table 12's parameter counts from the reference configs (built on the meta device: the
paper models are large), OpenSTL's state-dict names, strided convolutions, the global memory, the L1
half of its loss (its forecast interface, teacher forcing and quantizer slot: test_models.py)."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import build_model

from tiny_models import tiny_batch, tiny_model

MODEL = "e3dlstm"
# Table 12 (printed, digits after the point) and what the reference config builds at the paper shape.
TABLE12 = {
    "human36m": (60.9, 1, 60_850_176),
    "kth": (53.5, 1, 53_510_144),          # configs/kth/E3DLSTM.py's later version: patch 8 (patch 4: 52.9M)
    "kitticaltech": (54.9, 1, 54_886_400),
    "weatherbench-s-t2m": (51.09, 2, 51_085_312),  # no weather E3DLSTM.py: configs/E3DLSTM.py (patch 4)
    "taxibj": (50.99, 2, 50_987_008),
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
        (5e-3, 16, "cosine", 5, "l2", "none")
    kth = resolve(cli=dict(model=MODEL, dataset="kth", scale="paper"))
    assert (kth.patch_size, kth.stride, kth.lr, kth.batch_size) == (8, 2, 5e-4, 16)
    assert (cfg.sampling_start_value, cfg.sampling_changing_rate, cfg.sampling_stop_iter) == (1.0, 2e-5, 50000)


def test_state_dict_keys_are_openstls():
    """Keys as openstl/models/e3dlstm_model.py + modules/e3dlstm_modules.py name them (4 layers, no LN;
    tf_Conv3d wraps its nn.Conv3d as `conv3d`)."""
    cell = ["_norm_c_t.weight", "_norm_c_t.bias", "conv_x.0.conv3d.weight", "conv_h.0.conv3d.weight",
            "conv_gm.0.conv3d.weight", "conv_new_cell.0.conv3d.weight", "conv_new_gm.0.conv3d.weight",
            "conv_last.conv3d.weight"]
    expected = {f"cell_list.{i}.{k}" for i in range(4) for k in cell} | {"conv_last.weight"}
    assert set(paper_model("taxibj").state_dict()) == expected
    with_ln = set(paper_model("taxibj", layer_norm=True).state_dict())
    assert {"cell_list.0.conv_x.1.weight", "cell_list.3.conv_new_gm.1.bias"} <= with_ln


def test_strided_convolutions_keep_the_state_size():
    """KTH's config strides its 3D convolutions by 2; tf_Conv3d resizes their outputs back."""
    x, _ = tiny_batch(MODEL, 0)
    pred, _ = tiny_model(MODEL, stride=2)(x)
    assert pred.shape == (2, 3, 2, 7, 9)


def test_global_memory_passes_through_unchanged():
    """As in the reference, a cell returns the global memory it was given (not its update)."""
    cell = tiny_model(MODEL).cell_list[0]
    b, (n, d, h, w) = 2, cell._norm_c_t.normalized_shape
    memory = torch.randn(b, n, d, h, w)
    x = torch.randn(b, cell.conv_x[0].conv3d.in_channels, d, h, w)
    state = torch.zeros(b, n, d, h, w)
    _, _, returned = cell(x, state, state, memory, state)
    assert returned is memory


def test_extra_loss_is_the_l1_over_every_predicted_frame():
    """The L1 half of the reference's MSE + L1, over frames 1..T-1 (the input phase included)."""
    model = tiny_model(MODEL)
    frames = torch.zeros(2, 6, 2, 3, 64)
    next_frames = torch.zeros(2, 5, 2, 3, 64)
    next_frames[:, 0] = 5.0  # the first prediction is the second input frame's
    assert model.extra_loss(next_frames, frames).item() == pytest.approx(1.0)
