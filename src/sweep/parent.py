"""A --multirun's parent MLflow run: created before the first job, passed to every job (their runs
nest under it), given the sweep's comparison at the end and ended, whatever happens.

This module is the one code that writes the parent run. `MultirunParent`, a Hydra callback
(conf/config.yaml), creates it, records the comparison and ends it (through
`src.tracking.store.end_run`); a sweeper in the same --multirun finds it with `sweep_parent` and
hands what it wants recorded to `record_study_name` and `record_study`, never writing to it itself.
"""

from __future__ import annotations

import atexit
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from src import signals
from src.compare import overlay, sweep_runs, table
from src.errors import CallbackConfigError, ConfigError
from src.jobs import PARENT_RUN_ENV, SWEPT_ENV, launch_dir, pass_to_jobs, passed_to_jobs
from src.redaction import redact
from src.tracking.names import distinct_names, source_tags, sweep_name, swept_keys
from src.tracking.store import MAX_PARAM_LENGTH, PROCESS_TAG, SWEEP_TAG, child_runs, end_run, this_process
from src.tracking.tracker import uses_mlflow
from src.tracking.uris import SQLITE_WRITERS, client_and_experiment, compare_link, tracking_uri, ui_hint

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

STUDY_TAG = "optuna.study"  # on the parent run of an Optuna sweep: its study's name


class MultirunParent(HydraCallback):
    """The one owner of a --multirun's parent MLflow run: it creates the run before the first job,
    passes its id to every job (their runs nest under it, tag mlflow.parentRunId), and ends it.

    At the end the parent gets the best child's results, the comparison table and the overlaid
    curves, and the sweep says where all of it is. If the sweep dies, the parent is ended at exit
    rather than left RUNNING: KILLED when a signal stopped it, else FAILED. A sweeper hands what it
    wants recorded there to this module's functions (the Optuna sweeper: its study), never creates,
    writes or ends the run itself.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.errors import HydraException

        from src.sweep.trial import check_sweep

        try:
            check_sweep(config)  # a bad sweep config stops here, before its parent run exists
        except HydraException as exc:  # Hydra would only warn about a callback's error
            raise CallbackConfigError(str(exc)) from exc
        if not uses_mlflow(config):
            return
        try:
            self.uri = tracking_uri(config.tracking.get("uri"))
            self.client, self.experiment_id = client_and_experiment(self.uri, config.tracking.experiment)
        except ConfigError:  # Hydra would only warn; the first job says it, in one line, and exits 2
            self.client = None
            return
        self._warn_many_writers(int(config.hydra.sweeper.get("n_jobs") or 1))
        overrides = redact(" ".join(config.hydra.overrides.task))
        tags = {SWEEP_TAG: str(config.hydra.sweep.dir), PROCESS_TAG: this_process()}
        tags |= {"overrides": overrides} if overrides else {}  # no empty tag
        tags |= source_tags()
        name = sweep_name([redact(o) for o in config.hydra.overrides.task])  # the command: its description
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        atexit.register(lambda: self._end("KILLED" if signals.pending() else "FAILED"))
        params = config.hydra.sweeper.get("params") or {}
        sweep = [*config.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())]
        pass_to_jobs(config, {PARENT_RUN_ENV: self.run_id, SWEPT_ENV: ",".join(swept_keys(sweep))})

    def _warn_many_writers(self, writers: int) -> None:
        if writers > SQLITE_WRITERS and self.uri.startswith("sqlite"):
            log.warning(
                "%d parallel jobs will write to one sqlite MLflow store; beyond %d writers prefer "
                "`mlflow server` (tracking.uri=http://...) or a PostgreSQL store",
                writers,
                SQLITE_WRITERS,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.client is None or self.run_id is None:
            return
        sweep_dir = launch_dir() / str(config.hydra.sweep.dir)  # as typed: relative to the launch dir
        metric, sort_by = config.tracking.plot_metric, config.tracking.sort_by
        runs = self._unique_names(sweep_runs(self.client, self.run_id))
        if runs:
            self._log_best(child_runs(self.client, self.run_id))
            print(table(runs, sort_by))
            png = overlay(self.client, runs, sweep_dir / "compare.png", metric, sort_by)
            self.client.log_artifact(self.run_id, str(png))
        print(f"sweep dir:   {sweep_dir}")
        if runs:
            print(f"compare.png: {sweep_dir / 'compare.png'}")
        print(f"parent run:  {self.run_id}")
        print(f"MLflow UI:   {ui_hint(self.uri, self.experiment_id)}")
        if runs:
            ids = [r.info.run_id for r in runs]
            print(f"compare:     {compare_link(self.uri, self.experiment_id, ids)}")
        self._end("FINISHED")

    def _unique_names(self, runs: list[Run]) -> list[Run]:
        """Each run named by every value that differs between the sweep's runs (`distinct_names`);
        runs that still read alike are numbered, in start order."""
        assert self.client is not None
        # A run that failed before logging its params keeps its name.
        named = sorted((r for r in runs if r.data.params), key=lambda r: r.info.start_time)
        trials = [r.data.tags.get("optuna.trial") for r in named]
        names = distinct_names([r.data.params for r in named], [int(t) if t else None for t in trials])
        for name in {n for n in names if names.count(n) > 1}:
            for i, at in enumerate([j for j, n in enumerate(names) if n == name], start=1):
                names[at] = f"{name} ({i})"
        renamed = [(r, n) for r, n in zip(named, names, strict=True) if n != r.info.run_name]
        for run, name in renamed:
            self.client.update_run(run.info.run_id, name=name)
        return [self.client.get_run(r.info.run_id) for r in runs] if renamed else runs

    def _log_best(self, children: list[Run]) -> None:
        """The best child's best_val_loss and test_loss on the parent (so its row is not blank),
        and its id as tag best_run_id."""
        from mlflow.entities import Metric, RunTag

        assert self.client is not None and self.run_id is not None
        scored = [c for c in children if math.isfinite(c.data.metrics.get("best_val_loss", math.nan))]
        if not scored:
            return
        best = min(scored, key=lambda c: c.data.metrics["best_val_loss"])
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, best.data.metrics.get(k, math.nan), now, 0)
            for k in ("best_val_loss", "test_loss", "val_loss_ratio", "test_loss_ratio")
        ]
        self.client.log_batch(
            self.run_id,
            metrics=[m for m in metrics if math.isfinite(m.value)],
            tags=[RunTag("best_run_id", best.info.run_id), RunTag("best_run", best.info.run_name)],
        )

    def _end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            end_run(self.client, self.run_id, status)
            self.run_id = None


def sweep_parent(config: DictConfig) -> str | None:
    """The id of the sweep's parent run, as `MultirunParent` passed it to the jobs, for a sweeper of
    the same --multirun; None without one (tracking=none, a store the callback could not open, an
    app without the callback)."""
    return passed_to_jobs(config).get(PARENT_RUN_ENV) if uses_mlflow(config) else None


def record_study_name(client: MlflowClient, run_id: str, study_name: str) -> None:
    """The parent of an Optuna sweep says its study while the sweep runs (tag optuna.study)."""
    client.set_tag(run_id, STUDY_TAG, study_name)


@dataclass(frozen=True)
class BestTrial:
    """A single-objective study's best COMPLETE trial."""

    number: int
    value: float
    params: Mapping[str, Any]


def record_study(
    client: MlflowClient,
    run_id: str,
    *,
    settings: Mapping[str, str],
    counts: Mapping[str, int],
    best: BestTrial | None,
    pareto_trials: int | None,
    files: Sequence[Path],
) -> None:
    """A finished study on its sweep's parent run: its settings (params, where the run has none of
    that name yet), its finished trials by state (metrics `trials_<state>`), the best trial (metric
    best_value, tag best_trial, params `best.<name>`) or the size of the Pareto front (metric
    pareto_trials), and its files (plots, results) as artifacts under `optuna/`."""
    from mlflow.entities import Metric, Param, RunTag

    params = dict(settings)
    metrics: dict[str, float] = {f"trials_{state}": n for state, n in counts.items()}
    tags = {}
    if best is not None:
        metrics["best_value"] = best.value
        tags["best_trial"] = str(best.number)
        params.update({f"best.{k}": str(v) for k, v in best.params.items()})
    if pareto_trials is not None:
        metrics["pareto_trials"] = pareto_trials
    existing = client.get_run(run_id).data.params
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        params=[Param(k, v[:MAX_PARAM_LENGTH]) for k, v in params.items() if k not in existing],
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    for path in files:
        client.log_artifact(run_id, str(path), "optuna")
