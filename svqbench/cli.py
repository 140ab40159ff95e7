"""The `svqbench` command line: parses, validates, calls library functions; no logic of its own."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from svqbench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark vector quantization (SVQ and baselines) in SimVP spatio-temporal forecasting.")
console = Console()
err_console = Console(stderr=True)

RESULTS = typer.Option(Path("results"), "--results-dir", help="where run folders and leaderboard.csv go")
DATA = typer.Option(None, "--data-dir", help="prepared datasets root (default $SVQBENCH_DATA or ./data)")


class RichReporter:
    """Progress bar with loss, lr and ETA; one line per epoch."""

    def __init__(self, quiet: bool):
        self.quiet, self.progress, self.task = quiet, None, None

    def start(self, total_steps: int) -> None:
        if self.quiet:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("train", total=total_steps, epoch=0, loss=float("nan"), lr=0.0)
        self.progress.start()

    def step(self, epoch: int, loss: float, lr: float) -> None:
        if self.progress:
            self.progress.update(self.task, advance=1, epoch=epoch, loss=loss, lr=lr)

    def epoch(self, row: dict) -> None:
        if self.progress:
            mark = " *" if row["best"] else ""
            self.progress.console.print(f"epoch {row['epoch']:3d}  train {row['train_loss']:.4f}  "
                                        f"val {row['val_loss']:.4f}{mark}")

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()


@app.command()
def run(
    dataset: Optional[str] = typer.Option(None, help="prepared dataset name (default: embedded)"),
    scale: Optional[str] = typer.Option(None, help="quick (2 CPU cores, minutes) or paper"),
    backbone: Optional[str] = typer.Option(None, help="translator, e.g. gsta"),
    quantizer: Optional[str] = typer.Option(None, help="none, svq, ..."),
    seed: Optional[int] = typer.Option(None),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    schedule: Optional[str] = typer.Option(None, help="cosine | onecycle | constant"),
    loss: Optional[str] = typer.Option(None, help="l1 | l2"),
    patience: Optional[int] = typer.Option(None, help="early-stop patience in epochs (validation split)"),
    norm: Optional[str] = typer.Option(None, help="global | window (per-window input mean removed)"),
    hid_s: Optional[int] = typer.Option(None), hid_t: Optional[int] = typer.Option(None),
    n_s: Optional[int] = typer.Option(None), n_t: Optional[int] = typer.Option(None),
    drop_path: Optional[float] = typer.Option(None),
    codebook_size: Optional[int] = typer.Option(None, help="SVQ codebook size K"),
    codebook_init: Optional[str] = typer.Option(None, help="normal | kaiming_uniform | xavier | sparse | trunc_normal | orthogonal"),
    frozen_codebook: Optional[bool] = typer.Option(None, "--frozen-codebook/--learnable-codebook"),
    svq_impl: Optional[str] = typer.Option(None, help="factorized (default) | dense (the paper's reference path)"),
    placement: Optional[str] = typer.Option(None, help="quantizer before | after the translator"),
    noise: Optional[float] = typer.Option(None, help="training-time noise fraction eta (Table 5)"),
    name: Optional[str] = typer.Option(None, help="run id (default: derived from the config and time)"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    results_dir: Path = RESULTS,
    data_dir: Optional[Path] = DATA,
):
    """Train SimVP with a quantizer, evaluate on the test split once, add a leaderboard row."""
    cli = {k: v for k, v in locals().items() if k not in ("name", "device", "quiet", "results_dir", "data_dir")}
    from svqbench.config import resolve
    from svqbench.experiment import run_experiment
    cfg = resolve(cli=cli)
    try:
        metrics = run_experiment(cfg, results_dir=results_dir, data_dir=data_dir, run_id=name, device=device,
                                 reporter=RichReporter(quiet))
    except KeyboardInterrupt:
        err_console.print("interrupted: leaderboard unchanged; the run folder keeps its log and best checkpoint",
                          markup=False, highlight=False)
        raise typer.Exit(130) from None
    t, p = metrics["test"], metrics["persistence"]
    console.print(f"[bold]{metrics['run_id']}[/] test MSE {t['mse_per_pixel']:.4f}  MAE {t['mae_per_pixel']:.4f}  "
                  f"(persistence MAE {p['mae_per_pixel']:.4f}, climatology MAE "
                  f"{metrics['climatology']['mae_per_pixel']:.4f}) -> {results_dir / metrics['run_id']}")


@app.command()
def prepare(name: str = typer.Argument(..., help="dataset to prepare, e.g. embedded"), data_dir: Optional[Path] = DATA):
    """Convert a source into a prepared dataset (memory-mapped arrays + meta.json)."""
    from svqbench.data import prepare as prepare_dataset
    path = prepare_dataset(name, root=data_dir)
    console.print(f"prepared {name} -> {path}")


@app.command()
def datasets(data_dir: Optional[Path] = DATA):
    """List prepared datasets with their size and splits."""
    from rich.table import Table

    from svqbench.data import source_names
    from svqbench.data.prepared import PreparedDataset, data_root
    root = data_root(data_dir)
    table = Table("name", "frames (N, C, H, W)", "in -> out", "train/val/test windows", "MB", "status")
    for name in source_names():
        path = root / name
        if not path.exists():
            table.add_row(name, "", "", "", "", "not prepared")
            continue
        try:
            d = PreparedDataset(path)
        except UserError as e:
            table.add_row(name, "", "", "", "", f"[red]{e}[/]")
            continue
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        w = d.meta["windows"]
        table.add_row(name, str(tuple(d.frames.shape)), f"{d.in_len} -> {d.out_len}",
                      f"{w['train']}/{w['val']}/{w['test']}", f"{size:.1f}", "ready")
    console.print(table)


@app.command()
def compare(directory: Path = typer.Argument(Path("results"), help="results folder or a leaderboard CSV"),
            csv: Optional[Path] = typer.Option(None, "--csv", help="also write the table as CSV")):
    """Leaderboard grouped by dataset and backbone: mean +- std over seeds, improvement % over `none`."""
    from rich.table import Table

    from svqbench.results import compare_table, load_leaderboards
    table_df = compare_table(load_leaderboards(directory))
    for keys, group in table_df.groupby(["dataset", "scale", "backbone"], sort=True):
        table = Table("method", "runs", "MSE", "MAE", "MSE improv. %", "MAE improv. %",
                      title=f"{keys[0]} ({keys[1]} scale), backbone {keys[2]} — test split, per-pixel, physical units")
        for _, r in group.iterrows():
            def fmt(m):
                s = f"{r[f'{m}_mean']:.4f}"
                return s + (f" ± {r[f'{m}_std']:.4f}" if r[f"{m}_std"] == r[f"{m}_std"] else "")

            def pct(m):
                v = r.get(f"{m}_improvement_pct")
                return "" if v is None or v != v else f"{v:+.1f}"
            table.add_row(r["method"], str(r["runs"]), fmt("mse"), fmt("mae"), pct("mse"), pct("mae"))
        console.print(table)
    if csv:
        table_df.to_csv(csv, index=False)
        console.print(f"wrote {csv}")


def main() -> None:
    try:
        app()
    except UserError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
