"""E3D-LSTM: Table 12's parameter counts from the reference configs (built on the meta device: the
paper models are large), OpenSTL's state-dict names, teacher forcing in training only, the L1 half
of its loss, the quantizer slot."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import ForecastShape, build_model

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
    x, _ = batch(0)
    pred, _ = tiny(stride=2)(x)
    assert pred.shape == (2, 3, 2, 7, 9)


def test_global_memory_passes_through_unchanged():
    """As in the reference, a cell returns the global memory it was given (not its update)."""
    cell = tiny().cell_list[0]
    b, (n, d, h, w) = 2, cell._norm_c_t.normalized_shape
    memory = torch.randn(b, n, d, h, w)
    x = torch.randn(b, cell.conv_x[0].conv3d.in_channels, d, h, w)
    state = torch.zeros(b, n, d, h, w)
    _, _, returned = cell(x, state, state, memory, state)
    assert returned is memory


def test_extra_loss_is_the_l1_over_every_predicted_frame():
    """The L1 half of the reference's MSE + L1, over frames 1..T-1 (the input phase included)."""
    model = tiny()
    frames = torch.zeros(2, 6, 2, 3, 64)
    next_frames = torch.zeros(2, 5, 2, 3, 64)
    next_frames[:, 0] = 5.0  # the first prediction is the second input frame's
    assert model.extra_loss(next_frames, frames).item() == pytest.approx(1.0)


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
    assert (cfg.scale, cfg.rnn_layers, cfg.rnn_hidden, cfg.quantizer) == ("quick", 2, 16, "none") and n < 300_000
