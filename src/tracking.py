"""Everything MLflow: one run per training job, ended FINISHED, FAILED or KILLED, never left RUNNING.

A tracker is a loop callback and a context manager. `MlflowTracker` talks to MLflow through an
explicit `MlflowClient` (no fluent active-run stack, so jobs sharing a process never collide) and
buffers per-epoch metrics into `log_batch` calls, since a synchronous `log_metric` costs ≈6 ms.
"""

from __future__ import annotations

import math
import os
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from src.loop import EpochMetrics, FitResult

if TYPE_CHECKING:
    from mlflow.entities import Metric

DEFAULT_URI = "sqlite:///mlflow.db"
EPOCH_METRICS = ("train_loss", "val_loss", "lr", "grad_norm", "param_error", "epoch_time")


class NullTracker:
    """`tracking=none`: records nothing."""

    run_id: str | None = None

    def __init__(self, cfg: DictConfig, tags: dict[str, str] | None = None) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def log_result(self, result: FitResult) -> None:
        pass


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys, e.g. {'optimizer.lr': '0.1'}; Hydra's `_x_` keys dropped."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not (key.startswith("_") and key.endswith("_")) or key == "_target_":
                    walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


class MlflowTracker:
    def __init__(
        self,
        experiment: str,
        cfg: DictConfig,
        uri: str | None = None,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        flush_every: float = 5.0,
    ) -> None:
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
        self.experiment = experiment
        self.cfg = cfg
        self.run_name = run_name
        self.tags = tags or {}
        self.flush_every = flush_every  # seconds between log_batch calls
        self.run_id: str | None = None
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def __enter__(self) -> MlflowTracker:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(self.experiment)
            except MlflowException:  # another process created it first
                experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        try:
            from mlflow.entities import Param

            params = [Param(k, v[:6000]) for k, v in flatten(self.cfg).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        except BaseException:
            self.client.set_terminated(self.run_id, "FAILED")
            raise
        return self

    def _log(self, key: str, value: float | None, step: int) -> None:
        from mlflow.entities import Metric

        if value is not None:
            self._pending.append(Metric(key, value, int(time.time() * 1000), step))

    def _flush(self) -> None:
        assert self.run_id is not None
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=self._pending[i : i + 1000])
        self._pending.clear()
        self._last_flush = time.monotonic()

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        for key in EPOCH_METRICS:
            self._log(key, getattr(metrics, key), metrics.epoch)
        if time.monotonic() - self._last_flush > self.flush_every:
            self._flush()

    def log_result(self, result: FitResult) -> None:
        for key in ("best_val_loss", "best_epoch", "test_loss", "epochs", "wall_time"):
            value = float(getattr(result, key))
            self._log(key, value if math.isfinite(value) else None, result.epochs)
        if result.param_error is not None:
            self._log("best_param_error", result.param_error, result.epochs)
        assert self.run_id is not None
        self.client.set_tag(self.run_id, "stop_reason", result.stop_reason)

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
            self._flush()
        finally:
            if exc_type is not None:
                killed = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
                status = "KILLED" if killed else "FAILED"
                self.client.set_tag(self.run_id, "error", f"{exc_type.__name__}: {exc}"[:5000])
            self.client.set_terminated(self.run_id, status)
