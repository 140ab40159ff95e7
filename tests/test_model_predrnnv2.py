"""PredRNN.V2: Table 12's parameter counts, OpenSTL's state-dict names, reverse scheduled sampling
(the reference's probabilities; the target used in training only), the decoupling loss (in training,
not at evaluation); its forecast interface and quantizer slot: test_models.py."""
from __future__ import annotations

import pytest
import torch

from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import build_model
from svqbench.models.recurrent import reverse_probs, sampling_of

from tiny_models import TINY, tiny_batch, tiny_model

MODEL = "predrnnv2"
# Table 12 (printed, digits after the point) and what the reference config builds at the paper shape.
# WeatherBench-S prints 23.59M; configs/weather/t2m_5_625/PredRNNv2.py builds 23,584,768 (23.58M):
# PredRNN's 23,568,384 plus the 128 x 128 adapter. Pinned as built.
TABLE12 = {
    "human36m": (24.6, 1, 24_576_000),
    "kth": (23.6, 1, 23_584_768),
    "kitticaltech": (23.8, 1, 23_764_992),
    "weatherbench-s-t2m": (23.59, 2, 23_584_768),
    "taxibj": (23.67, 2, 23_674_880),
}
PRINTED_MISMATCH = {"weatherbench-s-t2m"}


def paper_model(dataset: str, **cli):
    cfg = resolve(cli=dict(model=MODEL, dataset=dataset, scale="paper", **cli))
    with torch.device("meta"):
        return build_model(cfg, dataset_spec(dataset).shape)


@pytest.mark.parametrize("dataset", sorted(TABLE12))
def test_table12_parameter_count(dataset):
    printed, digits, built = TABLE12[dataset]
    n = sum(p.numel() for p in paper_model(dataset).parameters())
    assert n == built
    if dataset in PRINTED_MISMATCH:
        assert round(n / 1e6, digits) != printed
    else:
        assert round(n / 1e6, digits) == printed


def test_paper_preset_is_the_reference_config():
    cfg = resolve(cli=dict(model=MODEL, dataset="kth", scale="paper"))
    assert (cfg.rnn_hidden, cfg.rnn_layers, cfg.filter_size, cfg.patch_size, cfg.layer_norm) == (128, 4, 5, 2, False)
    assert (cfg.decouple_beta, cfg.lr, cfg.schedule, cfg.loss, cfg.quantizer) == (0.01, 1e-3, "onecycle", "l2", "none")
    assert (cfg.r_sampling_step_1, cfg.r_sampling_step_2, cfg.r_exp_alpha) == (25000, 50000, 5000.0)
    assert resolve(cli=dict(model=MODEL, dataset="weatherbench-s-t2m", scale="paper")).decouple_beta == 0.1


def test_reverse_schedule_matches_the_reference_formula():
    """openstl/utils reserve_schedule_sampling_exp at the paper settings: (r_eta, eta) is (0.5, 0.5)
    before step 25000; at 30000, r_eta = 1 - 0.5 exp(-5000/5000) and eta = 0.5 - 0.5/25000 * 5000;
    (1, 0) from step 50000."""
    s = sampling_of(resolve(cli=dict(model=MODEL, dataset="taxibj", scale="paper")), "reverse")
    assert reverse_probs(s, 0) == (0.5, 0.5)
    r_eta, eta = reverse_probs(s, 30000)
    assert r_eta == pytest.approx(0.8160602794142788, abs=1e-12)
    assert eta == pytest.approx(0.4, abs=1e-12)
    assert reverse_probs(s, 60000) == (1.0, 0.0)


def test_state_dict_keys_are_openstls():
    """Keys as openstl/models/predrnnv2_model.py names them (SpatioTemporalLSTMCellv2 has PredRNN's layers)."""
    cell = ["conv_x.0.weight", "conv_h.0.weight", "conv_m.0.weight", "conv_o.0.weight", "conv_last.weight"]
    expected = {f"cell_list.{i}.{k}" for i in range(4) for k in cell} | {"conv_last.weight", "adapter.weight"}
    assert set(paper_model("kth").state_dict()) == expected


def test_reverse_sampling_feeds_true_frames_in_training():
    """Before r_sampling_step_1 each future frame is the true one with probability 0.5 (the draws of
    this generator include some); after r_sampling_step_2 the inputs are all true and the future all
    predicted, i.e. the evaluation rollout."""
    model = tiny_model(MODEL, r_sampling_step_1=10, r_sampling_step_2=20)
    x, y1 = tiny_batch(MODEL, 0)
    _, y2 = tiny_batch(MODEL, 1)
    a, _ = model(x, target=y1, step=0, generator=torch.Generator().manual_seed(3))
    b, _ = model(x, target=y2, step=0, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(a, b, atol=1e-6)
    late1, _ = model(x, target=y1, step=20, generator=torch.Generator().manual_seed(3))
    late2, _ = model(x, target=y2, step=20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        evaluation, _ = model(x)
    assert torch.equal(late1, late2)
    assert torch.allclose(late1, evaluation, atol=1e-6)


def test_decoupling_loss_in_training_and_absent_at_evaluation():
    """The same weights with decouple_beta 0.1 and 0: the training aux differs by (T-1)/out_len x 0.1 x
    the decoupling loss (recurrent.py's scaling), which is > 0; at evaluation aux is 0."""
    x, y = tiny_batch(MODEL, 0)
    with_beta, without = tiny_model(MODEL, decouple_beta=0.1), tiny_model(MODEL, decouple_beta=0.0)
    kw = dict(target=y, step=0)
    _, aux_with = with_beta(x, generator=torch.Generator().manual_seed(3), **kw)
    decouple = with_beta._decouple
    _, aux_without = without(x, generator=torch.Generator().manual_seed(3), **kw)
    assert decouple > 0
    shape = TINY[MODEL]
    scale = (shape.in_len + shape.out_len - 1) / shape.out_len
    assert (aux_with - aux_without).item() == pytest.approx(scale * 0.1 * decouple.item(), rel=1e-5)
    _, aux_eval = with_beta.eval()(x)
    assert aux_eval.item() == 0.0
