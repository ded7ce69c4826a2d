"""Sweeps on a real SLURM cluster (`hydra/launcher=slurm`): the README recipe, a job requeued by its
warning signal that resumes bitwise, `scancel` of a running trial, and a time limit past the requeues.

They need a cluster (`.ci/slurm.sh` sets up a single-node one, as CI does): without `sinfo` they
skip, unless DESCENTLAB_REQUIRE_SLURM=1 (CI), where a missing cluster fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import all_runs, cli_env, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one small cluster: one worker at a time

# One CPU per job, so that two jobs run side by side on a 2-core node.
SLURM = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1")
# A trial that trains long enough to be interrupted: every epoch is 700 single-row steps.
LONG = ("trainer.batch_size=1", "trainer.patience=100000", "trainer.stopping_threshold=null",
        "trainer.checkpoint_every=5")  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = "no SLURM cluster here (sinfo not found); .ci/slurm.sh sets up a single-node one"
    if shutil.which("sinfo") is not None:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
        if out.returncode == 0 and {"idle", "mix", "alloc"} & set(out.stdout.split()):
            return
        reason = f"sinfo shows no usable node: {(out.stdout + out.stderr).strip()}"
    if os.environ.get("DESCENTLAB_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def sweep(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """A SLURM sweep started in the background, storing its study and MLflow runs in tmp_path."""
    command = [
        sys.executable, "-m", "src.train", "--multirun", "hydra/sweeper=descentlab_optuna", *SLURM,
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def wait_for(condition: Callable[[], object], proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting; sweep output:\n{proc.communicate()[0]}")
        time.sleep(0.5)


def jobs(tmp_path: Path) -> list[str]:
    folder = tmp_path / "multirun" / ".submitit"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def job_state(job: str) -> str:
    command = ["squeue", "--states=all", "-h", "-o", "%T", "-j", job]
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


def study(tmp_path: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "multirun" / "optuna.journal"))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_readme_recipe_runs_each_trial_as_a_slurm_job_quietly(tmp_path, cluster):
    proc = sweep(
        tmp_path, "+experiment=lecture_sweep", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4",
        "hydra.launcher.partition=cpu",
    )  # fmt: skip
    out = finish(proc)
    assert "Bypassing" not in out and "sacct" not in out
    assert len(jobs(tmp_path)) == 4  # one SLURM job per trial
    state_lines = [line for line in out.splitlines() if "SLURM job" in line]
    assert len(state_lines) <= 4 * 4, out  # a line per state change (pending, running, completing, done)
    finished = [t for t in study(tmp_path).trials if t.state.is_finished()]
    assert len(finished) == 4
    children = [r for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if "optuna.trial" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == [0, 1, 2, 3]
    assert {r.info.status for r in children} == {"FINISHED"}


def test_a_warned_job_is_requeued_and_resumes_bitwise(tmp_path, cluster):
    """SLURM's warning signal mid-training: the job snapshots, submitit requeues it, and the requeued
    job continues the same MLflow run and Optuna trial to the same numbers as an uninterrupted run."""
    config = ("optimizer.lr=0.01", "trainer.max_epochs=40", *LONG)
    proc = sweep(tmp_path, "hydra.sweeper.n_trials=1", "seed=choice(3)", *config)
    snapshot = tmp_path / "multirun" / "0" / "snapshot.pt"
    wait_for(snapshot.is_file, proc)  # training has begun
    (job,) = jobs(tmp_path)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what SLURM sends before the limit
    wait_for(lambda: job_state(job) == "PENDING", proc)  # requeued
    # SLURM holds a requeued job for 2 minutes before it may start again; skip that wait.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    out = finish(proc)
    logs = tmp_path / "multirun" / ".submitit" / job
    assert "Requeued job" in (logs / f"{job}_0_log.out").read_text()
    assert "Traceback" not in (logs / f"{job}_0_log.err").read_text()  # the requeue's SIGTERM is expected

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = [r for r in all_runs(uri) if "optuna.trial" in r.data.tags]  # one MLflow run for the trial
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from"].endswith("multirun/0")
    (trial,) = study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE, out
    assert sorted(trial.intermediate_values) == list(range(1, 41))  # each epoch reported once

    reference = run_cli(tmp_path, "seed=3", *config, "tracking.experiment=reference", f"tracking.uri={uri}")
    assert reference.returncode == 0, reference.stderr
    (uninterrupted,) = all_runs(uri, "reference")
    client = MlflowClient(uri)
    for metric in ("train_loss", "val_loss", "grad_norm", "param_error"):
        resumed = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
        assert resumed == [m.value for m in client.get_metric_history(uninterrupted.info.run_id, metric)]
    assert trial.value == uninterrupted.data.metrics["best_val_loss"]


def test_scancel_fails_the_trial_with_a_reason_and_the_sweep_goes_on(tmp_path, cluster):
    proc = sweep(
        tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_jobs=2",
        "trainer.max_epochs=choice(20,100000)", *LONG,
    )  # fmt: skip

    def running() -> list[str]:
        return [job for job in jobs(tmp_path) if job_state(job) == "RUNNING"]

    def one_left_running() -> bool:
        states = [t.state for t in study(tmp_path).trials] if jobs(tmp_path) else []
        return sorted(s.name for s in states) == ["COMPLETE", "RUNNING"] and len(running()) == 1

    wait_for(one_left_running, proc)
    endless = running()
    subprocess.run(["scancel", endless[0]], check=True)
    out = finish(proc)
    trials = {t.params["trainer.max_epochs"]: t for t in study(tmp_path).trials}
    assert trials[20].state == optuna.trial.TrialState.COMPLETE
    assert trials[100000].state == optuna.trial.TrialState.FAIL
    assert f"SLURM job {endless[0]} ended CANCELLED" in trials[100000].user_attrs["fail_reason"], out
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "RUNNING" not in {r.info.status for r in runs}  # the cancelled job ended its run (KILLED)


def test_a_time_limit_past_max_num_timeout_fails_the_trial_with_a_reason(tmp_path, cluster):
    """A real time limit: SLURM warns 60 s before it (or up to 60 s earlier); with no requeue left the
    trial fails, saying so, and its MLflow run is not left RUNNING."""
    proc = sweep(
        tmp_path, "hydra.sweeper.n_trials=1", "trainer.max_epochs=choice(100000)",
        "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60",
        "hydra.launcher.max_num_timeout=0", *LONG,
    )  # fmt: skip
    out = finish(proc, timeout=240)
    (trial,) = study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.FAIL, out
    reason = trial.user_attrs["fail_reason"]
    assert reason.startswith("JobLost: SLURM time limit: not requeued because: timed-out too many times")
    assert "max_num_timeout=0" in reason and "snapshot" in reason, reason
    (run,) = [r for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if "optuna.trial" in r.data.tags]
    assert run.info.status != "RUNNING"


def test_a_time_limit_that_leaves_no_time_before_the_warning_is_refused(tmp_path):
    done = run_cli(tmp_path, "--multirun", *SLURM, "hydra.launcher.timeout_min=2", "optimizer.lr=0.1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: hydra.launcher.timeout_min=2 leaves 0 s before SLURM's warning signal "
        "(hydra.launcher.signal_delay_s=120 s before the limit); it must leave at least 60 s: "
        "raise timeout_min or lower signal_delay_s"
    )
    assert not (tmp_path / "multirun" / ".submitit").exists()  # nothing was submitted
    assert all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") == []  # nor a sweep's parent run started
