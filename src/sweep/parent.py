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
from src.compare import overlay, paired_comparison, paired_frame, paired_lines, sweep_runs, table
from src.errors import CallbackConfigError, CallbackError, ConfigError
from src.jobs import PARENT_RUN_ENV, SWEPT_ENV, launch_dir, pass_to_jobs, passed_to_jobs
from src.loop.checkpoint import AUTO
from src.redaction import redact
from src.sweep import groups
from src.tracking.names import distinct_names, short_number, source_tags, sweep_name, swept_keys
from src.tracking.store import (
    MAX_PARAM_LENGTH,
    PROCESS_TAG,
    REPEATS_TAG,
    STUDY_TAG,
    SWEEP_TAG,
    child_runs,
    end_run,
    restart_run,
    this_process,
)
from src.tracking.tracker import uses_mlflow
from src.tracking.uris import SQLITE_WRITERS, client_and_experiment, compare_link, tracking_uri, ui_hint

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


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
            runs = check_sweep(config)  # a bad sweep config stops here, before its parent run exists
        except HydraException as exc:  # Hydra would only warn about a callback's error
            raise CallbackConfigError(str(exc)) from exc
        optuna = "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower()
        if config.get("resume") == AUTO and optuna:  # its jobs' run dirs are not its trials'
            raise CallbackConfigError(
                "resume=auto continues a multirun's jobs from their run dirs, not an Optuna sweep's trials:"
                " run the same command without it; the study's storage keeps its finished trials and the"
                " sweep runs the rest of hydra.sweeper.n_trials"
            )
        if not runs or not uses_mlflow(config):  # e.g. a full study: the sweeper says so, runs nothing
            return
        try:
            self._start(config)
        except ConfigError as exc:
            raise CallbackConfigError(str(exc)) from exc
        except Exception as exc:  # Hydra would only warn, and the sweep would run without its parent
            raise CallbackError() from exc

    def _start(self, config: DictConfig) -> None:
        """The parent run (a new one, or with resume=auto the interrupted sweep's), its id passed to
        the jobs."""
        self.uri = tracking_uri(config.tracking.get("uri"))
        self.client, self.experiment_id = client_and_experiment(self.uri, config.tracking.experiment)
        self._warn_many_writers(int(config.hydra.sweeper.get("n_jobs") or 1))
        overrides = redact(" ".join(config.hydra.overrides.task))
        sweep_dir = (launch_dir() / str(config.hydra.sweep.dir)).resolve()  # typed relative to launch dir
        tags = {SWEEP_TAG: str(sweep_dir), PROCESS_TAG: this_process()}  # resume=auto finds it by this
        tags |= {"overrides": overrides} if overrides else {}  # no empty tag
        tags |= source_tags()
        name = sweep_name([redact(o) for o in config.hydra.overrides.task])  # the command: its description
        self.run_id = self._reopened(config, tags)
        if self.run_id is None:
            self.run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        atexit.register(lambda: self._end("KILLED" if signals.pending() else "FAILED"))
        params = config.hydra.sweeper.get("params") or {}
        sweep = [*config.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())]
        pass_to_jobs(config, {PARENT_RUN_ENV: self.run_id, SWEPT_ENV: ",".join(swept_keys(sweep))})

    def _reopened(self, config: DictConfig, tags: dict[str, str]) -> str | None:
        """`resume=auto`: the parent run of this sweep dir's earlier, interrupted multirun, RUNNING again
        under this process (its jobs resume into their own runs under it); None if it has none."""
        if config.get("resume") != AUTO:
            return None
        assert self.client is not None
        query = f"tags.`{SWEEP_TAG}` = '{tags[SWEEP_TAG]}'"  # however the dir was typed, then and now
        order = ["attributes.start_time DESC"]
        found = self.client.search_runs([self.experiment_id], query, order_by=order, max_results=1)
        if not found:
            return None
        run_id = str(found[0].info.run_id)
        if found[0].info.status == "FINISHED":  # its jobs would end, and its groups be made, twice
            raise CallbackConfigError(
                f"resume=auto: the sweep in {tags[SWEEP_TAG]} has finished (parent run {run_id}), so there"
                " is nothing to continue; train one of its jobs further with resume=<its run dir> and a"
                " larger trainer.max_epochs, or sweep into a new hydra.sweep.dir"
            )
        restart_run(self.client, found[0], tags)
        return run_id

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
        single = groups.objective(config)  # None: a multi-objective study, a Pareto front and no best
        objective, maximize = single or ("best_val_loss", False)
        runs = self._unique_names(sweep_runs(self.client, self.run_id))
        best = None
        if runs:
            children = child_runs(self.client, self.run_id)
            if groups.make_groups(self.client, self.run_id, children, groups.summarized([objective])):
                runs = sweep_runs(self.client, self.run_id)  # again: they moved under their groups
            best = self._log_best(objective, maximize)
            print(table(runs, sort_by))
            if single:
                self._log_paired(runs, objective, maximize, sweep_dir / "paired.csv")
            png = overlay(self.client, runs, sweep_dir / "compare.png", metric, sort_by)
            self.client.log_artifact(self.run_id, str(png))
        if best:
            print(f"best:        {best}")
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

    def _log_best(self, objective: str, maximize: bool) -> str | None:
        """The sweep's best on the parent, so that its row is not blank: tags best_run_id and
        best_run, and its objective and test_loss — where its runs differ in seed, the best group's
        n, mean and 95% interval of them. A study's best is the study's (`record_study` named its
        run); a multi-objective study has none. Returns the best as a line for the terminal."""
        from mlflow.entities import Metric, RunTag

        assert self.client is not None and self.run_id is not None
        tags = self.client.get_run(self.run_id).data.tags
        if STUDY_TAG in tags:
            best = self.client.get_run(tags["best_run_id"]) if "best_run_id" in tags else None
        else:
            best = best_child(child_runs(self.client, self.run_id), objective, maximize)
        if best is None:
            return None
        grouped = REPEATS_TAG in best.data.tags
        shown = list(dict.fromkeys([objective, "test_loss", "val_loss_ratio"]))  # the ratio: readable
        keys = [f"{m}_{s}" for m in shown for s in ("n", "mean", "ci_low", "ci_high")] if grouped else shown
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, best.data.metrics[k], now, 0) for k in keys if k in best.data.metrics],
            tags=[RunTag("best_run_id", best.info.run_id), RunTag("best_run", best.info.run_name)],
        )
        return f"{best.info.run_name}: {objective} {describe(best, objective)}"

    def _log_paired(self, runs: list[Run], objective: str, maximize: bool, path: Path) -> None:
        """Each configuration repeated over seeds against the best, paired by seed: printed, as
        `paired.csv` and tag `paired` on the parent, and on each group's run (src/sweep/groups.py)."""
        assert self.client is not None and self.run_id is not None
        comparisons = paired_comparison(runs, objective, maximize)
        if not comparisons:
            return
        print("\n".join(paired_lines(comparisons)))
        path.parent.mkdir(parents=True, exist_ok=True)
        paired_frame(comparisons).to_csv(path, index=False)
        self.client.log_artifact(self.run_id, str(path))
        self.client.set_tag(self.run_id, groups.PAIRED_TAG, "\n".join(p.verdict() for _, p in comparisons))
        groups.record_paired(self.client, self.run_id, runs, comparisons)

    def _end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            end_run(self.client, self.run_id, status)
            self.run_id = None


def value(run: Run, objective: str) -> float:
    """A run's objective: a group's (a run whose seeds nest under it) is its mean over them."""
    return run.data.metrics.get(f"{objective}_mean" if REPEATS_TAG in run.data.tags else objective, math.nan)


def best_child(children: list[Run], objective: str, maximize: bool) -> Run | None:
    scored = [c for c in children if math.isfinite(value(c, objective))]
    if not scored:
        return None
    return (max if maximize else min)(scored, key=lambda c: value(c, objective))


def describe(run: Run, objective: str) -> str:
    """`1.02e-6 [9.77e-7, 1.06e-6] over 5 seeds` for a group, `1.02e-6` for one run."""
    metrics = run.data.metrics
    if not math.isfinite(value(run, objective)):
        return "-"
    if REPEATS_TAG not in run.data.tags:
        return short_number(metrics[objective])
    mean, low, high, n = (
        metrics.get(f"{objective}_{s}", math.nan) for s in ("mean", "ci_low", "ci_high", "n")
    )
    band = "" if math.isnan(low) else f" [{short_number(low)}, {short_number(high)}]"
    return f"{short_number(mean)}{band} over {n:.0f} seed{'s' if n != 1 else ''}"


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
    run_id: str | None = None  # its MLflow run: the job's, or with repeats the trial's own


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
    best_value, tags best_trial and best_run_id: the sweep's best is the study's, by its objective,
    params `best.<name>`) or the size of the Pareto front (metric pareto_trials), and its files
    (plots, results) as artifacts under `optuna/`."""
    from mlflow.entities import Metric, Param, RunTag

    params = dict(settings)
    metrics: dict[str, float] = {f"trials_{state}": n for state, n in counts.items()}
    tags = {}
    if best is not None:
        metrics["best_value"] = best.value
        tags["best_trial"] = str(best.number)
        tags |= {"best_run_id": best.run_id} if best.run_id else {}
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
