"""Run every cell x seed of a recipe scale; skip what is done; resume after a crash; safe to run twice.

Layout: results/<recipe>-<scale>/
  leaderboard.csv              one row per finished run (a cell x seed is done when its row is here)
  <recipe>-<scale>-<cell>-s<seed>/   the run folders (svqbench.experiment)
  .claims/<run-id>.claim       who runs a cell now: {"pid", "host", "start_ticks", "since", "slurm"}

A sweep claims a cell by creating its claim file with O_CREAT | O_EXCL, so two sweeps never run the
same cell. A claim whose process is gone (dead PID on this host, a PID reused by a process that
started later, or an earlier attempt of the same Slurm job before it was requeued) is stale: the
cell is taken over and continued from the crashed run's checkpoint (svqbench.train, `resume`), or
started again when there is none or the recipe changed since. Claim decisions are made under one
short flock so that two sweeps never both take over the same stale claim. `svqbench sweep
--launcher slurm` (svqbench.launch) makes each Slurm job claim its cell the same way.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import shutil
import socket
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from svqbench.atomic import ensure_dir, write_text
from svqbench.errors import UserError
from svqbench.recipes import Cell, Recipe, resolve_cell
from svqbench.results import LEADERBOARD, locked, read_leaderboard

CLAIMS = ".claims"


@dataclass(frozen=True)
class Job:
    cell: Cell
    seed: int
    run_id: str
    config: Any  # RunConfig


@dataclass
class SweepReport:
    directory: Path
    ran: list[str] = field(default_factory=list)
    done_before: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)      # claimed by another live sweep
    failed: dict[str, str] = field(default_factory=dict)


def sweep_dir(results_dir: Path, recipe: Recipe, scale: str) -> Path:
    return Path(results_dir) / f"{recipe.name}-{scale}"


def plan(recipe: Recipe, scale: str, *, seeds: int | None = None, cells: str | None = None,
         data_dir: Path | None = None) -> list[Job]:
    """Every (cell, seed) job, resolved up front so a bad value fails before anything runs."""
    n_seeds = recipe.seeds(scale) if seeds is None else seeds
    if n_seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {n_seeds}")
    selected = [c for c in recipe.cells(scale) if cells is None or fnmatch.fnmatchcase(c.label, cells)]
    if not selected:
        labels = ", ".join(c.label for c in recipe.cells(scale))
        raise UserError(f"--cells {cells!r} matches no cell of {recipe.name} ({scale}); cells: {labels}")
    jobs = []
    for cell in selected:
        first = resolve_cell(cell, data_dir=data_dir).seed
        for seed in range(first, first + n_seeds):
            jobs.append(Job(cell, seed, f"{recipe.name}-{scale}-{cell.label}-s{seed}",
                            resolve_cell(cell, seed=seed, data_dir=data_dir)))
    return jobs


def finished_run_ids(directory: Path) -> set[str]:
    path = directory / LEADERBOARD
    if not path.exists():
        return set()
    return set(read_leaderboard(path)["run_id"])


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (Linux), to tell a reused PID from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def slurm_attempt() -> str | None:
    """JOBID.RESTARTS inside a Slurm job: a requeued job keeps its id and counts one more restart."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}" if job else None


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start_ticks": _start_ticks(pid),
            "since": dt.datetime.now().isoformat(timespec="seconds"), "slurm": slurm_attempt()}


def claim_is_stale(claim: dict[str, Any]) -> bool:
    """True only when we can tell the claiming process is gone; claims from other hosts stay live.
    An empty or torn claim is stale: claims are written whole under the claims lock, so only a writer
    that died mid-write leaves one."""
    if not claim:
        return True
    ours, theirs = slurm_attempt(), claim.get("slurm")
    if ours and isinstance(theirs, str) and theirs.split(".")[0] == ours.split(".")[0] and theirs != ours:
        return True  # an earlier attempt of this very Slurm job, which Slurm stopped and requeued
    if claim.get("host") != socket.gethostname():
        return False
    pid = claim.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by someone else
    started = claim.get("start_ticks")
    return started is not None and _start_ticks(pid) not in (None, started)


def try_claim(directory: Path, run_id: str) -> str:
    """'claimed' (ours now), 'done' (finished run) or 'busy' (a live process holds it)."""
    claims = directory / CLAIMS
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / f"{run_id}.claim"
    with locked(claims / "claims"):
        if run_id in finished_run_ids(directory):
            return "done"
        if path.exists():
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}  # torn or empty claim file: its writer died before finishing it
            if not claim_is_stale(holder):
                return "busy"
            path.unlink()
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(_owner(), f)
    return "claimed"


def release_claim(directory: Path, run_id: str) -> None:
    (directory / CLAIMS / f"{run_id}.claim").unlink(missing_ok=True)


def can_resume(run_dir: Path, config: Any) -> bool:
    """A crashed attempt can be continued when it left a checkpoint and was started with this very
    config (a recipe edited since then means the cell must start again)."""
    from svqbench.checkpoint import has_checkpoint
    from svqbench.runs import open_run
    if not has_checkpoint(run_dir):
        return False
    try:
        return open_run(run_dir).config == config
    except UserError:  # an unreadable or outdated record: the cell starts again
        return False


def prepare_attempt(directory: Path, job: Job, log: Callable[[str], None]) -> bool:
    """For a job just claimed: drop the last attempt's error file and say how to run it: True =
    resume the crashed attempt from its checkpoint; False = from the start (an unfinished folder
    that cannot be resumed, crashed before its first checkpoint or made by an older recipe, is cleared)."""
    (directory / f"{job.run_id}.error.txt").unlink(missing_ok=True)
    resume = can_resume(directory / job.run_id, job.config)
    if resume:
        log(f"{job.run_id}: resuming a crashed attempt from its checkpoint")
    elif (directory / job.run_id).exists():
        shutil.rmtree(directory / job.run_id)
        log(f"{job.run_id}: cleared the unfinished run folder of a crashed attempt")
    return resume


Runner = Callable[..., dict]


def run_sweep(recipe: Recipe, scale: str, *, results_dir: Path, seeds: int | None = None, cells: str | None = None,
              data_dir: Path | None = None, device: str = "cpu", runner: Runner | None = None,
              reporter_factory: Callable[[], Any] | None = None,
              log: Callable[[str], None] = lambda message: None) -> SweepReport:
    """Run every job not yet done and not claimed by another sweep. `runner` defaults to
    svqbench.experiment.run_experiment (tests pass a fast stand-in)."""
    if runner is None:
        from svqbench.experiment import run_experiment as runner
    jobs = plan(recipe, scale, seeds=seeds, cells=cells, data_dir=data_dir)
    directory = sweep_dir(results_dir, recipe, scale)
    ensure_dir(directory)
    report = SweepReport(directory)
    for i, job in enumerate(jobs, 1):
        state = try_claim(directory, job.run_id)
        if state == "done":
            report.done_before.append(job.run_id)
            continue
        if state == "busy":
            report.busy.append(job.run_id)
            log(f"[{i}/{len(jobs)}] {job.run_id}: running in another sweep, skipped")
            continue
        error_file = directory / f"{job.run_id}.error.txt"
        reporter = None
        try:
            resume = prepare_attempt(directory, job, lambda message: log(f"[{i}/{len(jobs)}] {message}"))
            log(f"[{i}/{len(jobs)}] {job.run_id}: running")
            from svqbench.train import TrainOptions
            reporter = reporter_factory() if reporter_factory else None
            metrics = runner(job.config, results_dir=directory, data_dir=data_dir, run_id=job.run_id,
                             device=device, reporter=reporter, options=TrainOptions(resume=resume))
            report.ran.append(job.run_id)
            test = metrics.get("test", {})
            log(f"[{i}/{len(jobs)}] {job.run_id}: test MSE {test.get('mse_per_pixel', float('nan')):.4f} "
                f"MAE {test.get('mae_per_pixel', float('nan')):.4f}")
        except Exception as e:  # one failed cell must not stop the others
            report.failed[job.run_id] = f"{type(e).__name__}: {e}"
            log(f"[{i}/{len(jobs)}] {job.run_id}: FAILED {type(e).__name__}: {e}")
            if not isinstance(e, UserError):
                write_text(error_file, traceback.format_exc())
        finally:
            release_claim(directory, job.run_id)
            close = getattr(reporter, "close", None)  # a --tracker run that did not finish ends as failed
            if close is not None:
                close()
    return report
