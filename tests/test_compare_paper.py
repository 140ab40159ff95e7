"""The published numbers (svqbench/resources/paper/*.csv) and `compare` beside them: transcription checked
against the paper's own totals, matching by config, gaps, per-cell improvement, noise curves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from svqbench.errors import UserError
from svqbench.resources import paper_dir
from svqbench.results import compare_table, load_leaderboards, load_paper, published_values, split_methods

REPO = Path(__file__).resolve().parents[1]
PAPER = paper_dir()


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    return load_paper(PAPER)


def value(paper, table, model, metric, **keys) -> float:
    rows = paper[(paper.table == str(table)) & (paper.model == model) & (paper.metric == metric)]
    for k, v in keys.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, (table, model, metric, keys, len(rows))
    return float(rows["value"].iloc[0])


# ------------------------------------------------------------------ the transcription

def test_every_required_table_is_there_with_its_row_count(paper):
    counts = paper.groupby("table").size().to_dict()
    # rows x metrics as printed (Table 2: DMVFN has no Human3.6M numbers; Table 5: increases for eta > 0;
    # Table 12: params and MACs of 13 models x 5 datasets less its 7 blank cells)
    assert counts == {"1": 168, "2": 164, "3": 48, "4": 22, "5": 44, "6": 18, "7": 8, "8": 24, "12": 123, "13": 37,
                      "14": 56, "15": 8}
    assert paper["value"].notna().all()


def test_golden_values_from_the_paper(paper):
    assert value(paper, 1, "SimVP+SVQ (Learnable)", "mse_per_pixel", dataset="weatherbench-s-t2m") == 1.018
    assert value(paper, 1, "SimVP (w/o VQ)", "mse_per_pixel", dataset="weatherbench-m", variable="r") == 340.06
    assert value(paper, 2, "SimVP+SVQ (Learnable)", "lpips", dataset="kth") == 0.20658
    assert value(paper, 2, "SimVP (w/o VQ)", "mae_per_frame", dataset="human36m") == 1441.0
    assert value(paper, 3, "MLP-Mixer w SVQ", "mae_per_pixel") == 0.6455
    assert value(paper, 4, "Lookup Free Quantization (LFQ)", "mse_per_pixel") == 2.988
    assert value(paper, 5, "w/o SVQ", "mse_per_pixel", noise="0.1") == 1.386
    assert value(paper, 5, "w SVQ", "mae_per_pixel_increase_pct", noise="0.5") == 29.0
    assert value(paper, 6, "Learnable, one layer, K 10000", "mse_per_pixel") == 1.043
    assert value(paper, 8, "sparse(sparsity=0.9), Learnable", "kurtosis") == 41.558
    assert value(paper, 13, "SVQ (freeze)", "perplexity_theta2") == 438.39
    assert value(paper, 14, "SimVP (w/o VQ)", "mae_per_frame") == 15.03
    assert value(paper, 15, "frozen: Both", "mae_per_pixel") == 0.6387


@pytest.mark.parametrize("dataset, metric, printed", [
    ("weatherbench-s-t2m", "mse_per_pixel", 7.9), ("weatherbench-s-t2m", "mae_per_pixel", 7.0),
    ("weatherbench-s-r", "mse_per_pixel", 2.3), ("weatherbench-s-uv10", "mae_per_pixel", 3.5),
    ("weatherbench-s-tcc", "mse_per_pixel", 2.1),
])
def test_table1_improvement_row_follows_from_the_transcribed_cells(paper, dataset, metric, printed):
    """The paper's "Improvement" row: best SVQ over SimVP w/o VQ, recomputed from our CSV."""
    base = value(paper, 1, "SimVP (w/o VQ)", metric, dataset=dataset)
    best = min(value(paper, 1, m, metric, dataset=dataset) for m in ("SimVP+SVQ (Frozen)", "SimVP+SVQ (Learnable)"))
    assert round(100 * (base - best) / base, 1) == printed


def test_table5_increases_follow_from_the_transcribed_cells(paper):
    t5 = paper[paper.table == "5"]
    for model in ("w/o SVQ", "w SVQ"):
        for m in ("mse_per_pixel", "mae_per_pixel"):
            rows = t5[(t5.model == model) & (t5.metric == m)].set_index("noise")["value"]
            inc = t5[(t5.model == model) & (t5.metric == f"{m}_increase_pct")].set_index("noise")["value"]
            for eta, pct in inc.items():
                assert abs(100 * (rows[eta] / rows["0.0"] - 1) - pct) < 0.15, (model, m, eta)


def test_bad_paper_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"no published tables \(\*\.csv\) in"):
        load_paper(tmp_path)
    (tmp_path / "t.csv").write_text("table,model\n1,x\n")
    with pytest.raises(UserError, match=r"t.csv lacks column\(s\) dataset, metric, quantizer, value"):
        load_paper(tmp_path)


# ------------------------------------------------------------------ matching runs to published cells

T2M = dict(dataset="weatherbench-s-t2m", scale="paper", backbone="gsta", loss="l1", noise=0.0, codebook_size=10000,
           frozen_codebook=False, svq_hidden=128, svq_one_layer=False, svq_post_relu=False,
           svq_frozen_projection=False, codebook_init="normal", placement="before")


def run(**overrides) -> pd.Series:
    return pd.Series({**T2M, "quantizer": "svq", **overrides})


@pytest.mark.parametrize("overrides, mse, source", [
    (dict(), 1.018, "Table 1: SimVP+SVQ (Learnable)"),  # equally specific in T5/T6/T15: lowest table
    (dict(frozen_codebook=True), 1.023, "Table 1: SimVP+SVQ (Frozen)"),
    (dict(noise=0.1), 1.051, "Table 5: w SVQ"),
    (dict(quantizer="none", loss="l2", noise=0.3), 1.750, "Table 5: w/o SVQ"),
    (dict(quantizer="none"), 1.126, "Table 7: SimVP (MAE loss)"),
    (dict(loss="l2"), 1.099, "Table 7: SimVP+SVQ (Learnable, MSE loss)"),
    (dict(frozen_codebook=True, codebook_size=10), 1.070, "Table 6: Frozen, projection 128, K 10"),
    (dict(svq_post_relu=True), 1.032, "Table 6: Learnable, post-ReLU (projection 128), K 10000"),
    (dict(codebook_init="orthogonal", frozen_codebook=True), 1.034, "Table 8: orthogonal, Frozen"),
    (dict(frozen_codebook=True, svq_frozen_projection=True), 1.093, "Table 15: frozen: Both"),
    (dict(codebook_size=1024, frozen_codebook=True), 1.0393, "Table 13: SVQ (freeze)"),
    (dict(backbone="swin", quantizer="none", loss="l2"), 1.143, "Table 3: Swin w/o SVQ"),
    (dict(dataset="weatherbench-s-tcc", frozen_codebook=True), 0.0456, "Table 1: SimVP+SVQ (Frozen)"),
    (dict(model="simvp"), 1.018, "Table 1: SimVP+SVQ (Learnable)"),  # the paper's `model` column is a row name
])
def test_published_value_of_the_most_specific_matching_cell(paper, overrides, mse, source):
    found = published_values(run(**overrides), paper)
    assert found["mse_paper"] == mse and found["paper"] == source


@pytest.mark.parametrize("overrides", [
    dict(scale="quick"),                               # quick runs never stand beside published numbers
    dict(dataset="embedded"),
    dict(noise=0.15),                                  # no such eta in Table 5
    dict(codebook_size=64),
    dict(quantizer="none", loss="l2", backbone="tau", dataset="weatherbench-m"),  # per-variable rows only
    dict(model="convlstm", quantizer="none", loss="l2"),  # the cells with a quantizer are SimVP's
])
def test_no_published_value_without_a_matching_cell(paper, overrides):
    assert published_values(run(**overrides), paper) == {}


def test_a_setting_the_run_does_not_record_cannot_match(paper):
    """Every published SVQ cell states frozen or learnable: a run without that setting matches none."""
    bare = pd.Series({k: v for k, v in run().items() if k != "frozen_codebook"})
    assert published_values(bare, paper) == {}
    assert published_values(run(), paper) != {}


# ------------------------------------------------------------------ compare_table

def board(rows: list[dict]) -> pd.DataFrame:
    base = dict(T2M, seed=42, test_mae=0.5, persistence_mse=3.0, persistence_mae=1.0, climatology_mse=9.0,
                climatology_mae=2.0)
    return pd.DataFrame([{**base, "run_id": f"r{i}", **r} for i, r in enumerate(rows)])


def test_cells_are_never_averaged_together_and_improve_on_their_own_baseline():
    b = board([dict(quantizer="none", noise=0.0, test_mse=1.0), dict(quantizer="none", noise=0.2, test_mse=2.0),
               dict(quantizer="svq", noise=0.0, test_mse=0.9), dict(quantizer="svq", noise=0.2, test_mse=1.5),
               dict(quantizer="svq", noise=0.2, test_mse=1.7, seed=43)])
    table = compare_table(b).set_index("method")
    assert list(table.index) == ["none noise=0", "none noise=0.2", "svq noise=0", "svq noise=0.2", "persistence",
                                 "climatology"]
    assert table.loc["svq noise=0.2", "runs"] == 2 and table.loc["svq noise=0.2", "mse_mean"] == pytest.approx(1.6)
    assert table.loc["svq noise=0.2", "mse_std"] == pytest.approx(0.1414213, rel=1e-5)
    assert table.loc["svq noise=0.2", "mse_improvement_pct"] == pytest.approx(20.0)   # vs none at eta 0.2
    assert table.loc["svq noise=0", "mse_improvement_pct"] == pytest.approx(10.0)     # vs none at eta 0
    assert pd.isna(table.loc["none noise=0", "mse_improvement_pct"])
    assert "mse_paper" not in table.columns


def test_quantizer_settings_do_not_split_or_unmatch_the_baseline():
    b = board([dict(quantizer="none", test_mse=1.0, codebook_size=10000),
               dict(quantizer="svq", test_mse=0.8, codebook_size=10),
               dict(quantizer="svq", test_mse=0.9, codebook_size=1000)])
    table = compare_table(b).set_index("method")
    assert {"none", "svq codebook_size=10", "svq codebook_size=1000"} <= set(table.index)
    assert table.loc["svq codebook_size=10", "mse_improvement_pct"] == pytest.approx(20.0)


def test_compare_table_puts_the_published_value_and_gap_beside_paper_runs(paper):
    b = board([dict(quantizer="none", loss="l2", test_mse=1.2, test_mae=0.70),
               dict(quantizer="svq", test_mse=1.0, test_mae=0.61)])
    table = compare_table(b, paper).set_index("method")
    svq = table.loc["svq loss=l1"]
    assert (svq["mse_paper"], svq["mae_paper"], svq["paper"]) == (1.018, 0.6109, "Table 1: SimVP+SVQ (Learnable)")
    assert svq["mse_gap_pct"] == pytest.approx(100 * (1.0 - 1.018) / 1.018)
    none = table.loc["none loss=l2"]
    assert (none["mse_paper"], none["paper"]) == (1.105, "Table 1: SimVP (w/o VQ)")
    assert none["mae_gap_pct"] == pytest.approx(100 * (0.70 - 0.6567) / 0.6567)
    assert pd.isna(table.loc["persistence", "mse_paper"])
    # improvement is only against the none run of the same cell (here: none differs in loss)
    assert pd.isna(svq.get("mse_improvement_pct"))


def test_split_methods_orders_none_first():
    b = board([dict(quantizer="svq", test_mse=1.0), dict(quantizer="none", test_mse=1.0)])
    assert list(split_methods(b)) == ["none", "svq"]


def test_noise_table_and_curves(tmp_path):
    from svqbench.plots import noise_curves, noise_table
    rows = [dict(quantizer=q, noise=e, test_mse=m, seed=s) for q, base in (("none", 1.0), ("svq", 0.8))
            for e in (0.0, 0.2, 0.4) for s, m in ((42, base * (1 + e)), (43, base * (1 + e) + 0.02))]
    b = board(rows)
    table = noise_table(b).set_index(["method", "noise"])
    assert table.loc[("svq", 0.4), "mse_mean"] == pytest.approx(0.8 * 1.4 + 0.01)
    # the increase is paired by seed: mean and spread of each seed's increase over its own eta = 0 run
    per_seed = [100 * (1.2 / 1.0 - 1), 100 * (1.22 / 1.02 - 1)]
    assert table.loc[("none", 0.2), "mse_increase_pct"] == pytest.approx(np.mean(per_seed))
    assert table.loc[("none", 0.2), "mse_increase_pct_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert table.loc[("svq", 0.0), "mse_increase_pct"] == 0.0 and table.loc[("svq", 0.0), "runs"] == 2
    path = noise_curves(b, tmp_path / "noise.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    # compare --plots: runs without a folder give only the noise figure and its table
    from svqbench.plots import comparison_figures
    written = comparison_figures(b, tmp_path / "figs")
    stem = "weatherbench-s-t2m-paper-gsta"
    assert [p.name for p in written] == [f"{stem}-noise.png", f"{stem}-noise.csv"]
    saved = pd.read_csv(written[1])
    assert list(saved["method"]) == ["none"] * 3 + ["svq"] * 3
    assert saved["mse_increase_pct"].round(3).tolist() == table.reset_index()["mse_increase_pct"].round(3).tolist()


def test_compare_cli_shows_paper_columns(tmp_path):
    """`svqbench compare DIR --paper results/paper --csv OUT`: published value and gap in the table."""
    results = tmp_path / "results"
    results.mkdir()
    b = board([dict(quantizer="svq", test_mse=1.0, test_mae=0.61)])
    b.to_csv(results / "leaderboard.csv", index=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="250")
    out = subprocess.run([sys.executable, "-m", "svqbench", "compare", str(results), "--paper", str(PAPER), "--csv",
                          str(tmp_path / "t.csv")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "paper MSE" in out.stdout and "1.018" in out.stdout and "Table 1: SimVP+SVQ" in out.stdout
    written = pd.read_csv(tmp_path / "t.csv")
    assert written.loc[written.method == "svq", "mse_gap_pct"].iloc[0] == pytest.approx(100 * (1.0 - 1.018) / 1.018)
    missing = subprocess.run([sys.executable, "-m", "svqbench", "compare", str(results), "--paper",
                              str(tmp_path / "nope")], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no published tables" in missing.stderr


def test_load_leaderboards_attaches_run_configs(tmp_path):
    b = board([dict(quantizer="svq", test_mse=1.0)])[["run_id", "dataset", "scale", "backbone", "quantizer", "seed",
                                                      "test_mse", "test_mae"]]
    b.to_csv(tmp_path / "leaderboard.csv", index=False)
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "config.json").write_text(json.dumps({"config": {"codebook_size": 77, "noise": 0.1}}))
    loaded = load_leaderboards(tmp_path)
    assert (loaded.loc[0, "codebook_size"], loaded.loc[0, "noise"]) == (77, 0.1)
    assert loaded.loc[0, "run_dir"] == str(tmp_path / "r0")
