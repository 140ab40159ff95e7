"""Fuzz the command line and the recipe parser: malformed input is one line on stderr and exit code
2, never a traceback; input that passes is runnable (seeds, rates and sizes a run can use)."""
from __future__ import annotations

import contextlib
import io
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svqbench import cli, experiment
from svqbench.config import RunConfig, field_names, resolve
from svqbench.cli import one_line
from svqbench.errors import UserError


class Reached(Exception):
    """The command got past parsing and validation to the point where a run would start."""


def runnable(cfg: RunConfig) -> None:
    """What a run does with the config before its first step must work."""
    np.random.default_rng(cfg.seed)
    torch.Generator().manual_seed(cfg.seed + 1)
    for name in ("lr", "warmup_lr", "min_lr", "weight_decay", "drop_path", "noise", "mlp_ratio"):
        assert math.isfinite(getattr(cfg, name)), name
    assert 0 <= cfg.drop_path < 1 and cfg.patience >= 1 and cfg.warmup_epochs >= 0


@pytest.fixture
def stub_run(monkeypatch, tmp_path):
    """Replace the run itself (data, model, training) by a check that the config is runnable."""
    def fake_run(cfg, **kwargs):
        runnable(cfg)
        raise Reached
    monkeypatch.setattr(experiment, "_run", fake_run)
    monkeypatch.chdir(tmp_path)


def invoke(args: list[str]) -> tuple[int | None, str]:
    """Run `svqbench ARGS` in-process; (exit code or None if a run would start, stderr)."""
    err = io.StringIO()
    old_argv = sys.argv
    sys.argv = ["svqbench", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main()
    except Reached:
        return None, err.getvalue()
    except SystemExit as e:
        return e.code, err.getvalue()
    finally:
        sys.argv = old_argv
    raise AssertionError("main() returned without exiting")


def check(args: list[str]) -> None:
    code, err = invoke(args)
    if code is None:
        return
    lines = err.strip().splitlines()
    assert code == 2, (args, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    assert "Traceback" not in err


INT_FLAGS = ["--seed", "--epochs", "--batch-size", "--patience", "--hid-s", "--hid-t", "--n-s", "--n-t",
             "--codebook-size", "--svq-hidden", "--checkpoint-every"]
FLOAT_FLAGS = ["--lr", "--drop-path", "--noise"]
CHOICE_FLAGS = {"--dataset": ["embedded"], "--scale": ["quick", "paper"], "--backbone": ["gsta"],
                "--quantizer": ["svq", "none"], "--schedule": ["cosine", "onecycle", "constant"],
                "--loss": ["l1", "l2"], "--norm": ["global", "window"], "--placement": ["before", "after"],
                "--svq-impl": ["factorized", "dense"], "--codebook-init": ["normal", "xavier"],
                "--precision": ["fp32", "bf16", "fp16"]}
SWITCHES = ["--frozen-codebook", "--learnable-codebook", "--compile", "--no-compile", "--channels-last",
            "--svq-one-layer", "--svq-post-relu", "--svq-frozen-projection", "--quiet"]

junk = st.text(max_size=12)
numbers = st.one_of(st.integers(-2 ** 70, 2 ** 70).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["0", "-1", "1e309", "nan", "-inf", "0x10", "1_000", " 3", "", "1.5"]))


@st.composite
def option(draw):
    kind = draw(st.sampled_from(["int", "float", "choice", "switch", "name", "unknown"]))
    if kind == "int":
        return [draw(st.sampled_from(INT_FLAGS)), draw(st.one_of(numbers, junk))]
    if kind == "float":
        return [draw(st.sampled_from(FLOAT_FLAGS)), draw(st.one_of(numbers, junk))]
    if kind == "choice":
        flag = draw(st.sampled_from(sorted(CHOICE_FLAGS)))
        return [flag, draw(st.one_of(st.sampled_from(CHOICE_FLAGS[flag]), junk))]
    if kind == "switch":
        return [draw(st.sampled_from(SWITCHES))]
    if kind == "name":
        return ["--name", draw(junk)]
    return [draw(st.sampled_from(["--", "-x", "--lr", "--bogus", "extra", "--seed=", "--epochs=1.5"]))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(option(), min_size=1, max_size=4))
def test_fuzz_run_options(stub_run, options):
    check(["run", *[token for opt in options for token in opt]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=junk, extra=st.lists(option(), max_size=2))
def test_fuzz_resume(stub_run, run, extra):
    check(["run", "--resume", run, *[token for opt in extra for token in opt]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(junk, max_size=4))
def test_fuzz_any_command_line(stub_run, args):
    if not args:
        return  # no arguments: the help text (exit 2)
    code, err = invoke(args)
    # --help and friends may exit 0 and print usage; everything else is one error line
    if code not in (0, None):
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)


def test_resume_with_config_flags_is_refused(stub_run):
    code, err = invoke(["run", "--resume", "somerun", "--lr", "0.1"])
    assert code == 2 and err.strip() == "error: --resume somerun continues with the run's saved config; drop --lr"


# ---- the recipe layer and recipe files -----------------------------------------------------------

values = st.one_of(st.integers(-2 ** 65, 2 ** 65), st.floats(allow_nan=True, allow_infinity=True), junk,
                   st.booleans(), st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(junk, junk, max_size=2))
keys = st.one_of(st.sampled_from(sorted(field_names())), junk)


def test_one_line_escapes_line_breaks():
    assert one_line("bad key 'a\nb\x1e'") == "bad key 'a\\nb\\x1e'"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_fuzz_recipe_layer(recipe):
    try:
        cfg = resolve(recipe=recipe)
    except UserError:
        return  # the CLI prints it as one line (cli.one_line)
    runnable(cfg)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v).replace("inf", "inf").replace("nan", "nan")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


toml_scalars = st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                         st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
                         st.booleans())
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3))
bare_keys = st.one_of(st.sampled_from(sorted(field_names() | {"title", "table", "seeds", "label"})),
                      st.from_regex(r"[a-z_]{1,6}", fullmatch=True))
sections = st.sampled_from(["", "[config]", "[[cells]]", "[grid]", "[scales.quick]", "[scales.paper]",
                            "[scales.quick.config]", "[[scales.quick.cells]]", "[scales.quick.grid]", "[other]"])


@st.composite
def recipe_text(draw):
    lines = []
    if draw(st.booleans()):
        lines.append('title = "fuzz"')
    for _ in range(draw(st.integers(0, 6))):
        section = draw(sections)
        if section:
            lines.append(section)
        for _ in range(draw(st.integers(0, 3))):
            lines.append(f"{draw(bare_keys)} = {toml_value(draw(toml_values))}")
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=recipe_text())
def test_fuzz_recipe_files(tmp_path, text):
    from svqbench.recipes import load_recipe, resolve_cell
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        recipe = load_recipe(path)
        for scale in ("quick", "paper"):
            for cell in recipe.cells(scale):
                runnable(resolve_cell(cell))
    except UserError:
        pass
