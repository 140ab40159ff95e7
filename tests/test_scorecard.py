"""`compare --scorecard`: per-lead-time tables (rows lead times, columns runs and references) read
from each weather run's metrics.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from svqbench.results import REFERENCE_ROWS, load_leaderboards, scorecard


def by_lead(base: float, leads: int, channels: int = 1) -> dict:
    """A metrics dict with per-lead values base + lead / 10 (+ channel / 100 per channel)."""
    values = {
        "rmse_latweighted_by_lead": [base + t / 10 for t in range(leads)],
        "acc_latweighted_by_lead": [0.9 - t / 10 for t in range(leads)],
        "bias_latweighted_by_lead": [-base / 10] * leads,
        "rmse_per_pixel_by_lead": [base] * leads,
    }
    if channels > 1:
        values["rmse_latweighted_by_lead_by_channel"] = [[base + t / 10 + c / 100 for c in range(channels)]
                                                         for t in range(leads)]
    return values


def write_run(root: Path, run_id: str, test: dict, *, kind="weather", channels=("t2m",), refs=True, step="6 hours"):
    run = root / run_id
    run.mkdir(parents=True)
    metrics = {"run_id": run_id, "test": {**test, "metric_set": {"kind": kind, "channels": list(channels)}}}
    if refs:
        metrics.update({"persistence": by_lead(5.0, len(test["rmse_per_pixel_by_lead"]), len(channels)),
                        "climatology": {**by_lead(7.0, len(test["rmse_per_pixel_by_lead"]), len(channels)),
                                        "acc_latweighted_by_lead": [None] * len(test["rmse_per_pixel_by_lead"])},
                        "input_mean": by_lead(4.0, len(test["rmse_per_pixel_by_lead"]), len(channels))})
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"run_id": run_id, "config": {}, "dataset_meta": {"step": step}}))


def leaderboard(root: Path, rows: list[dict]) -> None:
    base = dict(scale="quick", backbone="gsta", seed=0, test_mse=1.0, test_mae=1.0)
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(root / "leaderboard.csv", index=False)


def test_scorecard_rows_are_leads_and_columns_are_runs(tmp_path):
    write_run(tmp_path, "svq-a", by_lead(1.0, 3))
    write_run(tmp_path, "none-a", by_lead(2.0, 3))
    write_run(tmp_path, "video", {"mse_per_pixel_by_lead": [0.1, 0.2, 0.3], "rmse_per_pixel_by_lead": [0.3] * 3},
              kind="video")
    leaderboard(tmp_path, [dict(run_id="svq-a", dataset="wb", quantizer="svq"),
                           dict(run_id="none-a", dataset="wb", quantizer="none"),
                           dict(run_id="video", dataset="kth", quantizer="none"),
                           dict(run_id="gone", dataset="wb", quantizer="svq", seed=1)])  # no metrics.json: left out
    cards = scorecard(load_leaderboards(tmp_path))
    assert [(c["dataset"], c["metric"]) for c in cards] == [
        ("wb", "rmse_latweighted"), ("wb", "acc_latweighted"), ("wb", "bias_latweighted")]
    rmse = cards[0]["table"]
    assert list(rmse.index) == [1, 2, 3] and rmse.index.name == "lead"
    assert list(rmse.columns) == ["svq-a", "none-a", *REFERENCE_ROWS] and cards[0]["step"] == "6 hours"
    np.testing.assert_allclose(rmse["svq-a"], [1.0, 1.1, 1.2])
    np.testing.assert_allclose(rmse["input_mean"], [4.0, 4.1, 4.2])
    acc = cards[1]["table"]
    assert acc["climatology"].isna().all()  # undefined ACC stays empty, never a number
    np.testing.assert_allclose(acc["none-a"], [0.9, 0.8, 0.7])


def test_scorecard_falls_back_to_unweighted_scores_and_shows_variables(tmp_path):
    pixels = {"rmse_per_pixel_by_lead": [1.0, 2.0], "acc_unweighted_by_lead": [0.5, 0.4]}
    write_run(tmp_path, "p", pixels, refs=False)
    write_run(tmp_path / "m", "multi", by_lead(1.0, 2, channels=3), channels=("z500", "t850", "u10"))
    leaderboard(tmp_path, [dict(run_id="p", dataset="grid", quantizer="svq")])
    leaderboard(tmp_path / "m", [dict(run_id="multi", dataset="wbm", quantizer="svq")])
    cards = {(c["dataset"], c["metric"]): c["table"] for c in scorecard(load_leaderboards(tmp_path))}
    assert set(cards) == {("grid", "rmse_per_pixel"), ("grid", "acc_unweighted"), ("wbm", "rmse_latweighted"),
                          ("wbm", "acc_latweighted"), ("wbm", "bias_latweighted")}
    assert list(cards["grid", "rmse_per_pixel"]["p"]) == [1.0, 2.0]
    multi = cards["wbm", "rmse_latweighted"]
    assert multi.index.names == ["variable", "lead"]
    assert multi.loc[("t850", 2), "multi"] == pytest.approx(1.0 + 0.1 + 0.01)
    assert multi.loc[("u10", 1), "persistence"] == pytest.approx(5.0 + 0.02)
    # a metric without per-channel values (ACC here) stays one row per lead
    assert list(cards["wbm", "acc_latweighted"].index) == [1, 2]


def test_compare_cli_prints_the_scorecard(tmp_path, monkeypatch, capsys):
    from svqbench import cli
    write_run(tmp_path, "svq-a", by_lead(1.0, 2))
    leaderboard(tmp_path, [dict(run_id="svq-a", dataset="wb", quantizer="svq", units="K")])
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(sys, "argv", ["svqbench", "compare", str(tmp_path), "--scorecard"])
    try:
        cli.main()
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "rmse_latweighted in K by lead time (test split, lead in steps of 6 hours)" in out
    assert "acc_latweighted by lead time" in out  # ACC has no unit
    assert "input_mean (reference)" in out and "1.1" in out and "acc_latweighted by lead time" in out
    monkeypatch.setattr(sys, "argv", ["svqbench", "compare", str(tmp_path)])
    try:
        cli.main()
    except SystemExit as e:
        assert e.code in (0, None)
    assert "by lead time" not in capsys.readouterr().out


def test_an_unreadable_metrics_json_is_named_and_the_other_runs_stay(tmp_path, monkeypatch, capsys):
    from helpers import cli
    write_run(tmp_path, "good", by_lead(1.0, 2))
    write_run(tmp_path, "cut", by_lead(2.0, 2))
    write_run(tmp_path, "empty", by_lead(3.0, 2))
    text = (tmp_path / "cut" / "metrics.json").read_text()
    (tmp_path / "cut" / "metrics.json").write_text(text[: len(text) // 2])  # truncated mid-write
    (tmp_path / "empty" / "metrics.json").write_text("{}")
    leaderboard(tmp_path, [dict(run_id=r, dataset="wb", quantizer="svq", seed=i)
                           for i, r in enumerate(("good", "cut", "empty"))])
    warnings = []
    cards = scorecard(load_leaderboards(tmp_path), warn=warnings.append)
    assert list(cards[0]["table"].columns) == ["good", *REFERENCE_ROWS]
    assert warnings == [f"{tmp_path / 'cut' / 'metrics.json'} is not valid JSON; run cut is left out of the scorecard",
                        f"{tmp_path / 'empty' / 'metrics.json'} holds no test metrics; "
                        "run empty is left out of the scorecard"]
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(["compare", str(tmp_path), "--scorecard"], monkeypatch, capsys)
    assert code == 0 and "by lead time" in out
    assert [line for line in err.splitlines() if "metrics.json" in line] == [f"warning: {w}" for w in warnings]
    # the case: the only weather run's metrics.json is cut short
    (tmp_path / "good" / "metrics.json").write_text(text[:10])
    code, out, err = cli(["compare", str(tmp_path), "--scorecard"], monkeypatch, capsys)
    assert code == 0 and f"{tmp_path / 'good' / 'metrics.json'} is not valid JSON" in err
    assert "no weather run with per-lead metrics" in err


def regional(base: float, leads: int) -> dict:
    """Per-region test scores as evaluate writes them (svqbench.regions): tropics and a user box."""
    out = {"rmse_latweighted": base, "acc_latweighted": 0.8}
    for i, region in enumerate(("tropics", "box")):
        out.update({f"rmse_latweighted_{region}": base + i + 1, f"acc_latweighted_{region}": 0.7 - i / 10,
                    f"rmse_latweighted_{region}_by_lead": [base + i + 1 + t / 10 for t in range(leads)],
                    f"acc_latweighted_{region}_by_lead": [0.7 - i / 10] * leads})
    return out


def test_regions_get_scorecards_and_a_compare_table(tmp_path, monkeypatch, capsys):
    from svqbench.results import region_table
    for run_id, base in (("svq-a", 1.0), ("none-a", 2.0)):
        write_run(tmp_path, run_id, {**by_lead(base, 2), **regional(base, 2)})
        path = tmp_path / run_id / "metrics.json"
        saved = json.loads(path.read_text())
        saved["test"]["metric_set"].update(
            regions={"tropics": {"scored": True}, "box": {"scored": True}, "southern_extratropics": {"scored": False}},
            climatology={"kind": "day_of_year"})
        saved["persistence"].update(regional(5.0, 2))
        path.write_text(json.dumps(saved))
    leaderboard(tmp_path, [dict(run_id="svq-a", dataset="wb", quantizer="svq", units="K"),
                           dict(run_id="none-a", dataset="wb", quantizer="none", units="K")])
    board = load_leaderboards(tmp_path)
    cards = {c["metric"]: c["table"] for c in scorecard(board)}
    assert list(cards) == ["rmse_latweighted", "acc_latweighted", "bias_latweighted", "rmse_latweighted_tropics",
                           "acc_latweighted_tropics", "rmse_latweighted_box", "acc_latweighted_box"]
    np.testing.assert_allclose(cards["rmse_latweighted_box"]["none-a"], [4.0, 4.1])
    np.testing.assert_allclose(cards["rmse_latweighted_tropics"]["persistence"], [6.0, 6.1])
    assert cards["rmse_latweighted_tropics"]["input_mean"].isna().all()  # a reference without regions stays empty
    (card,) = region_table(board)
    assert card["climatology"] == "day_of_year" and card["units"] == "K"
    t = card["table"]
    assert list(t.columns) == ["RMSE global", "RMSE tropics", "RMSE box", "ACC global", "ACC tropics", "ACC box"]
    assert list(t.index) == ["svq-a", "none-a", *REFERENCE_ROWS]
    assert list(t.loc["none-a"]) == [2.0, 3.0, 4.0, 0.8, 0.7, pytest.approx(0.6)]
    assert t.loc["persistence", "RMSE box"] == 7.0 and np.isnan(t.loc["input_mean", "RMSE box"])
    from helpers import cli
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(["compare", str(tmp_path)], monkeypatch, capsys)
    assert code in (0, None)
    assert "wb — test RMSE and ACC by region (ACC vs the day_of_year climatology, RMSE in K)" in out
    assert "persistence (reference)" in out and "RMSE tropics" in out
