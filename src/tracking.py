"""Everything MLflow: one run per training job, one parent run per --multirun.

A tracker is a loop callback and a context manager. `MlflowTracker` talks to MLflow through an
explicit `MlflowClient` (no fluent active-run stack, so jobs sharing a process never collide) and
buffers per-epoch metrics into `log_batch` calls, since a synchronous `log_metric` costs ≈6 ms.
Whatever happens, the run ends FINISHED, FAILED (error tagged) or KILLED; it is never left RUNNING.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import math
import os
import subprocess
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from src import signals
from src.loop import EpochMetrics, FitResult

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from src.inference import Estimates

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_RUN_ENV = "DESCENTLAB_PARENT_RUN_ID"  # set for a --multirun's jobs: their runs nest under it
SQLITE_WRITERS = 6  # concurrent writers one sqlite store was tested with (tests/test_parallel.py)
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MODEL_ARTIFACT = "model/model.pt"
CONFIG_ARTIFACT = "config.yaml"


log = logging.getLogger(__name__)
# A new sqlite store announces its schema migration on stderr; that is noise, not news, for our users.
for _noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def tracking_uri(uri: str | None = None) -> str:
    """The store: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db. A relative sqlite path
    means the directory the command was launched from, also when Hydra runs the job elsewhere."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).is_absolute() and HydraConfig.initialized():
        uri = f"sqlite:///{Path(HydraConfig.get().runtime.cwd) / path}"
    return uri


def first_use_lock(uri: str) -> AbstractContextManager[object]:
    """For a sqlite store, a file lock around its first use: processes that open a new store at the
    same moment would otherwise race in MLflow's schema migration ("table ... already exists")."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(uri.removeprefix("sqlite:///").split("?")[0] + ".lock")


def client_and_experiment(uri: str | None, experiment: str) -> tuple[MlflowClient, str]:
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(uri)
    with first_use_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    return client, experiment_id


class NullTracker:
    """`tracking=none`: records nothing."""

    run_id: str | None = None

    def __init__(self, cfg: DictConfig, **ignored: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def log_result(
        self, result: FitResult, model: torch.nn.Module, estimates: Estimates | None = None
    ) -> None:
        pass


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys, e.g. {'optimizer.lr': '0.1'}; Hydra's `_x_` flags dropped."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" or not (key.startswith("_") and key.endswith("_")):
                    walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


def git_commit() -> str | None:
    try:
        repo = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def hydra_context() -> tuple[dict[str, str], list[str], Path | None]:
    """The group choices, the command-line overrides and the output dir of the current Hydra job."""
    if not HydraConfig.initialized():
        return {}, [], None
    hydra = HydraConfig.get()
    choices = {g: str(c) for g, c in hydra.runtime.choices.items() if not g.startswith("hydra") and c}
    return choices, list(hydra.overrides.task), Path(hydra.runtime.output_dir)


def run_name(cfg: DictConfig, choices: dict[str, str]) -> str:
    def short(group: str) -> str:
        target = str(cfg[group].get("_target_", group))
        return choices.get(group, target.rsplit(".", 1)[-1].lower())

    return f"{short('optimizer')}-{short('data')}-lr{cfg.optimizer.lr:g}"


def loss_curve(history: list[EpochMetrics], best_epoch: int, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m.epoch for m in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m.train_loss for m in history], label="train_loss")
    ax.plot(epochs, [m.val_loss for m in history], label="val_loss")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class MlflowTracker:
    """Metrics are buffered and written at each snapshot and at the end (`flush`), so MLflow's
    history always matches what a resume continues from: a resumed run never logs an epoch twice."""

    def __init__(
        self,
        experiment: str,
        cfg: DictConfig,
        uri: str | None = None,
        tags: dict[str, str] | None = None,
        resume_run_id: str | None = None,
        snapshot_path: Path | None = None,
    ) -> None:
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.cfg = cfg
        self.extra_tags = tags or {}
        self.resume_run_id = resume_run_id  # continue this run (same id, later steps)
        self.snapshot_path = snapshot_path  # logged as an artifact when the run ends, if written
        self.run_id: str | None = None
        self._pending: list[Metric] = []

    def __enter__(self) -> MlflowTracker:
        from mlflow.entities import Param

        choices, overrides, self.output_dir = hydra_context()
        self.client, experiment_id = client_and_experiment(self.uri, self.experiment)
        if self.resume_run_id is not None:
            self.run_id = self.resume_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            if "error" in self.client.get_run(self.run_id).data.tags:  # the interruption's
                self.client.delete_tag(self.run_id, "error")
            for key, value in self.extra_tags.items():
                self.client.set_tag(self.run_id, key, value)
            return self
        tags = {f"choice.{group}": choice for group, choice in choices.items()}
        tags["overrides"] = " ".join(overrides)
        if commit := git_commit():
            tags["mlflow.source.git.commit"] = commit
        if parent := os.environ.get(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = parent
        tags.update(self.extra_tags)
        run = self.client.create_run(experiment_id, run_name=run_name(self.cfg, choices), tags=tags)
        self.run_id = run.info.run_id
        try:
            params = [Param(k[:250], v[:MAX_PARAM_LENGTH]) for k, v in flatten(self.cfg).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
            self.client.log_text(self.run_id, OmegaConf.to_yaml(self.cfg, resolve=True), CONFIG_ARTIFACT)
        except BaseException:
            self.client.set_terminated(self.run_id, "FAILED")
            raise
        return self

    def _log(self, key: str, value: float | None, step: int) -> None:
        from mlflow.entities import Metric

        if value is not None and math.isfinite(value):
            self._pending.append(Metric(key, value, int(time.time() * 1000), step))

    def flush(self) -> None:
        assert self.run_id is not None
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=self._pending[i : i + 1000])
        self._pending.clear()

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        for key, value in dataclasses.asdict(metrics).items():
            if key != "epoch":
                self._log(key, value, metrics.epoch)

    def log_result(
        self, result: FitResult, model: torch.nn.Module, estimates: Estimates | None = None
    ) -> None:
        """The run's outcome; with `estimates`, the table as `estimates.csv`, the standardization
        that maps it to the data's units as `standardization.csv`, and the certificate as metrics."""
        assert self.run_id is not None
        for key in ("best_val_loss", "best_epoch", "test_loss", "epochs", "wall_time"):
            self._log(
                key, float(getattr(result, key)), result.epochs
            )  # test_loss nan (no test split): skipped
        if result.param_error is not None:
            self._log("best_param_error", result.param_error, result.epochs)
        self._log("reference_loss", result.reference_loss, result.epochs)  # skipped when None
        if estimates is not None:
            from src.inference import ARTIFACT, to_csv

            for key, value in estimates.certificate.items():
                self._log(key, value, result.epochs)
            self.client.log_text(self.run_id, to_csv(estimates.table), ARTIFACT)
            if estimates.standardization is not None:
                self.client.log_text(self.run_id, to_csv(estimates.standardization), "standardization.csv")
            self.client.set_tag(self.run_id, "converged", str(estimates.converged).lower())
        self.flush()
        self.client.set_tag(self.run_id, "stop_reason", result.stop_reason)
        with tempfile.TemporaryDirectory() as tmp:
            out = self.output_dir or Path(tmp)
            title = f"{self.client.get_run(self.run_id).info.run_name} ({result.stop_reason})"
            png = loss_curve(result.history, result.best_epoch, title, out / "loss_curve.png")
            self.client.log_artifact(self.run_id, str(png))
            checkpoint = out / "model.pt"
            torch.save(
                {
                    "state_dict": model.state_dict(),
                    "model": OmegaConf.to_yaml(self.cfg.model, resolve=True),
                    "in_features": int(next(model.parameters()).shape[-1]),
                },
                checkpoint,
            )
            self.client.log_artifact(self.run_id, str(checkpoint), "model")
        if self.output_dir is not None and (self.output_dir / ".hydra").is_dir():
            self.client.log_artifacts(self.run_id, str(self.output_dir / ".hydra"), ".hydra")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.run_id is None:
            return
        status = "FINISHED"
        try:
            if self._pending:
                self.flush()
            if self.snapshot_path is not None and self.snapshot_path.is_file():
                self.client.log_artifact(self.run_id, str(self.snapshot_path), "snapshot")
        finally:
            if exc_type is not None:
                killed = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
                status = "KILLED" if killed else "FAILED"
            self.client.set_terminated(self.run_id, status)  # first: a run must never stay RUNNING
            if exc_type is not None:
                self.client.set_tag(self.run_id, "error", f"{exc_type.__name__}: {exc}"[:5000])
            if isinstance(exc, signals.Stopped):  # a signal: say which (interrupted, preempted, ...)
                self.client.set_tag(self.run_id, "stop_reason", exc.reason)


class MultirunParent(HydraCallback):
    """One parent MLflow run per --multirun; each job's run nests under it (tag mlflow.parentRunId).

    At the end the parent gets the comparison table and the overlaid val-loss curves of its children.
    If the sweep dies, the parent is ended at exit rather than left RUNNING: KILLED when a signal
    stopped it, else FAILED.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.errors import HydraException

        from src.config import CallbackConfigError
        from src.hpo import check_sweep

        try:
            check_sweep(config)  # a bad sweep config stops here, before its parent run exists
        except HydraException as exc:
            raise CallbackConfigError(str(exc)) from exc
        tracking = config.get("tracking")
        if tracking is None or not str(tracking.get("_target_", "")).endswith("MlflowTracker"):
            return
        self.client, experiment_id = client_and_experiment(tracking.get("uri"), tracking.experiment)
        writers = int(config.hydra.sweeper.get("n_jobs") or 1)
        if writers > SQLITE_WRITERS and tracking_uri(tracking.get("uri")).startswith("sqlite"):
            log.warning(
                "%d parallel jobs will write to one sqlite MLflow store; beyond %d writers prefer "
                "`mlflow server` (tracking.uri=http://...) or a PostgreSQL store",
                writers,
                SQLITE_WRITERS,
            )
        overrides = " ".join(config.hydra.overrides.task)
        tags = {"descentlab.sweep_dir": str(config.hydra.sweep.dir), "overrides": overrides}
        if commit := git_commit():
            tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(experiment_id, run_name=f"sweep {overrides}"[:250], tags=tags)
        self.run_id = run.info.run_id
        os.environ[PARENT_RUN_ENV] = self.run_id
        atexit.register(lambda: self._end("KILLED" if signals.pending() else "FAILED"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.client is None or self.run_id is None:
            return
        from src import compare

        children = compare.child_runs(self.client, self.run_id)
        if children:
            print(compare.table(children))
            png = compare.overlay(self.client, children, Path(config.hydra.sweep.dir) / "compare.png")
            self.client.log_artifact(self.run_id, str(png))
        self._end("FINISHED")

    def _end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            os.environ.pop(PARENT_RUN_ENV, None)
            self.run_id = None
