"""`svqbench sweep --launcher slurm`: one submitit job per cell x seed, each running `svqbench run`
into the sweep's folder and leaderboard (real submitit, its local executor: jobs are subprocesses),
torchrun inside a job with several processes, a job that finds a crashed attempt resuming it, SIGTERM
stopping `svqbench run` like Ctrl-C, and the Slurm options' one-line errors."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import needs
from scaling_data import FLAGS, cli_flags
from svqbench.cli import main
from svqbench.launch import SlurmOptions, submit_sweep
from svqbench.recipes import load_recipe
from svqbench.sweep import CLAIMS, plan, sweep_dir, try_claim

RECIPE = """
title = "tiny launch"
[grid]
quantizer = ["none", "svq"]
[scales.paper.config]
dataset = "embedded"
[scales.quick]
seeds = 1
[scales.quick.config]
dataset = "embedded"
"""


def _recipe(tmp_path: Path, epochs: int):
    path = tmp_path / "tiny.toml"
    path.write_text(RECIPE + "".join(f"{k} = {v}\n" for k, v in {**FLAGS, "epochs": epochs}.items()))
    return load_recipe(path)


@pytest.fixture
def recipe(tmp_path):
    return _recipe(tmp_path, epochs=1)


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["svqbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def _job_log(job) -> str:
    return Path(job.paths.stdout).read_text() + Path(job.paths.stderr).read_text()


@needs("submitit")
def test_local_executor_runs_two_cells_as_jobs_into_the_sweep_leaderboard(recipe, tiny_root, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = tmp_path / "results"
    # the `none` cell as a 2-process torchrun job (as a 2-GPU node would run it), the `svq` cell as one process
    _, _, torchrun = submit_sweep(recipe, "quick", results_dir=results, cells="none", data_dir=tiny_root,
                                  cluster="local", slurm=SlurmOptions(time=20), procs_per_node=2)
    _, jobs, single = submit_sweep(recipe, "quick", results_dir=results, cells="svq", data_dir=tiny_root,
                                   cluster="local", slurm=SlurmOptions(time=20))
    outcomes = [job.result() for job in torchrun + single]  # raises when a job failed
    assert outcomes == ["finished", "finished"], [_job_log(j) for j in torchrun + single]
    directory = sweep_dir(results, recipe, "quick")
    board = pd.read_csv(directory / "leaderboard.csv")
    assert sorted(board["run_id"]) == sorted(j.run_id for j in plan(recipe, "quick"))
    world = {r: json.loads((directory / r / "metrics.json").read_text())["runtime"]["world_size"]
             for r in board["run_id"]}
    assert world == {"tiny-quick-none-s42": 2, "tiny-quick-svq-s42": 1}
    assert not list((directory / CLAIMS).glob("*.claim"))  # every claim released
    # the job ran exactly the sweep's config: a local sweep now finds both cells done
    _, _, again = submit_sweep(recipe, "quick", results_dir=results, data_dir=tiny_root, cluster="local")
    assert again == []


def test_sigterm_stops_svqbench_run_like_ctrl_c_with_exit_143(tiny_root, tmp_path):
    results = tmp_path / "results"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "svqbench", "run", *cli_flags(epochs=20), "--name", "r1",
                             "--results-dir", str(results), "--data-dir", str(tiny_root), "--checkpoint-every", "1",
                             "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (results / "r1" / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("interrupted by SIGTERM: leaderboard unchanged; continue with "
                                            "`svqbench run --resume RUN`")
    assert "Traceback" not in err and (results / "r1" / "checkpoint.pt").exists()
    assert not (results / "leaderboard.csv").exists()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@needs("submitit")
def test_a_preempted_job_stops_its_run_with_sigterm_and_the_requeued_job_resumes_it(tiny_root, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = _recipe(tmp_path, epochs=20)
    results = tmp_path / "results"
    [job] = plan(recipe, "quick", cells="svq", data_dir=tiny_root)
    run_dir = sweep_dir(results, recipe, "quick") / job.run_id
    _, _, [submitted] = submit_sweep(recipe, "quick", results_dir=results, cells="svq", data_dir=tiny_root,
                                     cluster="local", slurm=SlurmOptions(time=20))
    deadline = time.time() + 180
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    # Slurm's warning signal before preemption goes to every process of the job: submitit's (which
    # requeues) and the `svqbench run` it started (which must not die of it)
    [task] = _children(submitted._process.pid)
    [run] = _children(task)
    for pid in (run, task):
        os.kill(pid, signal.SIGUSR2)
    assert submitted.result() == "finished"
    log = _job_log(submitted)
    assert "svqbench run stopped, exit status 143" in log and "interrupted by SIGTERM" in log
    assert "resuming a crashed attempt from its checkpoint" in log
    assert list(pd.read_csv(run_dir.parent / "leaderboard.csv")["run_id"]) == [job.run_id]
    assert list(pd.read_csv(run_dir / "log.csv")["epoch"]) == list(range(20))


def test_a_requeued_slurm_job_takes_over_the_claim_of_its_own_earlier_attempt(recipe, tmp_path, monkeypatch):
    directory = tmp_path / "sweep"
    claims = directory / CLAIMS
    claims.mkdir(parents=True)
    earlier = {"pid": 12345, "host": "node-a", "start_ticks": 1, "since": "x", "slurm": "77.0"}
    path = claims / "cell.claim"

    def state(job: str | None, restarts: str | None) -> str:
        for key, value in (("SLURM_JOB_ID", job), ("SLURM_RESTART_COUNT", restarts)):
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        path.write_text(json.dumps(earlier))
        return try_claim(directory, "cell")

    assert state(None, None) == "busy"      # a live claim of another host
    assert state("78", None) == "busy"      # another Slurm job
    assert state("77", None) == "busy"      # the same attempt (another process of the same allocation)
    assert state("77", "1") == "claimed"    # job 77 requeued: its earlier attempt is gone
    assert json.loads(path.read_text())["slurm"] == "77.1"


def test_slurm_options_without_slurm_are_one_line_and_exit_2(recipe, monkeypatch, capsys, tmp_path):
    results = tmp_path / "results"
    cases = [
        (["--partition", "gpu"], "error: --partition only apply to Slurm jobs; add --launcher slurm"),
        (["--gpus-per-node", "4", "--nodes", "2"],
         "error: --gpus-per-node, --nodes only apply to Slurm jobs; add --launcher slurm"),
        (["--launcher", "k8s"], "error: unknown launcher 'k8s'; choose one of: local, slurm"),
        (["--launcher", "slurm", "--partition", "gpu"],  # the missing extra is named first
         "error: --launcher slurm: Slurm is not available on this machine (no sbatch on PATH); submit from a Slurm "
         "login node, or use --launcher local" if importlib.util.find_spec("submitit")
         else "error: --launcher slurm needs pip install 'svqbench[slurm]'"),
        (["--launcher", "slurm", "--time", "0"], None),  # typer's range check: one line too
    ]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here, whatever this machine has
    for args, expected in cases:
        code, err = _cli(monkeypatch, capsys, "sweep", str(recipe.path), *args, "--results-dir", str(results))
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
        if expected:
            assert err.strip() == expected
    monkeypatch.setitem(sys.modules, "submitit", None)  # as when the extra is not installed
    code, err = _cli(monkeypatch, capsys, "sweep", str(recipe.path), "--launcher", "slurm",
                     "--results-dir", str(results))
    assert (code, err.strip()) == (2, "error: --launcher slurm needs pip install 'svqbench[slurm]'")
    assert not results.exists()


def test_job_command_is_the_sweeps_svqbench_run(recipe, tmp_path):
    from svqbench.launch import CellJob
    job = plan(recipe, "quick", cells="svq")[0]
    runner = CellJob(recipe=str(recipe.path), scale="quick", directory=str(tmp_path), data_dir=None,
                     device="cuda", tracker="mlflow", procs_per_node=4)

    class Env:
        num_nodes, job_id, hostnames = 2, "55_1", ["n1", "n2"]
    fresh = runner.run_args(job, resume=False)
    assert fresh[:3] == ["-m", "svqbench", "run"] and "--resume" not in fresh
    assert fresh[fresh.index("--name") + 1] == job.run_id and fresh[fresh.index("--cell") + 1] == "svq"
    assert fresh[fresh.index("--tracker") + 1] == "mlflow" and fresh[fresh.index("--device") + 1] == "cuda"
    assert runner.run_args(job, resume=True)[3:5] == ["--resume", job.run_id]
    launch = runner.launcher(Env())
    assert launch[1:3] == ["-m", "torch.distributed.run"] and launch[launch.index("--nnodes") + 1] == "2"
    assert launch[launch.index("--nproc_per_node") + 1] == "4"
    assert launch[launch.index("--rdzv_endpoint") + 1].startswith("n1:")
