"""compare's statistics on constructed leaderboards whose answer is known."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from svqbench.results import compare_table, load_leaderboards, read_leaderboard, unit_label

CELL = dict(dataset="embedded", scale="quick", backbone="gsta", loss="l1", noise=0.0, persistence_mse=0.7,
            persistence_mae=0.6677, climatology_mse=30.0, climatology_mae=4.51, units="K")


def board(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**CELL, "run_id": f"r{i}", "test_mse": r["test_mae"] ** 2, **r} for i, r in enumerate(rows)])


# the issue's three seeds on the embedded data: test MAE in K
ISSUE = {"svq": (0.5272, 0.5273, 0.5361), "none": (0.5419, 0.5295, 0.5338), "mlp": (0.5547, 0.5349, 0.5267)}


def issue_board() -> pd.DataFrame:
    return board([dict(quantizer=q, seed=42 + i, test_mae=v) for q, vs in ISSUE.items() for i, v in enumerate(vs)])


def test_three_seed_embedded_runs_are_within_noise():
    table = compare_table(issue_board()).set_index("method")
    diffs = np.subtract(ISSUE["svq"], ISSUE["none"])
    # the gain is none - method: positive = lower error, the sign of the improvement %
    assert table.loc["svq", "mae_gain"] == pytest.approx(-diffs.mean())
    half = 4.302653 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert (table.loc["svq", "mae_gain_ci_low"], table.loc["svq", "mae_gain_ci_high"]) == pytest.approx(
        (-diffs.mean() - half, -diffs.mean() + half))
    assert np.sign(table.loc["svq", "mae_gain"]) == np.sign(table.loc["svq", "mae_improvement_pct"]) == 1
    assert table.loc["svq", "mae_verdict"] == table.loc["mlp", "mae_verdict"] == "within noise"
    assert table.loc["svq", "ci_method"] == "paired t over 3 seeds"
    assert np.isnan(table.loc["none"].get("mae_gain", np.nan)) and table.attrs["warnings"] == []


def test_a_consistent_improvement_is_better_and_a_loss_is_worse():
    rows = [dict(quantizer="none", seed=s, test_mae=0.60 + 0.01 * s) for s in range(4)]
    rows += [dict(quantizer="svq", seed=s, test_mae=0.55 + 0.01 * s + 0.001 * (s % 2)) for s in range(4)]
    rows += [dict(quantizer="vq", seed=s, test_mae=0.70 + 0.01 * s - 0.002 * (s % 2)) for s in range(4)]
    table = compare_table(board(rows)).set_index("method")
    assert table.loc["svq", "mae_verdict"] == "better" and table.loc["svq", "mae_gain_ci_low"] > 0
    assert table.loc["vq", "mae_verdict"] == "worse" and table.loc["vq", "mae_gain_ci_high"] < 0
    assert table.loc["vq", "mae_gain"] < 0 and table.loc["vq", "mae_improvement_pct"] < 0
    # paired: the seed-to-seed spread (0.03) is far larger than the paired spread, yet the verdict is sure
    assert table.loc["svq", "mae_std"] > 0.01


def test_few_seeds_warn_and_same_seed_runs_count_once():
    rows = [dict(quantizer="none", seed=1, test_mae=0.6), dict(quantizer="svq", seed=1, test_mae=0.5),
            dict(quantizer="svq", seed=1, test_mae=0.52)]  # one process and torchrun, same seed
    table = compare_table(board(rows)).set_index("method")
    assert table.loc["svq", "runs"] == 2 and table.loc["svq", "seeds"] == 1
    assert table.loc["svq", "mae_mean"] == pytest.approx(0.51) and np.isnan(table.loc["svq", "mae_std"])
    assert table.loc["svq", "mae_verdict"] == "n/a" and "no per-window errors" in table.loc["svq", "ci_method"]
    warnings = " ".join(table.attrs["warnings"])
    assert "1 seed (fewer than 3)" in warnings and "same seed (1) averaged as one seed" in warnings


def test_one_seed_uses_a_bootstrap_over_saved_window_errors(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.gamma(4, 0.15, 400)
    for name, errors in (("none", base), ("svq", base - 0.05 + rng.normal(0, 0.01, 400))):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "window_errors_test.npz", mae=errors, mse=errors ** 2)
        (tmp_path / name / "config.json").write_text('{"dataset_meta": {"in_len": 4, "out_len": 4}}')
    rows = [dict(quantizer=q, seed=1, test_mae=0.6 - 0.05 * (q == "svq"), run_dir=str(tmp_path / q))
            for q in ("none", "svq")]
    table = compare_table(board(rows)).set_index("method")
    assert table.loc["svq", "ci_method"] == "bootstrap over test windows (1 seed)"
    assert table.loc["svq", "mae_verdict"] == "better"
    assert table.loc["svq", "mae_gain_ci_low"] < 0.05 < table.loc["svq", "mae_gain_ci_high"]


def test_runs_on_different_prepared_data_are_never_compared():
    rows = [dict(quantizer="none", seed=1, test_mae=0.6, data_digest="sha256:aaa"),
            dict(quantizer="svq", seed=1, test_mae=0.5, data_digest="sha256:bbb", persistence_mae=1.5),
            dict(quantizer="none", seed=1, test_mae=0.9, data_digest="sha256:bbb", persistence_mae=1.5)]
    table = compare_table(board(rows))
    svq = table[table.method == "svq"].iloc[0]
    # the table shows a digest as its first 12 hex characters (the leaderboard keeps the whole one)
    assert svq["data_digest"] == "bbb" and svq["mae_improvement_pct"] == pytest.approx(100 * 0.4 / 0.9)
    persistence = table[table.method == "persistence"].set_index("data_digest")["mae_mean"]
    assert persistence.to_dict() == {"aaa": 0.6677, "bbb": 1.5}


def test_compare_cli_prints_the_interval_verdict_and_units(tmp_path):
    issue_board().to_csv(tmp_path / "leaderboard.csv", index=False)
    out = subprocess.run([sys.executable, "-m", "svqbench", "compare", str(tmp_path), "--csv", str(tmp_path / "t.csv")],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="250"))
    assert out.returncode == 0, out.stderr
    assert "within noise" in out.stdout and "MAE (K)" in out.stdout and "MSE (K²)" in out.stdout
    assert "paired t over 3 seeds" in out.stdout
    saved = read_leaderboard(tmp_path / "t.csv").set_index("method")
    assert saved.loc["svq", "mae_verdict"] == "within noise"
    assert saved.loc["svq", "mae_gain_ci_low"] < 0 < saved.loc["svq", "mae_gain_ci_high"]
    assert saved.loc["svq", "mae_gain"] > 0 and saved.loc["svq", "mae_improvement_pct"] > 0  # one sign


def test_one_unit_is_shown_and_dimensionless_or_mixed_units_are_not():
    assert unit_label(pd.Series(["K", None, "K"])) == "K"
    assert unit_label(["1"]) == "" and unit_label(["K,%"]) == "" and unit_label(["K", "m s-1"]) == ""
    assert unit_label([None, float("nan")]) == ""


def test_compare_of_a_dimensionless_field_prints_no_unit(tmp_path, monkeypatch, capsys):
    from helpers import cli
    issue_board().assign(units="1").to_csv(tmp_path / "leaderboard.csv", index=False)  # synthetic-advection's unit
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(["compare", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    assert "MAE gain vs none [95% CI]" in out and "(1)" not in out and "1²" not in out


def test_one_seed_on_the_embedded_26_windows_prints_no_interval_and_no_verdict(tmp_path, monkeypatch, capsys):
    # the issue's case: one seed each of svq and none on the embedded data (26 stride-1 test windows of
    # 10 + 5 years); every window favours svq, yet 26 overlapping windows are less than one block
    from helpers import cli
    rng = np.random.default_rng(0)
    base = 0.53 + 0.02 * rng.normal(size=26)
    for name, errors in (("none", base), ("svq", base - 0.0338 + 0.001 * rng.normal(size=26))):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "window_errors_test.npz", mae=errors, mse=errors ** 2)
        (tmp_path / name / "config.json").write_text('{"config": {}, "dataset_meta": {"in_len": 10, "out_len": 5}}')
    rows = [dict(run_id=q, quantizer=q, seed=42, test_mae=0.53 - 0.0338 * (q == "svq")) for q in ("none", "svq")]
    board(rows).to_csv(tmp_path / "leaderboard.csv", index=False)
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(["compare", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    assert "cannot tell from one seed on 26 windows: run 3 seeds" in out
    svq = next(line for line in out.splitlines() if line.strip("│ ").startswith("svq"))
    assert "+0.0338" in svq and "[" not in svq and "better" not in svq and "n/a" in svq


# ------------------------------------------------------------------ hand-edited and empty leaderboards

def test_a_leaderboard_with_only_its_header_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from helpers import cli
    board([dict(quantizer="none", seed=1, test_mae=0.6)]).iloc[:0].to_csv(tmp_path / "leaderboard.csv", index=False)
    for extra in ([], ["--scorecard"]):
        code, out, err = cli(["compare", str(tmp_path), *extra], monkeypatch, capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "no run to compare" in err and "leaderboard.csv" in err


def test_rows_that_do_not_fit_the_schema_are_skipped_with_their_line_numbers(tmp_path, monkeypatch, capsys):
    from helpers import cli
    issue_board().to_csv(tmp_path / "leaderboard.csv", index=False)  # header + 9 rows: lines 2-10
    good = (tmp_path / "leaderboard.csv").read_text()
    svq_row = good.splitlines()[1]  # svq, seed 42
    text = svq_row.replace(",42,", ",45,").replace("0.5272", '"abc"', 1)
    assert '"abc"' in text and ",45," in text
    with open(tmp_path / "leaderboard.csv", "a") as f:
        f.write(text + "\n")                       # line 11: test_mae "abc" (was: a 4th svq seed)
        f.write(svq_row[: len(svq_row) // 2] + "\n")  # line 12: half-written (was: a run)
        f.write("x,y\n")                           # line 13: (was: a method "y///")
    warnings = []
    loaded = load_leaderboards(tmp_path, warn=warnings.append)
    assert len(loaded) == 9 and set(loaded["dataset"]) == {"embedded"}
    assert len(warnings) == 1 and "skipped line(s) 11, 12, 13 " in warnings[0]
    assert "line 11: test_mae 'abc' is not a number" in warnings[0]
    table = compare_table(loaded).set_index("method")
    assert set(table.index) == {"none", "svq", "mlp", "persistence", "climatology"}  # no method "y///"
    assert table.loc["svq", "seeds"] == 3 and table.loc["svq", "ci_method"] == "paired t over 3 seeds"
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(["compare", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if "skipped" in line] == [f"warning: {warnings[0]}"]
    assert "paired t over 3 seeds" in out


def test_a_run_id_used_again_replaces_its_row(tmp_path):
    # a run finished, its folder was deleted by hand, and a new run took the same name
    from svqbench.results import append_row
    append_row(tmp_path, dict(run_id="007", dataset="embedded", quantizer="NA", seed=1, test_mae=0.61))
    append_row(tmp_path, dict(run_id="b", dataset="embedded", quantizer="svq", seed=1, test_mae=0.62))
    before = (tmp_path / "leaderboard.csv").read_text()
    append_row(tmp_path, dict(run_id="b", dataset="embedded", quantizer="svq", seed=2, test_mae=0.55))
    board_now = read_leaderboard(tmp_path / "leaderboard.csv")
    assert list(board_now["run_id"]) == ["007", "b"] and board_now.loc[1, "seed"] == 2
    assert board_now.loc[1, "test_mae"] == pytest.approx(0.55, abs=1e-12)
    # the other rows are kept exactly as written (no numeric round trip)
    assert (tmp_path / "leaderboard.csv").read_text().splitlines()[1] == before.splitlines()[1]


def test_a_run_id_recorded_twice_by_an_older_version_counts_once(tmp_path):
    rows = issue_board()
    again = rows.iloc[[0]].assign(test_mae=0.5, test_mse=0.25)  # r0 again, the newer run
    pd.concat([rows, again]).to_csv(tmp_path / "leaderboard.csv", index=False)
    warnings = []
    loaded = load_leaderboards(tmp_path, warn=warnings.append)
    assert len(loaded) == 9 and loaded.set_index("run_id").loc["r0", "test_mae"] == 0.5
    assert len(warnings) == 1 and "r0 (line 2, again on line 11)" in warnings[0]


def test_compare_sections_name_each_column_once_in_every_table():
    """compare's tables are built here (the CLI only draws them); a later table once repeated the published
    columns of an earlier one (paper MSE ... published cell twice)."""
    from svqbench.results import compare_sections, load_paper
    cell = dict(dataset="weatherbench-s-t2m", scale="paper", backbone="gsta", loss="l1", noise=0.0,
                codebook_size=10000, frozen_codebook=False, svq_hidden=128, svq_one_layer=False, svq_post_relu=False,
                svq_frozen_projection=False, codebook_init="normal", placement="before", units="K")
    rows = [dict(cell, run_id=f"{q}{s}", quantizer=q, seed=s, test_mse=1.0 + 0.01 * s - (0.1 if q == "svq" else 0),
                 test_mae=0.6 + 0.001 * s, persistence_mse=2.0, persistence_mae=1.1)
            for q in ("none", "svq") for s in (42, 43, 44)]
    rows += [dict(cell, dataset="embedded", scale="quick", run_id=f"q{q}", quantizer=q, seed=42, test_mse=0.5,
                  test_mae=0.4) for q in ("none", "svq")]
    sections = compare_sections(compare_table(board(rows), load_paper()))
    assert [s["title"].split(" (")[0] for s in sections] == ["embedded", "weatherbench-s-t2m"]
    for s in sections:
        assert len(s["headers"]) == len(set(s["headers"])) and all(len(r) == len(s["headers"]) for r in s["rows"])
    paper = sections[1]
    assert paper["headers"][-5:] == ["paper MSE", "MSE gap %", "paper MAE", "MAE gap %", "published cell"]
    svq = dict(zip(paper["headers"], paper["rows"][1]))
    assert svq["MSE (K²)"] == "1.3300 ± 0.0100" and svq["MSE improv. %"] == "+7.0" and svq["paper MSE"] == "1.018"
    assert svq["seeds"] == "3"
    persistence = dict(zip(paper["headers"], paper["rows"][2]))
    assert persistence["method"] == "persistence" and persistence["seeds"] == ""  # one forecast, no seeds
    assert paper["note"].startswith("gain and improvement % over the `none` runs of the same cell")
