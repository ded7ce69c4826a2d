"""MLflow work that needs no torch: opening a store, ending the runs of dead processes, and
`RunWriter`, what a training run asks of MLflow, built into MLflow's entities from plain data (its
loss curves drawn by src/tracking/curves.py).

A training run's `RunWriter` lives in its MLflow sidecar process (src/tracking/sidecar.py), which
imports this module and MLflow, never torch, or with `tracking.sidecar=false` in the training process
itself; a sweep's parent run and the Optuna plugin use the functions here in their own process. This
module imports only the standard library at load time.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from src.tracking.curves import LossCurves, drawer_curve, loss_curve

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URI = "sqlite:///mlflow.db"  # the store where neither tracking.uri nor $MLFLOW_TRACKING_URI says
PROCESS_TAG = "descentlab.process"  # "host pid start" of the process running the run
LOGGED_MODEL = "descentlab-model"  # the run's model in MLflow's Models column and tab
CONFIG_ARTIFACT = "config.yaml"
SWEEP_TAG = "descentlab.sweep_dir"  # on a sweep's parent run
STUDY_TAG = "optuna.study"  # on the parent run of an Optuna sweep, and its trials' runs: the study
REPEATS_TAG = "descentlab.repeats"  # on an Optuna trial's run whose seeds are its children
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value

log = logging.getLogger(__name__)


def given_uri(uri: str | None = None) -> str:
    """The store as given: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI (a relative sqlite
    path as it is: src/tracking/uris.py's `tracking_uri` says where it lies)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite store's URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") else None


def quiet_migrations() -> None:
    """A new sqlite store announces its schema migration on stderr: noise, not news, for our users."""
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def first_use_lock(uri: str) -> AbstractContextManager[object]:
    """For a sqlite store, a file lock around its first use: processes that open a new store at the
    same moment would otherwise race in MLflow's schema migration ("table ... already exists")."""
    if (path := sqlite_file(uri)) is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(f"{path}.lock")


def open_experiment(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """The store's client and the experiment's id (created as MLflow 3's "Model training" kind, not
    its GenAI default); the runs of dead processes found there are ended."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with first_use_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(
                    experiment, tags={"mlflow.experimentKind": "custom_model_development"}
                )
            except MlflowException as exc:  # another process created it first (a server has no lock)
                found = client.get_experiment_by_name(experiment)
                if exc.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
                    raise
                experiment_id = found.experiment_id
    end_dead_runs(client, experiment_id)
    return client, experiment_id


def warm_store(uri: str) -> None:
    """Open an existing store (MLflow keeps it for the process), so a run's first call need not."""
    from mlflow.tracking import MlflowClient

    with contextlib.suppress(Exception):  # only a head start: the run's own calls report errors
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux's /proc), or None where unknown:
    with it a pid names one process, although pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name's ")"


def this_process() -> str:
    """The `descentlab.process` tag of a run this process runs: host, pid, start."""
    return f"{socket.gethostname()} {os.getpid()} {process_start(os.getpid())}"


def process_gone(owner: str) -> bool:
    """Whether the process a `descentlab.process` tag names has died. Only a process on this host
    can be looked up; elsewhere the Optuna sweeper's heartbeat finds dead trials (grace_period)."""
    host, pid, start = owner.split()
    if host != socket.gethostname() or start == "None":  # elsewhere, or no /proc to tell
        return False
    return process_start(int(pid)) != start


def end_run(
    client: MlflowClient, run_id: str, status: str, error: str | None = None, stop_reason: str | None = None
) -> None:
    """End a run: its status first (a run must never stay RUNNING), then why, `stop_reason` last
    (whoever reads a run with its stop_reason tag reads its whole ending)."""
    client.set_terminated(run_id, status)
    if error is not None:
        client.set_tag(run_id, "error", error[:5000])
    if stop_reason is not None:
        client.set_tag(run_id, "stop_reason", stop_reason)


def restart_run(client: MlflowClient, run: Run, tags: dict[str, str]) -> None:
    """An ended run RUNNING again under this process: its process tag first (it is alive), then its
    status, then its interruption's ending (`error`, `stop_reason`) removed, then `tags`."""
    run_id = run.info.run_id
    client.set_tag(run_id, PROCESS_TAG, tags[PROCESS_TAG])
    client.update_run(run_id, status="RUNNING")
    for ending in ("error", "stop_reason"):
        if ending in run.data.tags:
            client.delete_tag(run_id, ending)
    for tag, value in tags.items():
        client.set_tag(run_id, tag, value)


def end_killed(client: MlflowClient, run_id: str, why: str) -> None:
    """End a run whose process died KILLED, saying so (tags error and stop_reason)."""
    ended_by = f"ended by {this_process()} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    end_run(client, run_id, "KILLED", f"{why}; {ended_by}", "process_died")


def end_dead_runs(client: MlflowClient, experiment_id: str) -> None:
    """End KILLED the RUNNING runs whose process is gone (kill -9, a crash, a lost node): a run is
    never left RUNNING by a process that cannot end it any more."""
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    for run in running:
        owner = run.data.tags.get(PROCESS_TAG)
        if owner and process_gone(owner):
            log.warning("MLflow run %s: its process (%s) died; ending it KILLED", run.info.run_id, owner)
            end_killed(client, run.info.run_id, f"its process died ({PROCESS_TAG} {owner})")


class RunWriter:
    """Writes the MLflow runs one training process has open, each under the key its tracker chose.
    Every method takes the run's key and plain data (tuples, dicts, paths) and builds MLflow's
    entities here. A call is made through the writer (`writer(RunWriter.log_text, key, ...)`): a
    failed call is remembered, the run then ends FAILED with that error, and its later calls are
    skipped (their value is None)."""

    def __init__(self, draw_apart: bool = False) -> None:
        self.open: dict[str, tuple[MlflowClient, str, str]] = {}  # key -> client, experiment, run id
        self.failed: dict[str, str] = {}  # key -> the first error, as "Type: message"
        self.names: dict[str, str] = {}  # key -> the run's name (its loss curve's title)
        self.stores: dict[tuple[Any, ...], tuple[MlflowClient, str]] = {}  # where -> client, experiment
        # The sidecar's: while several runs are open (a batch closing), each loss curve is drawn by a
        # process of its own beside the writes, and logged when its run ends.
        self.draw_apart = draw_apart
        self.drawer: Executor | None = None
        self.drawings: dict[str, Future[Path]] = {}  # key -> its loss curve, being drawn
        self.curves: LossCurves | None = None  # the figure this writer redraws for each run's curve

    def __call__(
        self, method: Callable[Concatenate[RunWriter, str, P], R], key: str, *args: P.args, **kwargs: P.kwargs
    ) -> R | None:
        opening, ending = method in (RunWriter.open_run, RunWriter.reopen_run), method == RunWriter.terminate
        if not opening and (key not in self.open or (key in self.failed and not ending)):
            return None  # its run was never created, or a call already failed: that error is reported
        try:
            return method(self, key, *args, **kwargs)
        except Exception as exc:
            self.failed.setdefault(key, f"{type(exc).__name__}: {exc}")
            raise

    def _store(self, uri: str, experiment: str, cwd: str, env: dict[str, str]) -> tuple[MlflowClient, str]:
        """The store as the training process sees it: its working directory (where a new
        experiment's ./mlruns goes) and its MLFLOW_* variables."""
        os.chdir(cwd)
        for name in [n for n in os.environ if n.startswith("MLFLOW_") and n not in env]:
            del os.environ[name]
        os.environ.update(env)
        # Opened once per store: a sweep's runs share it, and the search for dead processes' runs
        # would otherwise read every run the sweep still has RUNNING, for each new run.
        where = (uri, experiment, cwd, tuple(sorted(env.items())))
        if where not in self.stores:
            self.stores[where] = open_experiment(uri, experiment)
        return self.stores[where]

    def open_run(
        self, key: str, where: dict[str, Any], name: str, tags: dict[str, str], params: list[tuple[str, str]],
        config_yaml: str,
    ) -> tuple[str, str]:  # fmt: skip
        """A new run with its params and config; its experiment's id and its id."""
        from mlflow.entities import Param

        client, experiment_id = self._store(**where)
        run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.open[key] = client, experiment_id, run_id
        self.names[key] = name
        logged = [Param(k[:250], v[:MAX_PARAM_LENGTH]) for k, v in params]
        for i in range(0, len(logged), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(run_id, params=logged[i : i + 100])
        client.log_text(run_id, config_yaml, CONFIG_ARTIFACT)
        return experiment_id, run_id

    def reopen_run(
        self, key: str, where: dict[str, Any], run_id: str, tags: dict[str, str]
    ) -> tuple[str, str]:
        """An interrupted run, RUNNING again under this process (its process tag first: it is alive)."""
        client, experiment_id = self._store(**where)
        run = client.get_run(run_id)
        self.open[key] = client, experiment_id, run_id
        self.names[key] = run.info.run_name
        restart_run(client, run, tags)
        return experiment_id, run_id

    def log_metrics(self, key: str, metrics: list[tuple[str, float, int, int]]) -> None:
        """Metrics as (name, value, timestamp ms, step)."""
        from mlflow.entities import Metric

        client, _, run_id = self.open[key]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(run_id, metrics=[Metric(*m) for m in metrics[i : i + 1000]])

    def log_text(self, key: str, text: str, artifact: str) -> None:
        client, _, run_id = self.open[key]
        client.log_text(run_id, text, artifact)

    def set_tag(self, key: str, tag: str, value: str) -> None:
        client, _, run_id = self.open[key]
        client.set_tag(run_id, tag, value)

    def log_artifacts(self, key: str, path: str, artifact_dir: str | None = None) -> None:
        """A file or a folder's files under `artifact_dir`."""
        client, _, run_id = self.open[key]
        log_one = client.log_artifacts if Path(path).is_dir() else client.log_artifact
        log_one(run_id, path, artifact_dir)

    def log_dataset(
        self, key: str, name: str, digest: str, source_type: str, source: str, profile: str
    ) -> None:
        """The run's training data as its MLflow dataset input (the Dataset column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        client, _, run_id = self.open[key]
        dataset = Dataset(name, digest, source_type, source, profile=profile)
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        try:
            client.log_inputs(run_id, inputs)
        except MlflowException:  # another run logged the same dataset at this moment and won the race
            client.log_inputs(run_id, inputs)  # to insert its row (a server: 400); now it is there

    def log_loss_curve(
        self, key: str, history: list[tuple[int, float, float]], best_epoch: int, stop_reason: str, path: str
    ) -> None:
        client, _, run_id = self.open[key]
        title = f"{self.names[key]} ({stop_reason})"
        if self.draw_apart and len(self.open) > 1:
            if self.drawer is None:  # spawned: it imports matplotlib, not this process's MLflow
                self.drawer = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            self.drawings[key] = self.drawer.submit(drawer_curve, history, best_epoch, title, Path(path))
            return
        if self.curves is None:
            self.curves = LossCurves()
        client.log_artifact(run_id, str(loss_curve(history, best_epoch, title, Path(path), self.curves)))

    def log_model(self, key: str, folder: str) -> None:
        """The model directory as the run's `model/` artifact and as an MLflow logged model (the
        Models column and tab; `models:/<id>` and `runs:/<run>/model` both load it)."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        client, experiment_id, run_id = self.open[key]
        client.log_artifacts(run_id, folder, "model")
        # Not named "model": MLflow 3.17 resolves `runs:/<run>/<name>/...` through a logged model of
        # that name on the *default* store, which fails (or creates ./mlflow.db) for any other store.
        logged = client.create_logged_model(experiment_id, name=LOGGED_MODEL, source_run_id=run_id)
        client.log_model_artifacts(logged.model_id, folder)
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])

    def terminate(self, key: str, status: str, error: str | None, stop_reason: str | None) -> None:
        """End the run: FAILED with the first error of its calls, if one failed while it was FINISHING."""
        client, _, run_id = self.open.pop(key)
        self.names.pop(key, None)
        drawing, drawn_error = self.drawings.pop(key, None), None
        if drawing is not None and key not in self.failed:
            try:
                client.log_artifact(run_id, str(drawing.result()))
            except Exception as exc:  # as if drawn in its turn: the run ends FAILED, the error raised
                self.failed[key], drawn_error = f"{type(exc).__name__}: {exc}", exc
        if key in self.failed and status == "FINISHED":
            status, error = "FAILED", self.failed[key]
        end_run(client, run_id, status, error, stop_reason)
        if drawn_error is not None:
            raise drawn_error

    def end_all(self, why: str) -> None:
        """End KILLED every run still open: the training process ended without ending them."""
        for key, (client, _, run_id) in list(self.open.items()):
            with contextlib.suppress(Exception):
                end_killed(client, run_id, why)
            del self.open[key]
        if self.drawer is not None:
            self.drawer.shutdown(cancel_futures=True)


def child_runs(client: MlflowClient, parent_id: str) -> list[Run]:
    """The runs nested directly under `parent_id` (tag mlflow.parentRunId)."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_id}'"
    return list(client.search_runs([experiment_id], query, max_results=10_000))
