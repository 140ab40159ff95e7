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


# --- WeatherBench 2 style scorecards: rows methods, cells % improvement over `none`, marked when significant

def seeded(rmse: list, acc: list, bias: list) -> dict:
    return {"rmse_latweighted_by_lead": rmse, "acc_latweighted_by_lead": acc, "bias_latweighted_by_lead": bias,
            "rmse_per_pixel_by_lead": rmse}


def three_seeds_two_methods(root: Path) -> None:
    """`none`, `svq` and `vq`, 3 seeds each, 3 leads of 6 hours. svq: 20% lower RMSE than the same
    seed's none at every lead, ACC 0.05 higher, |bias| halved (large and consistent); vq: RMSE
    differences of mixed sign at lead 1 (+-30%) and the same as none at leads 2-3 within 1e-3 noise."""
    rows = []
    for seed, wobble in enumerate((0.0, 0.2, -0.1)):
        none = [1.0 + wobble + lead / 10 for lead in range(3)]
        runs = {"none": seeded(none, [0.8 - lead / 10 for lead in range(3)], [0.4, -0.4, 0.4]),
                "svq": seeded([0.8 * v for v in none], [0.85 - lead / 10 for lead in range(3)], [0.2, -0.2, 0.2]),
                "vq": seeded([none[0] * (1.3, 0.7, 1.05)[seed], none[1] + 1e-3 * (seed - 1), none[2] - 1e-3 * seed],
                             [0.8 - lead / 10 for lead in range(3)], [0.4, -0.4, 0.4])}
        for quantizer, scores in runs.items():
            write_run(root, f"{quantizer}-{seed}", scores)
            rows.append(dict(run_id=f"{quantizer}-{seed}", dataset="wb", quantizer=quantizer, seed=seed, units="K",
                             data_digest="sha256:0123456789abcdef0123"))
    leaderboard(root, rows)


def test_method_scorecard_rows_are_methods_with_marked_significant_cells(tmp_path):
    from svqbench.results import method_scorecards
    three_seeds_two_methods(tmp_path)
    cards = {c["metric"]: c for c in method_scorecards(load_leaderboards(tmp_path))}
    assert list(cards) == ["rmse_latweighted", "acc_latweighted", "bias_latweighted"]
    rmse = cards["rmse_latweighted"]
    assert rmse["rows"] == ["svq", "vq", *REFERENCE_ROWS]  # one row per method (mean over seeds), `none` the baseline
    assert rmse["columns"] == ["6 h", "12 h", "18 h"] and rmse["seeds"]["svq"] == 3 and rmse["seeds"]["persistence"] == 0
    # sign convention: lower RMSE than none reads positive: +20%
    np.testing.assert_allclose(rmse["relative"].loc["svq"], [20.0, 20.0, 20.0], atol=1e-9)
    assert rmse["significant"].loc["svq"].all()  # large and consistent over seeds
    assert not rmse["significant"].loc["vq"].any()  # mixed signs at lead 1, tiny noise at 2-3: no mark
    assert not rmse["significant"].loc[list(REFERENCE_ROWS)].to_numpy().any()  # one forecast, no seeds: no mark
    # persistence 5.0 + lead/10 against none's seed mean 1.0333 + lead/10: worse, negative
    assert rmse["relative"].loc["persistence", "6 h"] == pytest.approx(100 * (1.0 + 0.1 / 3 - 5.0) / (1.0 + 0.1 / 3))
    # higher ACC reads positive too, and so does a smaller |bias|
    acc = cards["acc_latweighted"]
    np.testing.assert_allclose(acc["relative"].loc["svq"], [100 * 0.05 / 0.8, 100 * 0.05 / 0.7, 100 * 0.05 / 0.6])
    assert acc["significant"].loc["svq"].all()
    assert "climatology" not in acc["rows"]  # its ACC is undefined: no empty row
    np.testing.assert_allclose(cards["bias_latweighted"]["relative"].loc["svq"], [50.0, 50.0, 50.0])


def test_method_scorecard_names_the_recurrent_none_its_references_are_measured_against(tmp_path):
    from svqbench.results import method_scorecards
    write_run(tmp_path, "none-0", seeded([1.0, 1.0], [0.5, 0.5], [0.1, 0.1]))
    write_run(tmp_path, "svq-0", seeded([0.5, 0.5], [0.9, 0.9], [0.1, 0.1]))
    leaderboard(tmp_path, [dict(run_id=f"{q}-0", dataset="wb", quantizer=q, model="convlstm") for q in ("none", "svq")])
    rmse = method_scorecards(load_leaderboards(tmp_path))[0]
    assert rmse["rows"] == ["convlstm svq", *(f"{r} vs convlstm none" for r in REFERENCE_ROWS)]
    assert rmse["relative"].loc["convlstm svq"].tolist() == [50.0, 50.0]


def test_method_scorecard_with_one_seed_marks_nothing(tmp_path):
    from svqbench.results import method_scorecards
    write_run(tmp_path, "none-0", seeded([1.0, 1.0], [0.5, 0.5], [0.1, 0.1]))
    write_run(tmp_path, "svq-0", seeded([0.5, 0.5], [0.9, 0.9], [0.1, 0.1]))
    leaderboard(tmp_path, [dict(run_id=f"{q}-0", dataset="wb", quantizer=q) for q in ("none", "svq")])
    rmse = method_scorecards(load_leaderboards(tmp_path))[0]
    assert rmse["relative"].loc["svq"].tolist() == [50.0, 50.0] and not rmse["significant"].to_numpy().any()


def test_compare_scorecard_prints_one_row_per_method_coloured_and_marked(tmp_path, monkeypatch, capsys):
    import io

    from rich.console import Console

    from svqbench import cli as cli_module
    three_seeds_two_methods(tmp_path)
    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "console", Console(file=screen, force_terminal=True, color_system="standard",
                                                       width=250))
    monkeypatch.setattr(sys, "argv", ["svqbench", "compare", str(tmp_path), "--scorecard"])
    try:
        cli_module.main()
    except SystemExit as e:
        assert e.code in (0, None)
    shown = screen.getvalue()
    assert "wb data 0123456789ab — rmse_latweighted vs `none`" in shown and "(%, positive = better)" in shown
    cards = shown[shown.index("rmse_latweighted vs `none`"):]  # after the compare table and the per-run cards
    rows = [line for line in cards.splitlines() if line.startswith("│ svq ") or line.startswith("│ vq ")]
    assert len([r for r in rows if r.startswith("│ svq ")]) == 3  # one svq row in each of the three cards
    # significant: bold green with a star; vq's lead-1 cell is neither bold nor starred
    assert "\x1b[1;32m+20.0*" in shown
    vq_rmse = rows[1]
    assert "*" not in vq_rmse and "\x1b[1;" not in vq_rmse
    assert "bold * = the paired 95% interval over seeds excludes 0" in shown
    assert "0123456789abcdef" not in shown  # digests cut to 12 characters


def test_compare_table_reads_better_as_positive_everywhere(tmp_path, monkeypatch, capsys):
    """The gain column and the improvement % share one sign: svq has the lower MAE, both are positive."""
    from helpers import cli
    rows = [dict(run_id=f"{q}-{s}", dataset="wb", quantizer=q, seed=s, test_mae=mae + 0.01 * s, test_mse=1.0,
                 units="K", data_digest="sha256:0123456789abcdef0123")
            for s in range(3) for q, mae in (("none", 1.0), ("svq", 0.9))]
    leaderboard(tmp_path, rows)
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli(["compare", str(tmp_path), "--csv", str(tmp_path / "t.csv")], monkeypatch, capsys)
    assert code == 0, err
    assert "MAE gain vs none (K) [95% CI]" in out and "positive = lower error (better)" in out
    svq = next(line for line in out.splitlines() if line.strip("│ ").startswith("svq"))
    assert "+0.1000 [+0.1000, +0.1000]" in svq and "+9.9" in svq and "better" in svq  # 100 * 0.1 / 1.01
    import csv
    with open(tmp_path / "t.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert {r["seeds"] for r in saved if r["method"] in ("none", "svq")} == {"3"}  # an integer, not 3.0
    assert {r["data_digest"] for r in saved} == {"0123456789ab"}
