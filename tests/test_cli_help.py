"""The help screens: `run --help` in panels from RunConfig metadata with every default, no help text
cut by rich markup, 80 columns, one-line command summaries; plain progress lines when piped."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from typer.testing import CliRunner

from svqbench.cli import app
from svqbench.config import PANELS, RunConfig

WIDTH = 80


def render(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH), "TERM": "dumb"}, color=False)
    assert result.exit_code == 0, result.output
    return result.output


def panels(text: str) -> dict[str, list[list[str]]]:
    """Panel title -> its rows, each row the text lines of one option (a line with text in the first
    column begins a row; the indented lines below it continue it)."""
    out: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        head = re.match(r"╭─ (.+?) ─", line)
        if head:
            title = head.group(1)
            out[title] = []
        elif line.startswith("╰"):
            title = None
        elif title is not None and line.startswith("│"):
            inner = line[1:].rstrip().removesuffix("│")
            cell = inner.strip()
            if inner[1:2] != " " or not out[title]:  # text in the first column: a new row
                out[title].append([cell])
            else:
                out[title][-1].append(cell)
    return out


def flat(words: str) -> str:
    return " ".join(words.split())


def test_every_runconfig_field_names_a_panel():
    missing = [f.name for f in fields(RunConfig) if f.metadata.get("panel") not in PANELS]
    assert not missing, f"give these RunConfig fields a panel= in config.py (one of {PANELS}): {missing}"


def test_run_help_has_every_field_in_exactly_its_panel_with_its_default():
    text = render("run")
    found = panels(text)
    assert set(PANELS) | {"Runtime & speed", "Output & tracking"} <= set(found)
    assert "Other" not in found
    for f in fields(RunConfig):
        flag = (f.metadata.get("flag") or f"--{f.name.replace('_', '-')}").split("/")[0]
        rows = [(title, row) for title, rows in found.items() for row in rows if row[0].split()[0] == flag]
        assert len(rows) == 1, (flag, [t for t, _ in rows])
        title, row = rows[0]
        assert title == f.metadata["panel"], flag
        shown = flat(" ".join(row))
        assert re.search(r"\[default: [^\]]+\]", shown), (flag, shown)
        default = re.search(r"\[default: ([^\]]+)\]", shown).group(1)
        assert "preset" in default or str(f.default) in default, (flag, default)


def test_preset_defaults_show_the_default_runs_value():
    shown = {row[0].split()[0]: flat(" ".join(row)) for rows in panels(render("run")).values() for row in rows}
    assert "[default: preset; 10000 in the default run]" in shown["--codebook-size"]
    assert "[default: embedded]" in shown["--dataset"] and "[default: 42]" in shown["--seed"]
    assert "opposite: --no-svq-hid-relu" in shown["--svq-hid-relu"]


def test_run_help_fits_80_columns_and_flags_show_no_type():
    text = render("run")
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    for rows in panels(text).values():
        for row in rows:
            assert "<bool>" not in row[0]
    assert "…" not in text  # nothing cut with an ellipsis


def command_names() -> list[str]:
    import typer
    return [c.name or c.callback.__name__ for c in typer.main.get_group(app).commands.values()]


def test_no_help_text_loses_bracketed_text():
    """rich reads `[...]` as markup and drops it (`pip install 'svqbench[mlflow]'` printed as
    `pip install 'svqbench'`): every bracketed piece of every command's help must be on its screen."""
    import typer
    from typer._click import Context
    group = typer.main.get_group(app)  # a fresh build: the help texts as written, before any escaping
    checked = 0
    for name in command_names():
        cmd = group.commands[name]
        raw = [p.help for p in cmd.get_params(Context(cmd)) if getattr(p, "help", None)] + [cmd.help or ""]
        text = flat(render(name).replace("│", " "))
        for piece in {m for h in raw for m in re.findall(r"\[[^\]\[]+\]", h)}:
            assert flat(piece) in text, (name, piece)
            checked += 1
    assert checked >= 10
    assert "pip install 'svqbench[mlflow]'" in flat(render("run").replace("│", " "))


def test_top_level_summaries_are_one_line_each():
    text = render()
    commands = panels(text)["Commands"]
    assert len(commands) == len(command_names())
    for row in commands:
        assert len(row) == 1, row


def test_print_config_does_not_import_torch_or_the_training_stack():
    """--print-config resolves, checks and prints the config of SimVP with every quantizer: no torch, no
    training loop, experiment or evaluation (the quantizer registry declares what each one reads)."""
    from svqbench.quantizers import quantizer_names
    code = ("import sys; from svqbench.cli import main\n"
            "for q in sys.argv[1:]:\n"
            "    sys.argv = ['svqbench', 'run', '--print-config', '--quantizer', q]\n"
            "    try:\n        main()\n    except SystemExit as e:\n        assert not e.code, (q, e.code)\n"
            "print('LOADED', sorted(m for m in ('torch', 'svqbench.train', 'svqbench.experiment', 'svqbench.evaluate', "
            "'pandas') if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *quantizer_names()], capture_output=True, text=True, timeout=300)
    assert proc.stdout.count('"config"') == len(quantizer_names()), proc.stderr
    assert '"quantizer": "rfsq"' in proc.stdout and '"codebook_size": 600' in proc.stdout
    assert "LOADED []" in proc.stderr, proc.stderr


def test_piped_run_prints_plain_lines(embedded_root, tmp_path):
    """Stdout not a terminal: epoch lines, phase lines with their seconds, the result on one line;
    no progress-bar frame (ETA) left in the log."""
    import os
    env = dict(os.environ, SVQBENCH_DATA=str(embedded_root), OMP_NUM_THREADS="1", COLUMNS="60")
    proc = subprocess.run([sys.executable, "-m", "svqbench", "run", "--hid-s", "4", "--hid-t", "8", "--n-t", "2",
                           "--n-s", "4", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "64",
                           "--codebook-size", "32", "--results-dir", str(tmp_path), "--name", "piped"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "ETA" not in proc.stdout and "━" not in proc.stdout
    assert any(re.fullmatch(r"epoch +0 +train [\d.]+ +val [\d.]+ \*", line) for line in lines), lines
    assert any(re.fullmatch(r"test scoring: [\d.]+ s", line) for line in lines), lines
    assert any(re.fullmatch(r"codebook usage: [\d.]+ s", line) for line in lines), lines
    result = [line for line in lines if line.startswith("piped test MSE")]
    assert len(result) == 1 and re.search(r"MAE [\d.]+ K", result[0]) and result[0].endswith(str(tmp_path / "piped"))
    # without a codebook there is no usage pass, hence no phase line for it
    proc = subprocess.run([sys.executable, "-m", "svqbench", "run", "--hid-s", "4", "--hid-t", "8", "--n-t", "2",
                           "--n-s", "4", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "64",
                           "--quantizer", "none", "--results-dir", str(tmp_path), "--name", "plain"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test scoring:" in proc.stdout and "codebook usage" not in proc.stdout
    # a long path (with brackets rich would read as markup) is printed whole on its line, never folded
    figures = tmp_path / ("a folder name long enough to pass sixty columns [v2]") / "figures"
    proc = subprocess.run([sys.executable, "-m", "svqbench", "compare", str(tmp_path), "--plots", str(figures)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wrote = [line for line in proc.stdout.splitlines() if line.startswith("wrote ")]
    assert wrote and all(Path(line[len("wrote "):]).is_file() for line in wrote), proc.stdout
