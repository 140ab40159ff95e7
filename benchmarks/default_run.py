"""The default job, `svqbench run` (embedded dataset, gsta, svq, quick scale), timed by phase.

Target (issue 21): at most 3 minutes of wall time on 2 idle cores, the install excluded (the embedded
dataset is prepared before the clock starts). Prints the wall time and CPU time (user + sys of the
run's process) of the whole run and of each phase: start-up (imports, config, data, model), training
(metrics.json train_seconds), test scoring and codebook usage (the run's own progress lines, which it
prints when its stdout is not a terminal), and the rest (reference forecasts, files, leaderboard).
On a loaded machine wall time overstates the run: compare CPU times, and say the machine was busy.
The test MAE must beat persistence. `--norm-global` also runs `--norm global` and prints both
validation losses (the preset's window normalisation should have the lower one).

    .venv/bin/python benchmarks/default_run.py [--results-dir /tmp/bench-results] [--norm-global]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: list[str], results: Path, name: str) -> tuple[dict, dict]:
    """Run `svqbench run` with stdout piped; returns metrics.json and the timings in seconds."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "svqbench", "run", "--results-dir", str(results), "--name", name,
                           *args], check=True, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    phases = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(test scoring|codebook usage): ([\d.]+) s$",
                                                                 proc.stdout, flags=re.M)}
    metrics = json.loads((results / name / "metrics.json").read_text())
    return metrics, {"wall": wall, "cpu": cpu, "train": metrics["train_seconds"], **phases}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/svqbench-bench") / time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--norm-global", action="store_true", help="also run --norm global and compare val losses")
    a = parser.parse_args()
    subprocess.run([sys.executable, "-m", "svqbench", "prepare", "embedded"], check=True, capture_output=True)
    load = os.getloadavg()[0]
    default, t = run([], a.results_dir, "default")
    rest = t["wall"] - t["train"] - t.get("test scoring", 0.0) - t.get("codebook usage", 0.0)
    print(f"default run: {t['wall']:.0f} s wall (target <= 180 s on 2 idle cores), {t['cpu']:.0f} s CPU (user+sys), "
          f"load average {load:.1f} on {os.cpu_count()} cores at the start "
          f"{'(machine busy: wall time overstates the run)' if load > 1.5 else ''}")
    for phase in ("train", "test scoring", "codebook usage"):
        if phase in t:
            print(f"  {phase:15s} {t[phase]:6.1f} s wall  ({100 * t[phase] / t['wall']:4.1f}%)")
    print(f"  {'the rest':15s} {rest:6.1f} s wall  ({100 * rest / t['wall']:4.1f}%): start-up, model, references, files")
    te, p = default["test"], default["persistence"]
    print(f"  {default['epochs_run']} epochs, best epoch {default['best_epoch']}; test MAE {te['mae_per_pixel']:.4f} K vs "
          f"persistence {p['mae_per_pixel']:.4f} K (ratio {te['mae_per_pixel'] / p['mae_per_pixel']:.3f})")
    print(f"  val loss (norm=window, the default): {default['best_val_loss']:.5f}")
    if a.norm_global:
        glob, g = run(["--norm", "global"], a.results_dir, "global")
        print(f"  val loss (norm=global): {glob['best_val_loss']:.5f}; test MAE {glob['test']['mae_per_pixel']:.4f} K "
              f"({g['wall']:.0f} s)")
        best = "window" if default["best_val_loss"] <= glob["best_val_loss"] else "global"
        print(f"  lower validation loss: norm={best}")


if __name__ == "__main__":
    main()
