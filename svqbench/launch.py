"""Sweeps on a Slurm cluster through submitit: `svqbench sweep RECIPE --launcher slurm`.

One job (a task of one Slurm job array) per cell x seed of the sweep's plan that is not done yet.
Each job does on the compute node what a local sweep does for that cell, and runs the very same
`svqbench run` in a subprocess:
- it claims the cell (svqbench.sweep): a finished cell is skipped, a cell that a live process holds
  is left alone, a crashed attempt is resumed from its checkpoint (`svqbench run --resume RUN`) or
  its unfinished folder cleared and the cell started again;
- `python -m svqbench run --recipe R --cell C --scale S --seed N --name RUN --results-dir SWEEP`,
  under torchrun when the job has several GPUs per node (one process per GPU), with a c10d
  rendezvous on the job's first node when it has several nodes;
- on preemption or timeout submitit requeues the job (`CellJob.checkpoint`). Slurm stops
  `svqbench run` with SIGTERM (it exits 143 and keeps its checkpoints); the requeued job keeps
  its Slurm job id, takes over the claim of its own earlier attempt and continues with `--resume`.
Results land in the sweep folder and its leaderboard, exactly as a local sweep's; submitit's
scripts and the job logs in SWEEP/.submitit/.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from svqbench.errors import UserError
from svqbench.sweep import CLAIMS, Job, finished_run_ids, plan, prepare_attempt, release_claim, slurm_attempt, \
    sweep_dir, try_claim

LAUNCHERS = ("local", "slurm")
DECISION_WAIT_S = 1800  # how long the other nodes of a multi-node job wait for node 0's decision
_CHILD: subprocess.Popen | None = None  # the running `svqbench run` of this job process
_TERMINATED = False                      # whether it was sent SIGTERM


@dataclass(frozen=True)
class SlurmOptions:
    """The Slurm resources of every job of a sweep (None: the cluster's default)."""
    partition: str | None = None
    time: int | None = None           # minutes
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    nodes: int | None = None

    def given(self) -> list[str]:
        return [f"--{f.name.replace('_', '-')}" for f in fields(self) if getattr(self, f.name) is not None]

    def parameters(self) -> dict[str, Any]:
        """submitit AutoExecutor parameters: one task per node (it starts torchrun itself)."""
        p = {"timeout_min": self.time, "gpus_per_node": self.gpus_per_node, "cpus_per_task": self.cpus_per_task,
             "nodes": self.nodes, "slurm_partition": self.partition}
        return {"tasks_per_node": 1, **{k: v for k, v in p.items() if v is not None}}


def check_launcher(launcher: str, slurm: SlurmOptions, *, submitting: bool = True) -> None:
    """One line for a launcher that cannot work here, checked before anything is written."""
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose one of: {', '.join(LAUNCHERS)}")
    if launcher != "slurm":
        if slurm.given():
            raise UserError(f"{', '.join(slurm.given())} only apply to Slurm jobs; add --launcher slurm")
        return
    if importlib.util.find_spec("submitit") is None:
        raise UserError("--launcher slurm needs pip install 'svqbench[slurm]'")
    if submitting and shutil.which("sbatch") is None:
        raise UserError("--launcher slurm: Slurm is not available on this machine (no sbatch on PATH); "
                        "submit from a Slurm login node, or use --launcher local")


@dataclass(frozen=True)
class CellJob:
    """What each job runs (pickled by submitit, called on the compute node with one Job)."""
    recipe: str                # absolute path of the recipe TOML
    scale: str
    directory: str             # absolute path of the sweep folder
    data_dir: str | None
    device: str = "cpu"
    tracker: str = "none"
    procs_per_node: int = 1    # torchrun processes per node (the GPUs per node)

    def __call__(self, job: Job) -> str:
        import submitit
        env = submitit.JobEnvironment()
        directory = Path(self.directory)
        decision_file = directory / CLAIMS / f"{job.run_id}.launch.json"
        attempt = slurm_attempt() or env.job_id
        if env.global_rank == 0:
            state = try_claim(directory, job.run_id)
            argv = None
            if state == "claimed":
                try:
                    argv = self.run_args(job, prepare_attempt(directory, job, print))
                except BaseException:
                    release_claim(directory, job.run_id)
                    raise
            if env.num_nodes > 1:  # the other nodes start torchrun only when node 0 does
                from svqbench.atomic import write_json
                write_json(decision_file, {"attempt": attempt, "state": state, "argv": argv})
        else:
            state, argv = self._wait_for_node0(decision_file, attempt)
        if argv is None:
            print(f"{job.run_id}: {state}, nothing to run")
            return state
        global _CHILD
        try:
            _CHILD = subprocess.Popen(self.launcher(env) + argv, preexec_fn=_ignore_warning_signal)
            code = _CHILD.wait()
        finally:
            stopped = _stop_child()  # when this process is interrupted (requeue), so is the run
            if stopped is not None:
                print(f"{job.run_id}: svqbench run stopped, exit status {stopped}", flush=True)
            if env.global_rank == 0:
                release_claim(directory, job.run_id)
        if code != 0:
            if env.global_rank == 0:
                from svqbench.atomic import write_text
                write_text(directory / f"{job.run_id}.error.txt",
                           f"svqbench run exited with status {code}; its output is in {directory}/.submitit/\n")
            raise RuntimeError(f"{job.run_id}: svqbench run exited with status {code}")
        return "finished"

    def checkpoint(self, job: Job):
        """Called by submitit on preemption or timeout, before it requeues the job: stop the run with
        SIGTERM (it exits 143, checkpoints kept) and requeue the same job, which will resume it."""
        import submitit
        _terminate_child()  # in a signal handler: signal only; the job's `finally` waits for the run
        return submitit.helpers.DelayedSubmission(self, job)

    def run_args(self, job: Job, resume: bool) -> list[str]:
        """`-m svqbench run ...` for this job: a fresh start, or `--resume` of the crashed attempt."""
        common = ["--results-dir", self.directory, "--device", self.device, "--tracker", self.tracker, "--quiet"]
        if self.data_dir is not None:
            common += ["--data-dir", self.data_dir]
        if resume:
            return ["-m", "svqbench", "run", "--resume", job.run_id, *common]
        return ["-m", "svqbench", "run", "--recipe", self.recipe, "--cell", job.cell.label, "--scale", self.scale,
                "--seed", str(job.seed), "--name", job.run_id, *common]

    def launcher(self, env: Any) -> list[str]:
        """python, or torchrun (as `python -m torch.distributed.run`) for several processes or nodes."""
        if env.num_nodes <= 1 and self.procs_per_node <= 1:
            return [sys.executable]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.procs_per_node)]
        if env.num_nodes <= 1:
            return [*torchrun, "--standalone"]
        port = 20000 + zlib.crc32(env.job_id.encode()) % 20000
        return [*torchrun, "--nnodes", str(env.num_nodes), "--rdzv_backend", "c10d",
                "--rdzv_endpoint", f"{env.hostnames[0]}:{port}", "--rdzv_id", env.job_id]

    @staticmethod
    def _wait_for_node0(path: Path, attempt: str) -> tuple[str, list[str] | None]:
        deadline = time.monotonic() + DECISION_WAIT_S
        while time.monotonic() < deadline:
            try:
                decision = json.loads(path.read_text())
                if decision.get("attempt") == attempt:
                    return decision["state"], decision["argv"]
            except (OSError, ValueError):
                pass
            time.sleep(2)
        raise RuntimeError(f"node 0 of job {attempt} did not say within {DECISION_WAIT_S} s whether to run")


def _terminate_child() -> bool:
    """SIGTERM, once, to the running `svqbench run` (no wait: safe inside a signal handler)."""
    global _TERMINATED
    if _CHILD is None or _CHILD.returncode is not None:
        return False
    if not _TERMINATED:
        _TERMINATED = True
        try:
            os.kill(_CHILD.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return True


def _stop_child() -> int | None:
    """Stop a `svqbench run` still running (SIGTERM, SIGKILL after a minute): its exit status, else None."""
    if _CHILD is None or (_CHILD.poll() is not None and not _TERMINATED):
        return None
    _terminate_child()
    try:
        return _CHILD.wait(timeout=60)
    except subprocess.TimeoutExpired:
        _CHILD.kill()
        return _CHILD.wait()


def _ignore_warning_signal() -> None:
    """In the child: Slurm sends submitit's warning signal (USR2, whose default action kills) to every
    process of the job; only submitit, which requeues, should act on it. The run stops at SIGTERM."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    signal.signal(getattr(signal, f"SIG{name}", signal.SIGUSR2), signal.SIG_IGN)


def make_executor(folder: Path, slurm: SlurmOptions, *, name: str, cluster: str = "slurm"):
    """A submitit AutoExecutor for `cluster` ("slurm"; "local" runs the jobs as local subprocesses)."""
    import submitit
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name=name, **slurm.parameters())
    return executor


def submit_sweep(recipe, scale: str, *, results_dir: Path, seeds: int | None = None, cells: str | None = None,
                 data_dir: Path | None = None, device: str = "cpu", tracker: str = "none",
                 slurm: SlurmOptions = SlurmOptions(), cluster: str = "slurm",
                 procs_per_node: int | None = None) -> tuple[Path, list[Job], list[Any]]:
    """Submit one job per cell x seed not yet done; returns (sweep folder, all jobs, submitit jobs).
    The jobs run `svqbench run` into the sweep folder, so `svqbench sweep --dry-run` and
    `svqbench compare` follow them as they finish."""
    jobs = plan(recipe, scale, seeds=seeds, cells=cells, data_dir=data_dir)
    directory = sweep_dir(results_dir, recipe, scale).resolve()
    from svqbench.atomic import ensure_dir
    ensure_dir(directory)
    done = finished_run_ids(directory)
    todo = [j for j in jobs if j.run_id not in done]
    if not todo:
        return directory, jobs, []
    runner = CellJob(recipe=str(Path(recipe.path).resolve()), scale=scale, directory=str(directory),
                     data_dir=None if data_dir is None else str(Path(data_dir).resolve()), device=device,
                     tracker=tracker, procs_per_node=procs_per_node or max(1, slurm.gpus_per_node or 0))
    executor = make_executor(directory / ".submitit", slurm, name=f"svqbench-{recipe.name}-{scale}",
                             cluster=cluster)
    return directory, jobs, executor.map_array(runner, todo)
