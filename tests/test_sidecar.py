"""MLflow's sidecar process (src/tracking/sidecar.py): the training process never imports MLflow, every
write is done when a run returns, its errors end the run FAILED, and no run outlives its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mlflow.tracking import MlflowClient

from src.signals import REASONS
from src.tracking.sidecar import MlflowError, Sidecar
from src.tracking.tracker import MlflowTracker
from src.train import train
from tests.helpers import all_runs, artifact_paths, cli_env, make_config, run_cli

T = TypeVar("T")
ENDLESS = ("trainer.max_epochs=1000000000", "trainer.patience=1000000000", "trainer.stopping_threshold=null")


def processes_with(marker: str) -> list[int]:
    """The pids of live processes whose environment holds `marker` (a test's own, so only its own)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)
    return value


@pytest.mark.slow
def test_a_training_process_imports_neither_mlflow_nor_matplotlib(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "src.train", "trainer.max_epochs=3",
         "trainer.progress=false", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line
    }
    assert "torch" in imported  # the check sees this process's imports ...
    assert not {m for m in imported if m.split(".")[0] in ("mlflow", "matplotlib", "pandas")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = all_runs(uri)  # ... and MLflow got everything anyway
    assert run.info.status == "FINISHED" and run.data.metrics["epochs"] == 3
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert artifacts >= {"loss_curve.png", "model", "config.yaml", "snapshot", ".hydra"}
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 0  # drawn into the run dir


@pytest.mark.parametrize("sidecar", [True, False], ids=["sidecar", "in_process"])
def test_a_failed_write_is_raised_when_the_run_ends_and_the_run_ends_failed(sqlite_uri, sidecar):
    tracker = MlflowTracker("descentlab", make_config("trainer.max_epochs=2"), sidecar=sidecar)
    with pytest.raises(MlflowError, match=r"MlflowException: .*bad!key"), tracker:
        tracker._log("bad!key", 1.0, 1)  # MLflow refuses the name, in the sidecar, after this returns
        tracker.flush()
        tracker._log("val_loss", 0.5, 1)  # skipped: the run already failed
    (run,) = all_runs(sqlite_uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("MlflowException: ") and "bad!key" in run.data.tags["error"]
    assert "val_loss" not in run.data.metrics


def test_a_run_that_fails_of_its_own_keeps_its_error_over_a_failed_write(sqlite_uri):
    tracker = MlflowTracker("descentlab", make_config("trainer.max_epochs=2"))
    with pytest.raises(RuntimeError, match="its own"), tracker:
        tracker._log("bad!key", 1.0, 1)
        tracker.flush()
        raise RuntimeError("its own")
    (run,) = all_runs(sqlite_uri)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: its own"


def endless_run(tmp_path: Path) -> tuple[str, str, subprocess.Popen[str]]:
    """An endless training run in a subprocess: its store's URI, the marker in its (and its
    sidecar's) environment, and the process."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # the store first: the polling must not race for it
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", *ENDLESS, f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, env=cli_env(DESCENTLAB_TEST=marker), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return uri, marker, proc


@pytest.mark.slow
def test_a_killed_training_process_leaves_its_run_killed_not_running(tmp_path):
    uri, marker, proc = endless_run(tmp_path)
    try:
        wait_until(lambda: [r for r in all_runs(uri) if r.info.status == "RUNNING"], 120, "a run started")
    finally:
        proc.kill()  # SIGKILL: no handler, no atexit; only the sidecar is left to end the run
        proc.wait()
    # Its status is written first, then its tags: wait for the last of them, then read the run again
    # (a search reads a run's row and its tags in two queries: the ending may land between them).
    (ended,) = wait_until(lambda: [r for r in all_runs(uri) if "stop_reason" in r.data.tags], 30, "it ended")
    run = MlflowClient(tracking_uri=uri).get_run(ended.info.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["stop_reason"] == "process_died"
    assert "the training process ended without ending this run" in run.data.tags["error"]
    wait_until(lambda: not processes_with(marker), 30, "the sidecar exited")
    assert proc.stderr is not None and proc.stderr.read() == ""  # the sidecar wrote nothing


@pytest.mark.slow
def test_a_dead_sidecar_fails_the_run_with_one_line_and_leaves_nothing_running(tmp_path):
    uri, marker, proc = endless_run(tmp_path)
    try:
        wait_until(lambda: [r for r in all_runs(uri) if r.info.status == "RUNNING"], 120, "a run started")
        (sidecar,) = [pid for pid in processes_with(marker) if pid != proc.pid]
        os.kill(sidecar, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        f"error: SidecarError: the MLflow process (pid {sidecar}) ended unexpectedly (exit status -9)"
    ]
    (run,) = all_runs(uri)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("SidecarError: ")


def test_a_bad_config_exits_2_and_its_early_sidecar_is_gone_with_no_store(tmp_path):
    marker = uuid.uuid4().hex
    proc = run_cli(tmp_path, "optimizer.lr=-1", env={"DESCENTLAB_TEST": marker})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: optimizer.lr=-1.0 is not allowed: must be > 0"]
    assert processes_with(marker) == []  # the sidecar started before the imports was killed at exit
    assert not (tmp_path / "mlflow.db").exists()


def test_the_sidecar_outlives_the_signals_that_stop_training():
    """SLURM sends its time-limit warning (SIGUSR2) to every process of the job, and a Ctrl-C reaches
    the whole process group: the training process acts on them; its sidecar must live to end the run."""
    sidecar = Sidecar()
    try:
        sidecar.barrier()  # serving: its handlers are in place
        for stop in REASONS:
            os.kill(sidecar.proc.pid, stop)
        sidecar.barrier()
        assert sidecar.proc.poll() is None
    finally:
        sidecar.close()
    assert sidecar.proc.returncode == 0


SMALL = ("trainer.progress=false", "trainer.max_epochs=3")
TIMINGS = (
    "epoch_time",
    "wall_time",
    "setup_time",
)  # seconds: their keys and steps are compared, not their values


def record(uri: str) -> dict[str, Any]:
    """The store's one run as a reader sees it, less its id and times: status, name, params, each
    metric's steps and values, tags, artifacts, dataset input, logged models."""
    client = MlflowClient(uri)
    (run,) = all_runs(uri)
    run_id = run.info.run_id
    history = {
        key: sorted(client.get_metric_history(run_id, key), key=lambda m: m.step) for key in run.data.metrics
    }
    datasets = [
        (i.dataset.name, i.dataset.digest, i.dataset.source, i.dataset.profile)
        for i in run.inputs.dataset_inputs
    ]
    return {
        "status": run.info.status,
        "name": run.info.run_name,
        "params": run.data.params,
        "steps": {key: [m.step for m in points] for key, points in history.items()},
        "values": {key: [m.value for m in points] for key, points in history.items() if key not in TIMINGS},
        "tags": run.data.tags,
        "artifacts": artifact_paths(client, run_id),
        "datasets": datasets,
        "models": len(run.outputs.model_outputs),
    }


def test_mlflow_in_the_training_process_records_the_run_the_sidecar_records(tmp_path, monkeypatch):
    """`tracking.sidecar=false` runs the same writer in the training process: the same record."""
    uris = {way: f"sqlite:///{tmp_path / way}.db" for way in ("sidecar", "in_process")}
    with monkeypatch.context() as patch:
        patch.setattr(Sidecar, "get", lambda: pytest.fail("tracking.sidecar=false used a sidecar"))
        train(make_config(*SMALL, f"tracking.uri={uris['in_process']}", "tracking.sidecar=false"))
    train(make_config(*SMALL, f"tracking.uri={uris['sidecar']}"))
    in_process, sidecar = record(uris["in_process"]), record(uris["sidecar"])
    values = in_process.pop("values"), sidecar.pop("values")
    assert in_process == sidecar
    assert in_process["status"] == "FINISHED"
    assert {"model/model.pt", "loss_curve.png", "config.yaml"} <= in_process["artifacts"]
    assert {"train_loss", "val_loss", "wall_time"} <= in_process["steps"].keys()
    assert values[0].keys() == values[1].keys()
    for key, numbers in values[0].items():  # the same numbers, up to the last digits of the reference's,
        # which differ between any two runs in one process (two through the sidecar too)
        assert numbers == pytest.approx(values[1][key], rel=1e-9), key


def test_a_command_line_with_mlflow_in_its_own_process_starts_no_sidecar(monkeypatch):
    monkeypatch.setattr(Sidecar, "_current", None)
    Sidecar.prestart(["optimizer=adam", "tracking.sidecar=false"])
    assert Sidecar._current is None


def test_a_multirun_starts_its_sidecar_first_only_where_its_jobs_run_in_this_process(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for launcher in ("hydra/launcher=joblib", "hydra/launcher=slurm"):  # jobs elsewhere start their own
        monkeypatch.setattr(Sidecar, "_current", None)
        Sidecar.prestart(["--multirun", "seed=1,2", launcher])
        assert Sidecar._current is None, launcher
    for here in ([], ["hydra/launcher=basic"], ["hydra/launcher=batched"]):
        monkeypatch.setattr(Sidecar, "_current", None)
        Sidecar.prestart(["--multirun", "seed=1,2", *here])
        started = Sidecar._current
        assert started is not None, here
        started.close()  # never used: killed
        assert started.proc.poll() is not None
