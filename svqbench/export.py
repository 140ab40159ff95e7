"""A run made shareable without svqbench's checkpoint format: `svqbench export RUN DIR`.

    DIR/model.safetensors     the best-by-validation weights (SimVP state dict, float tensors by name)
    DIR/config.json           format, run id, the RunConfig, the forecast shape, the dataset's description,
                              the sha256 of model.safetensors
    DIR/normalisation.json    the train statistics and the rule that turns physical units into model space
    DIR/metrics.json          the run's test metrics (when it has them)
    DIR/README.md             how to load it, with and without svqbench

`load_exported(DIR)` (and `load_run(DIR)`; both in svqbench/runs.py) rebuild the model from config.json with
`svqbench.models.build_model` and load the safetensors weights: the same forecasts as the run. Loading
checks the weights against the recorded sha256 (a changed byte is refused) and the statistics of
normalisation.json (one finite mean and a finite std > 0 per channel), each failure one line naming
the file. DIR is written as a temp folder and renamed into place; an existing non-empty DIR is never
touched; the temp folder of a killed export is removed by the next export to that DIR.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from svqbench.atomic import CannotWrite, atomic_write, ensure_dir, remove_stale_temps, write_json, write_text
from svqbench.errors import UserError
# the folder's format and its reader live in runs (load_run reads both kinds of folder); load_exported is
# also reachable here, where the format is described
from svqbench.runs import (CONFIG, FORMAT, METRICS, NORMALISATION, WEIGHTS, check_statistics, load_exported,  # noqa: F401
                           load_run)
from svqbench.version import __version__

NORM_RULES = {
    "global": "x_model = (x - mean[c]) / std[c]; forecast = y_model * std[c] + mean[c]",
    "window": "offset = mean of the window's input frames per channel and grid cell; x_model = (x - offset) / std[c]; "
              "forecast = y_model * std[c] + offset",
}

README = """# {run_id}: an exported svqbench run

{model} with the `{quantizer}` quantizer, trained on `{dataset}` by svqbench {version}.
Input: {in_len} frames of {channels} channel(s) on a {height} x {width} grid, in physical units ({units});
output: the next {out_len} frames, same units.

Files: `model.safetensors` (weights), `config.json` (the run's configuration and forecast shape, and
`weights_sha256`, the sha256 of `model.safetensors`: `sha256sum model.safetensors` checks a copy),
`normalisation.json` (train statistics, norm `{norm}`), `metrics.json` (test metrics, if any).

With svqbench:

```python
from svqbench import load_run
run = load_run("{folder}")            # or svqbench.export.load_exported
forecast = run.forecast(x)            # x: (B, {in_len}, {channels}, {height}, {width}) numpy or tensor, physical units
```

Without svqbench's checkpoint format (still its model code):

```python
import json, torch
from safetensors.torch import load_file
from svqbench.config import RunConfig
from svqbench.models import ForecastShape, build_model
cfg = json.load(open("{folder}/config.json"))
model = build_model(RunConfig(**cfg["config"]), ForecastShape(**cfg["shape"]))
model.load_state_dict(load_file("{folder}/model.safetensors")); model.eval()
# normalise x as normalisation.json says, then: y_model, _ = model(x_model)
```

Normalisation (`{norm}`): {rule}
"""


def export_run(run: str | Path, dest: str | Path, *, results_dir: str | Path | None = "results",
               data_dir: str | Path | None = None, checkpoint: str = "best.pt") -> Path:
    """Write the export of a run folder to `dest` (a new or empty folder); returns `dest`."""
    from safetensors.torch import save

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} is a file; give a folder for the export")
    if dest.is_dir() and any(dest.iterdir()):
        raise UserError(f"{dest} exists and is not empty; export into a new folder (nothing was written)")
    loaded = load_run(run, results_dir=results_dir, data_dir=data_dir, checkpoint=checkpoint)
    if loaded.saved is None:
        raise UserError(f"{run} is already an export; copy the folder instead")
    saved, cfg = loaded.saved, loaded.config
    # safetensors refuses tensors that share memory: each tensor is its own contiguous copy
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    weights = save(tensors, metadata={"format": FORMAT, "run_id": loaded.run_id})
    meta = saved.record.get("dataset_meta") or {}
    units = list(meta.get("units") or [])
    record = {"format": FORMAT, "run_id": loaded.run_id, "config": cfg.to_dict(), "shape": asdict(loaded.shape),
              "checkpoint": checkpoint, "svqbench": __version__,
              "weights_sha256": hashlib.sha256(weights).hexdigest(),
              "exported": dt.datetime.now().isoformat(timespec="seconds"),
              "dataset": {k: meta.get(k) for k in ("name", "kind", "units", "step", "digest")},
              "trained_with": {k: saved.record.get(k) for k in ("svqbench", "git", "torch") if k in saved.record}}
    stats = meta.get("stats") or {"mean": loaded.stats.mean.tolist(), "std": loaded.stats.std.tolist()}
    norm = {"norm": cfg.norm, "mean": stats["mean"], "std": stats["std"],  # as meta.json holds them (float64)
            "dtype": "float32", "computed_on": stats.get("computed_on", "train"), "units": units,
            "rule": NORM_RULES[cfg.norm]}
    check_statistics(norm, loaded.shape.channels, f"run {loaded.run_id}'s train statistics",
                     fix="its forecasts cannot be de-normalised; nothing was exported")
    s = loaded.shape
    from svqbench.models import describe_model
    readme = README.format(run_id=loaded.run_id, model=describe_model(cfg), quantizer=cfg.quantizer, dataset=cfg.dataset,
                           version=__version__, in_len=s.in_len, out_len=s.out_len, channels=s.channels,
                           height=s.height, width=s.width, units=", ".join(units) or "as trained", norm=cfg.norm,
                           folder=dest.name, rule=NORM_RULES[cfg.norm])
    ensure_dir(dest.parent)
    remove_stale_temps(dest.parent, dest.name)  # what a killed export left
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        atomic_write(tmp / WEIGHTS, lambda f: f.write(weights))
        write_json(tmp / CONFIG, record)
        write_json(tmp / NORMALISATION, norm)
        if loaded.metrics is not None:
            write_json(tmp / METRICS, loaded.metrics)
        write_text(tmp / "README.md", readme)
        if dest.is_dir():
            dest.rmdir()  # empty (checked above); a file put there since makes this fail, not vanish
        os.rename(tmp, dest)
    except OSError as e:
        raise CannotWrite(dest, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
