"""Every figure kind, rendered from tiny runs and read back through matplotlib's API (labels, ticks,
titles, legend entries), never by pixels: learning curves, error vs lead time, noise curves, the
WeatherBench 2 style scorecard, forecast maps (full fields and anomalies) and the analysis figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from svqbench import plots


@pytest.fixture
def drawn(monkeypatch):
    """{file name: matplotlib Figure} of every figure written during the test (saved as usual)."""
    import svqbench.analyze
    figures = {}
    for module in (plots, svqbench.analyze):
        real = module.save_figure

        def keep(path, fig, real=real, **kwargs):
            figures[Path(path).name] = fig
            return real(path, fig, **kwargs)
        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def labels(axis) -> list[str]:
    """The tick labels matplotlib draws on an axis (formatted, visible range only)."""
    axis.figure.canvas.draw()
    low, high = sorted(axis.get_view_interval())
    return [t.get_text() for t in axis.get_ticklabels() if low <= t.get_position()[axis is axis.axes.yaxis] <= high]


def legend_entries(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def is_png(path: Path) -> tuple:
    import matplotlib.image
    return matplotlib.image.imread(path).shape  # read back by matplotlib's own reader


def fake_run(root: Path, run_id: str, *, losses: list, mae_by_lead: list, step="1 year", references=None) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    pd.DataFrame({"epoch": range(len(losses)), "train_loss": losses,
                  "val_loss": [v * 1.1 for v in losses]}).to_csv(run / "log.csv", index=False)
    metrics = {"test": {"mae_per_pixel_by_lead": mae_by_lead}, **(references or {})}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"config": {}, "dataset_meta": {"step": step, "units": ["K"]}}))
    return run


def test_learning_curves_have_integer_epochs_and_plain_log_labels(tmp_path, drawn):
    runs = {m: [fake_run(tmp_path, f"{m}-{s}", losses=[0.3 - 0.05 * e - 0.01 * s - 0.02 * (m == "svq")
                                                       for e in range(4)], mae_by_lead=[1.0])
                for s in range(3)] for m in ("none", "svq")}
    path = plots.learning_curves(runs, tmp_path / "curves.png")
    assert is_png(path)[2] in (3, 4)
    train, val = drawn["curves.png"].axes
    assert [ax.get_title() for ax in (train, val)] == ["train loss", "validation loss"]
    assert train.get_xlabel() == "epoch" and train.get_yscale() == "log"
    ticks = [t for t in train.get_xticks() if 0 <= t <= 3]
    assert ticks == [0, 1, 2, 3]  # whole epochs only, never 0.5
    shown = labels(train.yaxis)
    # several labels inside less than one decade, each a plain number (`0.2`, never `2 × 10⁻¹`)
    assert len(shown) >= 3 and all(0.1 <= float(s) <= 0.35 for s in shown)
    assert legend_entries(val) == ["none (3 seeds)", "svq (3 seeds)"]


def test_learning_curves_of_one_epoch_have_one_whole_tick(tmp_path, drawn):
    plots.learning_curves({"svq": [fake_run(tmp_path, "one", losses=[0.7], mae_by_lead=[1.0])]}, tmp_path / "one.png")
    train, val = drawn["one.png"].axes
    assert list(train.get_xticks()) == [0] and labels(train.xaxis) == ["0"]
    assert legend_entries(val) == ["svq (1 seed)"]


REFERENCES = {"persistence": {"mae_per_pixel_by_lead": [0.5, 0.6, 0.7]},
              "climatology": {"mae_per_pixel_by_lead": [2.0, 2.0, 2.0]},
              "input_mean": {"mae_per_pixel_by_lead": [0.4, 0.45, 0.5]}}


@pytest.mark.parametrize("step, unit, leads", [("1 year", "years", [1, 2, 3]), ("6 hours", "hours", [6, 12, 18]),
                                               (None, "steps", [1, 2, 3])])
def test_lead_time_axis_is_in_the_data_unit_with_every_reference(tmp_path, drawn, step, unit, leads):
    runs = {"none": [fake_run(tmp_path, f"n{s}", losses=[1.0], mae_by_lead=[0.6, 0.7, 0.8], step=step,
                              references=REFERENCES) for s in range(2)],
            "svq": [fake_run(tmp_path, "s0", losses=[1.0], mae_by_lead=[0.5, 0.6, 0.7], step=step,
                             references=REFERENCES)]}
    plots.lead_time_errors(runs, tmp_path / "lead.png")
    (ax,) = drawn["lead.png"].axes
    assert ax.get_xlabel() == f"lead time ({unit})" and ax.get_ylabel() == "test MAE per pixel (K)"
    assert ax.get_title() == "test MAE vs lead time (points: seeds)"
    assert legend_entries(ax) == ["none (mean of 2 seeds)", "svq (mean of 1 seed)", "persistence (reference)",
                                  "climatology (reference)", "input mean (reference)"]
    for line in ax.get_lines():
        assert list(line.get_xdata()) == leads
    assert list(ax.get_xticks()) == leads and labels(ax.xaxis) == [str(v) for v in leads]  # a tick per lead


def test_lead_time_legend_leaves_out_references_not_drawn(tmp_path, drawn):
    partial = {"persistence": REFERENCES["persistence"], "climatology": {"mae_per_pixel_by_lead": [None] * 3}}
    runs = {"svq": [fake_run(tmp_path, "s0", losses=[1.0], mae_by_lead=[0.5, 0.6, 0.7], references=partial)]}
    plots.lead_time_errors(runs, tmp_path / "lead.png")
    (ax,) = drawn["lead.png"].axes
    assert legend_entries(ax) == ["svq (mean of 1 seed)", "persistence (reference)"]
    assert ax.get_title() == "test MAE vs lead time"  # one seed: no seed points to mention


def test_noise_curves_have_titles_units_and_one_entry_per_method(tmp_path, drawn):
    rows = [dict(run_id=f"{q}-{eta}-{s}", dataset="d", scale="quick", backbone="gsta", quantizer=q, seed=s, noise=eta,
                 test_mse=1.0 + eta + 0.1 * s - 0.2 * (q == "svq"), test_mae=0.5 + eta, units="K")
            for q in ("none", "svq") for eta in (0.0, 0.1) for s in range(2)]
    plots.noise_curves(pd.DataFrame(rows), tmp_path / "noise.png")
    fig = drawn["noise.png"]
    top_left = fig.axes[0]
    assert top_left.get_ylabel() == "test MSE (K²)" and fig.get_suptitle() == "noise injection (Table 5)"
    assert legend_entries(top_left) == ["no quantizer", "svq"]
    assert fig.axes[2].get_xlabel() == "injected noise eta (% of input elements)"


def test_scorecard_figure_is_a_heat_map_per_metric_with_marked_cells(tmp_path, drawn):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from test_scorecard import three_seeds_two_methods

    from svqbench.results import load_leaderboards
    three_seeds_two_methods(tmp_path)
    written = plots.comparison_figures(load_leaderboards(tmp_path), tmp_path / "figs")
    assert [p.name for p in written] == ["wb-0123456789ab-scorecard.png"]
    fig = drawn["wb-0123456789ab-scorecard.png"]
    heat = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title(loc="left") for ax in heat] == ["rmse_latweighted", "acc_latweighted", "bias_latweighted"]
    rmse = heat[0]
    assert labels(rmse.yaxis) == ["svq", "vq", "persistence (reference)", "climatology (reference)",
                                  "input_mean (reference)"]
    assert labels(rmse.xaxis) == ["6 h", "12 h", "18 h"] and heat[-1].get_xlabel() == "lead time (hours)"
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in rmse.texts}
    assert cells[0, 0].get_text() == "+20.0*" and cells[0, 0].get_fontweight() == "bold"
    assert "*" not in cells[1, 0].get_text() and cells[1, 0].get_fontweight() == "normal"
    assert "positive = better" in fig.get_suptitle()
    # green is better: svq's cell sits at the green end of the colour map, persistence's at the red
    image = rmse.get_images()[0]
    green, red = image.cmap(image.norm(20.0)), image.cmap(image.norm(-300.0))
    assert green[1] > green[0] and red[0] > red[1]
    assert is_png(written[0])[0] > 0


def test_maps_and_analysis_figures_of_a_real_run(embedded_root, tmp_path, drawn):
    """One micro SVQ run on the embedded data (37 x 49 grid, 15-60°N, 135-45°W, yearly steps)."""
    from svqbench.analyze import analyze_run
    from svqbench.config import resolve
    from svqbench.experiment import run_experiment
    micro = dict(hid_s=4, hid_t=8, n_t=2, n_s=2, epochs=1, batch_size=64, warmup_epochs=0)
    run_experiment(resolve(cli={**micro, "quantizer": "svq", "codebook_size": 16}), results_dir=tmp_path,
                   data_dir=embedded_root, run_id="s")
    for anomalies, name in ((False, "map.png"), (True, "anomalies.png")):
        plots.forecast_sample(tmp_path / "s", tmp_path / name, data_dir=embedded_root, anomalies=anomalies)
        fig = drawn[name]
        maps = [ax for ax in fig.axes if ax.get_images()]
        assert len(maps) == 3 * 5  # truth, prediction, error x 5 leads
        assert [ax.get_title() for ax in maps[:5]] == ["lead 1 year", "lead 2 years", "lead 3 years", "lead 4 years",
                                                       "lead 5 years"]
        corner = maps[10]  # error row, first lead: both axes labelled
        lats, lons = labels(corner.yaxis), labels(corner.xaxis)
        assert lats and all(s.endswith("°N") for s in lats)
        assert lons and all(s.endswith("°W") for s in lons)
        left, right, bottom, top = corner.get_images()[0].get_extent()
        assert (bottom, top) == pytest.approx((15.0 - 0.625, 60.0 + 0.625))  # south at the bottom
        assert (left, right) == pytest.approx((225.0 - 0.9375, 315.0 + 0.9375))
        assert labels(maps[6].xaxis) == []  # inner maps share the outer ticks
        assert ("anomalies" in fig.get_suptitle()) == anomalies
    _, usage, figures = analyze_run("s", results_dir=tmp_path, data_dir=embedded_root)
    assert {p.name for p in figures} == {"weights_codebook_distribution.png", "codebook_pca.png", "code_usage.png"}
    (ax,) = drawn["code_usage.png"].axes
    used = int(np.count_nonzero(usage["active_counts_theta2"]))
    assert ax.get_title() == f"code usage: svq, K=16 (test split), {used} of 16 codes used"
    pca = drawn["codebook_pca.png"].axes[0]
    entries = legend_entries(pca)  # what is drawn, nothing else
    assert len(entries) == 2 and entries[0] == "codes (16)" and entries[1].startswith("latent vectors (")
    for ax in drawn["weights_codebook_distribution.png"].axes:
        assert ax.get_yscale() == "log" and all("10^" not in s for s in labels(ax.yaxis))
        assert "excess kurtosis" in ax.get_title()
    for p in figures:
        assert is_png(p)[0] > 0
