"""Issue 2 targets for the default job: `svqbench run` (embedded dataset, gsta, svq, quick scale)
finishes in under 5 minutes on 2 cores and its test MAE beats persistence. It also runs the same job
with `--norm global` and prints both validation losses: the preset's default normalisation is the
one with the lower validation loss (val L1 in normalised units = val MAE / train std in both modes).

    .venv/bin/python benchmarks/default_run.py [--results-dir /tmp/bench-results]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(args: list[str], results: Path, name: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "svqbench", "run", "--quiet", "--results-dir", str(results),
                    "--name", name, *args], check=True)
    seconds = time.perf_counter() - t0
    return json.loads((results / name / "metrics.json").read_text()), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/svqbench-bench") / time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--skip-global", action="store_true", help="only time the default job")
    a = parser.parse_args()
    subprocess.run([sys.executable, "-m", "svqbench", "prepare", "embedded"], check=True, capture_output=True)
    default, seconds = run([], a.results_dir, "default")
    t, p = default["test"], default["persistence"]
    print(f"default run: {seconds:.0f} s wall (target < 300 s), {default['epochs_run']} epochs, "
          f"best epoch {default['best_epoch']}")
    print(f"  test MAE {t['mae_per_pixel']:.4f} K vs persistence {p['mae_per_pixel']:.4f} K "
          f"(ratio {t['mae_per_pixel'] / p['mae_per_pixel']:.3f}; climatology {default['climatology']['mae_per_pixel']:.4f} K)")
    print(f"  val loss (norm=window, the default): {default['best_val_loss']:.5f}")
    if not a.skip_global:
        glob, gsec = run(["--norm", "global"], a.results_dir, "global")
        print(f"  val loss (norm=global): {glob['best_val_loss']:.5f}; test MAE {glob['test']['mae_per_pixel']:.4f} K "
              f"({gsec:.0f} s)")
        best = "window" if default["best_val_loss"] <= glob["best_val_loss"] else "global"
        print(f"  lower validation loss: norm={best}")


if __name__ == "__main__":
    main()
