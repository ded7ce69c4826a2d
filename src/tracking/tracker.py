"""Everything MLflow: one run per training job, one parent run per --multirun.

A tracker is a loop callback and a context manager. `MlflowTracker` talks to MLflow through an
explicit `MlflowClient` (no fluent active-run stack, so jobs sharing a process never collide) and
buffers per-epoch metrics into `log_batch` calls, since a synchronous `log_metric` costs ≈6 ms.
Whatever happens, the run ends FINISHED, FAILED (error tagged) or KILLED; it is never left RUNNING.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src import signals
from src.data import Data
from src.jobs import PARENT_RUN_ENV, SWEPT_ENV, hydra_context, job_env, launch_dir
from src.loop import EpochMetrics, FitResult
from src.redaction import redact, redact_tree
from src.tracking import logged_model as mlflow_model
from src.tracking.names import GROUPS, choice, own_keys, params, run_name, source_tags
from src.tracking.sidecar import Calls, InProcess, Sidecar, SidecarError
from src.tracking.store import PROCESS_TAG, RunWriter, end_run, quiet_migrations, this_process
from src.tracking.uris import checked_store, tracking_uri, ui_hint

if TYPE_CHECKING:
    from src.estimation.inference import Estimates

MODEL_ARTIFACT = "model/model.pt"
# `tracking` keys that only a --multirun's comparison reads (src/sweep/parent.py), no tracker.
COMPARISON_KEYS = ("plot_metric", "sort_by")
SCALE_FREE = ("objective_digits", "theta_digits")  # per-epoch metrics MLflow's charts read without exponent

P = ParamSpec("P")

log = logging.getLogger(__name__)
quiet_migrations()  # for the stores this process opens itself (a sweep's parent run, the plugin)


def uses_mlflow(config: DictConfig) -> bool:
    """Whether the config's `tracking` is an MlflowTracker (or a subclass), not `tracking=none`."""
    from hydra.utils import get_class

    node = config.get("tracking")
    return node is not None and "_target_" in node and issubclass(get_class(node._target_), MlflowTracker)


def make_tracker(cfg: DictConfig, **args: Any) -> MlflowTracker | NullTracker:
    """The run's tracker: `cfg.tracking`'s target, given the node's settings (less the keys only a
    sweep's comparison reads, COMPARISON_KEYS), the run's config and `args`."""
    from hydra.utils import get_class

    node = cfg.tracking
    settings = {str(k): node[k] for k in node if k != "_target_" and k not in COMPARISON_KEYS}
    tracker: MlflowTracker | NullTracker = get_class(node._target_)(cfg=cfg, **settings, **args)
    return tracker


class NullTracker:
    """`tracking=none`: records nothing."""

    run_id: str | None = None
    where: str | None = None

    def __init__(self, cfg: DictConfig, **ignored: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def ready(self) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def log_result(self, result: FitResult, model: torch.nn.Module) -> None:
        pass

    def log_estimates(self, estimates: Estimates) -> None:
        pass

    def log_dataset(self, data: Data) -> None:
        pass


class MlflowTracker:
    """Metrics are buffered and written at each snapshot and at the end (`flush`), so MLflow's
    history always matches what a resume continues from: a resumed run never logs an epoch twice.

    MLflow itself runs in a sidecar process (src/tracking/sidecar.py): this tracker says what is logged
    and sends it there in order, without waiting. Only the run's id waits, when first asked for (the
    first snapshot, usually long after MLflow has created the run); leaving the run waits until every
    write is done, so when a run returns, its record is complete and ended, and an error of any write
    is raised then. With `sidecar=False` the same writes run in this process, each when it is sent."""

    def __init__(
        self,
        experiment: str,
        cfg: DictConfig,
        uri: str | None = None,
        tags: dict[str, str] | None = None,
        resume_run_id: str | None = None,
        snapshot_path: Path | None = None,
        sidecar: bool = True,
    ) -> None:
        self.given_uri = uri
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.cfg = cfg
        self.extra_tags = tags or {}
        self.resume_run_id = resume_run_id  # continue this run (same id, later steps)
        self.snapshot_path = snapshot_path  # logged as an artifact when the run ends, if written
        self.in_sidecar = sidecar  # else MLflow works in this process
        self.key = uuid.uuid4().hex  # the run's name in the sidecar, before MLflow gives it an id
        self._opened: Future[tuple[str, str]] | None = None  # its experiment's id and its id
        self.name: str | None = None
        self._pending: list[tuple[str, float, int, int]] = []

    @property
    def run_id(self) -> str | None:
        return None if self._opened is None else self._opened.result()[1]

    @property
    def where(self) -> str | None:
        """How to see the run in the MLflow UI."""
        if self._opened is None:
            return None
        experiment_id, run_id = self._opened.result()
        return ui_hint(self.uri, experiment_id, run_id)

    def _send(
        self, method: Callable[Concatenate[RunWriter, str, P], Any], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """`method` of the run's writer, for this run, in order, without waiting."""
        self.calls.send(method, self.key, *args, **kwargs)

    def _copy(self, path: Path) -> str:
        """A copy that stays as it is until the sidecar has uploaded it (the original may change)."""
        copy = self.scratch / f"{len(list(self.scratch.iterdir()))}" / path.name
        copy.parent.mkdir()
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
        return str(copy)

    def __enter__(self) -> MlflowTracker:
        choices, overrides, self.output_dir = hydra_context()
        checked_store(self.uri, self.given_uri, self.experiment)  # a bad store or login fails before training
        self.calls: Calls = Sidecar.get() if self.in_sidecar else InProcess()
        self.scratch = Path(tempfile.mkdtemp(prefix="descentlab-mlflow-"))  # removed at the end
        where = {"uri": self.uri, "experiment": self.experiment, "cwd": os.getcwd(), "env": mlflow_env()}
        if self.resume_run_id is not None:
            tags = {PROCESS_TAG: this_process(), **self.extra_tags}
            self._opened = self.calls.ask(RunWriter.reopen_run, self.key, where, self.resume_run_id, tags)
            return self
        tags = {f"choice.{group}": c for group, c in choices.items()}
        if overrides:  # a run of the defaults has none: no empty tag
            tags["overrides"] = redact(" ".join(overrides))
        tags[PROCESS_TAG] = this_process()
        tags |= source_tags()
        if parent := job_env(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = parent
        tags.update(self.extra_tags)
        self.name = self._name(choices, overrides)
        swept = [k for k in (job_env(SWEPT_ENV) or "").split(",") if k]
        logged = [(k, redact(v)) for k, v in params(self.cfg, choices, swept).items()]
        config_yaml = redact(OmegaConf.to_yaml(self.cfg, resolve=True))
        self._opened = self.calls.ask(
            RunWriter.open_run, self.key, where, self.name, tags, logged, config_yaml
        )
        return self

    def _name(self, choices: dict[str, str], overrides: list[str]) -> str:
        """Named by the keys its sweep varies (and its Optuna trial), else by its own overrides."""
        trial = self.extra_tags.get("optuna.trial")
        keys = [k for k in (job_env(SWEPT_ENV) or "").split(",") if k]
        if not keys and trial is None:
            keys = own_keys(overrides)
        if trial is None and "optimizer.lr" not in keys:  # the step size a choice of optimizer brings
            keys += ["optimizer.lr"] if "optimizer" in keys or not job_env(SWEPT_ENV) else []
        values = {
            k: choice(self.cfg, choices, k) if k in GROUPS else OmegaConf.select(self.cfg, k, default=None)
            for k in keys
        }
        return run_name(choice(self.cfg, choices, "optimizer"), values, None if trial is None else int(trial))

    def log_dataset(self, data: Data) -> None:
        """The data as the run's MLflow dataset input: name, digest, source, rows per split."""
        digest = hashlib.sha256()
        for split in (data.train, data.val, data.test):
            digest.update(split.X.cpu().numpy().tobytes())
            digest.update(split.y.cpu().numpy().tobytes())
        node = self.cfg.data
        if node.get("path"):  # a user's CSV or Parquet file
            path = Path(str(node.path)).expanduser()
            path = path if path.is_absolute() or not HydraConfig.initialized() else launch_dir() / path
            name, source_type, source = path.name, "local", json.dumps({"uri": str(path.resolve())})
        else:
            generator = str(node.get("_target_", "")).rsplit(".", 1)[-1]
            name = str(node.get("name") or generator.removeprefix("simulate_"))
            origin = f"statsmodels.datasets.{name}" if node.get("name") else f"src.data.{generator}"
            source_type, source = "code", json.dumps({"tags": {"mlflow.source.name": origin}})
        profile = {
            "train_rows": len(data.train),
            "val_rows": len(data.val),
            "test_rows": len(data.test),
            "features": data.n_features,
        }
        self._send(
            RunWriter.log_dataset, name, digest.hexdigest()[:8], source_type, source, json.dumps(profile)
        )

    def _log(self, key: str, value: float | None, step: int) -> None:
        if value is not None and math.isfinite(value):
            self._pending.append((key, value, int(time.time() * 1000), step))

    def flush(self) -> None:
        self._send(RunWriter.log_metrics, self._pending)
        self._pending = []

    def ready(self) -> None:
        """Wait until MLflow has done what was sent before the first step (the run, its dataset):
        its start-up then counts as setup_time and takes no CPU from the steps wall_time counts."""
        self.calls.barrier()
        self._opened.result()  # type: ignore[union-attr]  # sent in __enter__

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        # The scale-free forms first: MLflow's compare page opens its plot on the first metric logged.
        if metrics.opt_gap is None:  # no θ* to measure digits against: the loss's own decade
            self._log("log10_val_loss", log10(metrics.val_loss), metrics.epoch)
        values = dataclasses.asdict(metrics)
        for key in sorted(values, key=lambda k: k not in SCALE_FREE):
            if key != "epoch":
                self._log(key, values[key], metrics.epoch)

    def log_estimates(self, estimates: Estimates) -> None:
        """The table of estimates as `estimates.csv`, the standardization that maps it to the data's
        units as `standardization.csv`, and the convergence certificate as metrics."""
        from src.estimation import report
        from src.estimation.inference import to_csv

        for key, value in estimates.certificate.items():
            self._log(key, value, 0)
        self.flush()
        for name, contents in report.files(estimates).items():  # estimates.csv, .txt and .tex
            self._send(RunWriter.log_text, contents, name)
        if estimates.standardization is not None:
            self._send(RunWriter.log_text, to_csv(estimates.standardization), "standardization.csv")
        self._send(RunWriter.set_tag, "converged", str(estimates.converged).lower())

    def log_result(self, result: FitResult, model: torch.nn.Module) -> None:
        """The run's outcome: its figures, stop reason, loss curve and model."""
        # Run-level results at step 0: one point each, which MLflow's charts draw as bars.
        for key in ("best_val_loss", "best_epoch", "test_loss", "epochs", "wall_time", "setup_time"):
            self._log(key, float(getattr(result, key)), 0)  # test_loss nan (no test split): skipped
        if result.param_error is not None:
            self._log("best_param_error", result.param_error, 0)
        self._log("reference_loss", result.reference_loss, 0)  # skipped when None
        for key, value in comparison_metrics(result).items():
            self._log(key, value, 0)
        self.flush()
        self._send(RunWriter.set_tag, "stop_reason", result.stop_reason)
        out = self.output_dir or self.scratch
        history = [(m.epoch, m.train_loss, m.val_loss) for m in result.history]
        png = str(out / "loss_curve.png")  # drawn there by the sidecar (matplotlib is its import)
        self._send(RunWriter.log_loss_curve, history, result.best_epoch, result.stop_reason, png)
        checkpoint = {
            "state_dict": model.state_dict(),
            "model": OmegaConf.to_yaml(self.cfg.model, resolve=True),
            "in_features": int(next(model.parameters()).shape[-1]),
        }
        torch.save(checkpoint, out / "model.pt")  # the run dir's copy, for warm_start=<run dir>
        self._send(RunWriter.log_model, str(mlflow_model.save(checkpoint, self.scratch / "model")))
        if self.output_dir is not None and (self.output_dir / ".hydra").is_dir():
            copy = self._copy(self.output_dir / ".hydra")
            redact_tree(Path(copy))  # Hydra saved what was typed, passwords too
            self._send(RunWriter.log_artifacts, copy, ".hydra")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is None:
            return
        status, error = "FINISHED", None
        try:
            if self._pending:
                self.flush()
            if self.snapshot_path is not None and self.snapshot_path.is_file():
                self._send(RunWriter.log_artifacts, self._copy(self.snapshot_path), "snapshot")
        finally:
            if exc_type is not None:
                killed = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
                status, error = "KILLED" if killed else "FAILED", f"{exc_type.__name__}: {exc}"
            stop_reason = exc.reason if isinstance(exc, signals.Stopped) else None  # which signal
            self._end(status, error, stop_reason, raising=exc_type is None)

    def _end(self, status: str, error: str | None, stop_reason: str | None, raising: bool) -> None:
        """End the run in MLflow and wait until everything sent is written. An error of an earlier
        write is raised here (the run then ends FAILED), unless the run already failed of its own."""
        try:
            self._send(RunWriter.terminate, status, error, stop_reason)
            self.calls.barrier()
            self._opened.result()  # type: ignore[union-attr]  # the run could not be created
        except SidecarError as died:
            self._end_here(status, error or f"SidecarError: {died}", stop_reason)
            raise
        except Exception:
            if raising:
                raise
            log.warning("MLflow run %s: a write failed", self.key, exc_info=True)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _end_here(self, status: str, error: str, stop_reason: str | None) -> None:
        """The sidecar died: end the run from this process (an error's cost only), never RUNNING.
        Its id may not have come back: then it is this process's RUNNING run of this name."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        ids = {self.resume_run_id} - {None}
        if not ids and (found := client.get_experiment_by_name(self.experiment)) is not None:
            query = f"tags.`{PROCESS_TAG}` = '{this_process()}' and attributes.status = 'RUNNING'"
            runs = client.search_runs([found.experiment_id], query)
            ids = {r.info.run_id for r in runs if r.info.run_name == self.name}
        status = "FAILED" if status == "FINISHED" else status
        for run_id in ids:
            end_run(client, str(run_id), status, error, stop_reason)


def log10(value: float) -> float | None:
    return math.log10(value) if value > 0 else None


def comparison_metrics(result: FitResult) -> dict[str, float | None]:
    """A run's losses as numbers MLflow's table and bar charts show without an exponent: each loss
    over the same loss at the exact minimizer θ* (`val_loss_ratio` 1.0003: 0.03% above what θ* gets
    on that split), or, without θ*, the loss's log10 (−5.99)."""
    if result.reference_val_loss is None:
        return {"log10_best_val_loss": log10(result.best_val_loss)}
    test = result.reference_test_loss
    return {
        "val_loss_ratio": ratio(result.best_val_loss, result.reference_val_loss),
        "test_loss_ratio": None if test is None else ratio(result.test_loss, test),
    }


def ratio(loss: float, at_reference: float) -> float | None:
    return loss / at_reference if at_reference > 0 and math.isfinite(loss) else None


def mlflow_env() -> dict[str, str]:
    """This process's MLFLOW_* variables, which MLflow reads (the sidecar may have started earlier)."""
    return {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")}
