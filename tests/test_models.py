"""The forecasting-model interface every registered model follows, and the model family's place in
the rest of svqbench (export, compare, profile, recipes)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import svqbench
from helpers import cli
from tiny_models import TINY, tiny_batch, tiny_model
from svqbench.config import resolve
from svqbench.data import dataset_spec
from svqbench.models import ForecastShape, build_model, model_names, model_preset

RECURRENT = [m for m in model_names() if m != "simvp"]
# The models trained with scheduled sampling (the true future frame fed with a probability that decays
# to 0 at sampling_stop_iter). PredRNN.V2's reverse schedule is tested in its own file; PredNet and
# DMVFN always see the true frames in training (tested in their own files).
SCHEDULED = ["convlstm", "predrnn", "predrnnpp", "mim", "e3dlstm", "mau", "phydnet"]
QUANTIZED = [m for m in RECURRENT if m != "dmvfn"]  # DMVFN has no latent state to quantize (refused)
# the cells' quick preset (two layers of 16 channels, no quantizer) builds fewer parameters than
QUICK_PARAMS_BELOW = {"convlstm": 50_000, "predrnn": 100_000, "predrnnpp": 200_000, "mim": 200_000,
                      "e3dlstm": 300_000}


def test_registry_lists_simvp_first_and_convlstm():
    assert model_names()[0] == "simvp" and "convlstm" in model_names()


@pytest.mark.parametrize("model", RECURRENT)
def test_every_model_has_presets_for_both_scales(model):
    for dataset in ("embedded", "kth", "weatherbench-s-t2m"):
        for scale in ("paper", "quick"):
            preset = model_preset(model, dataset, scale)
            assert preset, (model, dataset, scale)
            resolve(cli=dict(model=model, dataset=dataset, scale=scale))  # every value valid


@pytest.mark.parametrize("build", ["quick", "tiny"])
@pytest.mark.parametrize("model", RECURRENT)
def test_every_model_forecasts_from_inputs_alone_at_evaluation(model, build):
    """The interface: (pred, aux) with pred (B, out_len, C, H, W), the same forecast whatever target is
    passed without a step, aux 0 (no training loss at evaluation); built at the quick preset on the
    embedded 37 x 49 grid (not a multiple of any patch) and at the model's TINY settings."""
    if build == "quick":
        torch.manual_seed(0)
        cfg = resolve(cli=dict(model=model, dataset="embedded"))
        shape = dataset_spec("embedded").shape
        net = build_model(cfg, shape).eval()
    else:
        shape, net = TINY[model], tiny_model(model).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, shape.in_len, shape.channels, shape.height, shape.width, generator=g)
    y1, y2 = (torch.randn(2, shape.out_len, shape.channels, shape.height, shape.width, generator=g) for _ in range(2))
    with torch.no_grad():
        a, aux = net(x)
        b, _ = net(x, target=y1)
        c, _ = net(x, target=y2)
    assert a.shape == (2, shape.out_len, shape.channels, shape.height, shape.width) and aux.shape == ()
    assert torch.equal(a, b) and torch.equal(a, c)
    assert float(aux) == 0.0
    net.train()
    pred, aux = net(x, target=y1, step=0, generator=torch.Generator().manual_seed(1))
    assert pred.shape == a.shape and torch.isfinite(aux)


@pytest.mark.parametrize("model", RECURRENT)
def test_every_model_crops_its_padded_forecast_back_to_the_frame(model):
    """In training mode without a target too: the forecast has the frame's size, aux is a scalar."""
    shape = TINY[model]
    x, _ = tiny_batch(model, 0)
    pred, aux = tiny_model(model)(x)
    assert pred.shape == (2, shape.out_len, shape.channels, shape.height, shape.width) and aux.shape == ()


@pytest.mark.parametrize("model", SCHEDULED)
def test_every_scheduled_sampling_model_feeds_the_true_frames_while_teacher_forcing_is_certain(model):
    net = tiny_model(model, sampling_start_value=1.0, sampling_changing_rate=0.0)  # every future frame is the true one
    x, y1 = tiny_batch(model, 0)
    _, y2 = tiny_batch(model, 1)
    a, _ = net(x, target=y1, step=0, generator=torch.Generator().manual_seed(3))
    b, _ = net(x, target=y2, step=0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[:, 0], b[:, 0])  # the first future frame comes from the inputs alone
    assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-6)  # the next from the true first


@pytest.mark.parametrize("model", SCHEDULED)
def test_every_scheduled_sampling_model_ignores_the_target_once_teacher_forcing_is_off(model):
    """From sampling_stop_iter on, and from the first step when the schedule starts at 0, the training
    forecast feeds back the model's own frames: it does not depend on the target."""
    x, y1 = tiny_batch(model, 0)
    _, y2 = tiny_batch(model, 1)
    for settings, step in ((dict(sampling_stop_iter=10), 10), (dict(sampling_start_value=0.0), 0)):
        net = tiny_model(model, **settings)
        a, _ = net(x, target=y1, step=step, generator=torch.Generator().manual_seed(3))
        b, _ = net(x, target=y2, step=step, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b), settings


@pytest.mark.parametrize("model", QUANTIZED)
def test_every_model_with_a_latent_slot_is_changed_by_svq(model):
    """SVQ adds parameters (under `quantizer.`) to the model and changes its forecast, in training
    mode and at evaluation."""
    plain, svq = tiny_model(model), tiny_model(model, quantizer="svq", codebook_size=16)
    assert sum(p.numel() for p in svq.parameters()) > sum(p.numel() for p in plain.parameters())
    assert set(plain.state_dict()) < set(svq.state_dict())
    assert any(name.startswith("quantizer.") for name in svq.state_dict())
    x, _ = tiny_batch(model, 0)
    assert not torch.allclose(plain(x)[0], svq(x)[0])
    plain, svq = tiny_model(model).eval(), tiny_model(model, quantizer="svq", codebook_size=16).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x)[0], svq(x)[0])


@pytest.mark.parametrize("model", sorted(QUICK_PARAMS_BELOW))
def test_every_cell_quick_preset_is_two_small_layers_without_a_quantizer(model):
    cfg = resolve(cli=dict(model=model, dataset="embedded"))
    n = sum(p.numel() for p in build_model(cfg, dataset_spec("embedded").shape).parameters())
    assert (cfg.scale, cfg.rnn_layers, cfg.rnn_hidden, cfg.quantizer) == ("quick", 2, 16, "none")
    assert n < QUICK_PARAMS_BELOW[model]


def test_simvp_accepts_and_ignores_the_training_arguments():
    torch.manual_seed(0)
    cfg = resolve(cli=dict(hid_s=8, hid_t=16, n_t=2, codebook_size=32))
    net = build_model(cfg, ForecastShape(4, 2, 1, 8, 8)).eval()
    x, y = torch.randn(2, 4, 1, 8, 8), torch.randn(2, 2, 1, 8, 8)
    with torch.no_grad():
        a, _ = net(x)
        b, _ = net(x, target=y, step=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


RNN = dict(model="convlstm", rnn_hidden=4, rnn_layers=2, filter_size=3, epochs=1, batch_size=16, warmup_epochs=0)


def test_a_convlstm_run_exports_and_loads_back(tiny_root, tmp_path):
    from svqbench.experiment import run_experiment
    from svqbench.export import export_run
    metrics = run_experiment(resolve(cli=RNN), results_dir=tmp_path / "results", data_dir=tiny_root, run_id="r")
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    assert board["model"].tolist() == ["convlstm"]
    dest = export_run("r", tmp_path / "export", results_dir=tmp_path / "results", data_dir=tiny_root)
    assert json.loads((dest / "config.json").read_text())["config"]["model"] == "convlstm"
    assert "ConvLSTM with the `none` quantizer" in (dest / "README.md").read_text()
    run = svqbench.load_run("r", results_dir=tmp_path / "results", data_dir=tiny_root)
    x = np.stack([run.dataset.window("test", i)[0] for i in range(3)])
    loaded = svqbench.load_exported(dest)
    assert type(loaded.model).__name__ == "ConvLSTM"
    np.testing.assert_array_equal(loaded.forecast(x), run.forecast(x))
    assert loaded.metrics["test"] == metrics["test"]


def _row(run_id, model, quantizer, seed, mae):
    return dict(run_id=run_id, dataset="embedded", scale="quick", backbone="gsta", model=model, quantizer=quantizer,
                seed=seed, test_mse=mae ** 2, test_mae=mae)


def test_compare_has_a_model_column_and_pairs_within_the_model():
    from svqbench.results import compare_table
    board = pd.DataFrame([_row("a", "simvp", "none", 1, 1.0), _row("b", "simvp", "none", 2, 1.1),
                          _row("c", "convlstm", "none", 1, 2.0), _row("d", "convlstm", "none", 2, 2.2),
                          _row("e", "convlstm", "svq", 1, 1.0), _row("f", "convlstm", "svq", 2, 1.1)])
    table = compare_table(board).set_index("method")
    assert list(table.index) == ["none", "convlstm none", "convlstm svq"]
    assert table.loc["convlstm svq", "model"] == "convlstm" and table.loc["none", "model"] == "simvp"
    # the svq row is paired with ConvLSTM's none runs (2.0, 2.2), not SimVP's (1.0, 1.1)
    assert table.loc["convlstm svq", "mae_improvement_pct"] == pytest.approx(100 * (2.1 - 1.05) / 2.1)


def test_compare_with_a_baseline_pairs_models_with_each_other(tmp_path):
    """--baseline: every method of the cell is paired by seed with the named method, across models."""
    from svqbench.errors import UserError
    from svqbench.results import compare_sections, compare_table
    simvp, conv = (1.00, 1.10, 1.05), (1.20, 1.31, 1.24)
    board = pd.DataFrame([_row(f"s{i}", "simvp", "none", i, v) for i, v in enumerate(simvp)]
                         + [_row(f"c{i}", "convlstm", "none", i, v) for i, v in enumerate(conv)]
                         + [_row(f"q{i}", "convlstm", "svq", i, v + 0.5) for i, v in enumerate(conv)])
    table = compare_table(board, baseline="none").set_index("method")
    gains = np.subtract(simvp, conv)  # none - method, by seed
    assert table.loc["convlstm none", "mae_gain"] == pytest.approx(gains.mean())
    assert table.loc["convlstm none", "mae_verdict"] == "worse" and table.loc["convlstm none", "baseline"] == "none"
    assert table.loc["convlstm svq", "mae_gain"] == pytest.approx(gains.mean() - 0.5)
    assert np.isnan(table.loc["none"].get("mae_gain", np.nan))
    (section,) = compare_sections(table.reset_index())
    assert "MAE gain vs none [95% CI]" in section["headers"] and "over the `none` runs of the same cell" in section["note"]
    assert "(quick scale), SimVP backbone gsta — test split" in section["title"]  # the backbone is SimVP's
    # the default pairs each model with its own none: ConvLSTM's svq against ConvLSTM's none, exactly 0.5 worse
    default = compare_table(board).set_index("method")
    assert default.loc["convlstm svq", "mae_gain"] == pytest.approx(-0.5)
    assert default.loc["convlstm svq", "baseline"] == "convlstm none"
    (section,) = compare_sections(default.reset_index())
    assert "MAE gain vs convlstm none [95% CI]" in section["headers"]
    by_convlstm = compare_table(board, baseline="convlstm none").set_index("method")
    assert by_convlstm.loc["none", "mae_gain"] == pytest.approx(-gains.mean())
    with pytest.raises(UserError, match="--baseline 'mim none' is no method of any compared group; methods: "):
        compare_table(board, baseline="mim none")
    with pytest.raises(UserError, match="persistence is a reference forecast"):
        compare_table(board.assign(persistence_mse=2.0, persistence_mae=1.5), baseline="persistence")


def test_old_leaderboards_without_a_model_column_are_simvp():
    from svqbench.results import compare_table
    board = pd.DataFrame([_row("a", None, "none", 1, 1.0), _row("b", None, "svq", 1, 0.9)]).drop(columns="model")
    table = compare_table(board)
    assert list(table["method"]) == ["none", "svq"] and set(table["model"]) == {"simvp"}


def test_profile_counts_convlstm_as_table12_does():
    """Table 12: ConvLSTM on WeatherBench-S, 136G FLOPS (fvcore MACs over the 23-step sequence)."""
    from svqbench.profile import count_macs
    cfg = resolve(cli=dict(model="convlstm", dataset="weatherbench-s-t2m", scale="paper"))
    macs = count_macs(cfg, dataset_spec("weatherbench-s-t2m").shape)
    assert round(macs / 1e9) == 136


def test_recipes_list_recurrent_cells(monkeypatch, capsys):
    for scale in ("paper", "quick"):
        code, out, err = cli(["sweep", "table2", "--scale", scale, "--dry-run"], monkeypatch, capsys)
        assert code == 0, err
        assert "convlstm" in out


def test_profile_recipe_table12_sets_counts_beside_the_published(tmp_path, monkeypatch, capsys):
    from svqbench.profile import recipe_costs
    (row,) = recipe_costs("table12", "paper", cells=["convlstm-weatherbench-s-t2m"])
    assert (row["params"], row["paper_params_m"], row["paper_macs_g"]) == (14_928_384, 14.98, 136.0)
    assert row["macs_per_pass_g"] == pytest.approx(135.67, abs=0.01)
    (kth,) = recipe_costs("table12", "paper", cells=["simvp-kth"])  # 10 -> 20: two passes, counted per pass
    assert (kth["paper_params_m"], kth["paper_macs_g"]) == (12.2, 62.8)
    assert kth["macs_per_pass_g"] == pytest.approx(62.8, rel=0.01)
    code, out, err = cli(["profile", "--recipe", "table12", "--scale", "quick", "--csv", str(tmp_path / "p.csv")],
                         monkeypatch, capsys)
    assert code == 0, err
    assert "convlstm-embedded" in out and "dmvfn-embedded" in out and "simvp-svq-embedded" in out
    assert len(pd.read_csv(tmp_path / "p.csv")) == 13
    code, _, err = cli(["profile", "--recipe", "table12", "--model", "convlstm"], monkeypatch, capsys)
    assert code == 2 and "drop --model" in err


def test_a_model_that_is_not_a_name_is_one_line():
    from svqbench.errors import UserError
    with pytest.raises(UserError, match="bad value \\[\\] for model in recipe: expected str"):
        resolve(recipe={"model": []})


def test_a_patch_larger_than_the_frame_is_one_line(monkeypatch, capsys):
    code, _, err = cli(["run", "--model", "convlstm", "--patch-size", "64", "--data-dir", "/nonexistent-svqbench"],
                       monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "patch-size 64 is larger than the 37 x 49 frame" in err
