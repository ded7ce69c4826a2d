"""A --multirun's jobs trained as one batch (src/loop/batched.py), each still its own run.

What `src.train.train` does for one job, cut in the two halves around training, so that a launcher
(hydra_plugins/descentlab_batch) can open every job's run, train them all at once, then close each:
`open_row` (in the job's Hydra context: its config, run dir and `hydra.job.env_set`) builds the run,
opens its MLflow run (named, tagged and nested as today) and logs its dataset; `close_row` (in the
same context again) logs the result, the loss curve, the model and the table of estimates, ends the
MLflow run and prints the job's summary, as a single job does.

Each job snapshots in its own run dir as a single run does (`snapshot`: the single run's snapshot,
plus why its row stopped), and `resume=auto` builds a job from its run dir's snapshot, if it has one,
into its own MLflow run again (`built`, `open_row`; docs/batched.md#snapshots-and-resume).

`config_problem(cfg)` says why a job cannot share a batch, `groups(rows)` which jobs can: each group
trains as one batch, the rest run one at a time.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src import signals
from src.estimation.inference import Estimates
from src.jobs import hydra_context
from src.loop import FitResult, Progress, checkpoint
from src.loop.batched import Resumed, Snapshot, fit_batch
from src.loop.batched import why_not_batched as runs_problem
from src.loop.training import Training
from src.sweep import trial as hpo
from src.tracking.tracker import make_tracker
from src.train import Tracker, build, job_started, log, record, resumed, step_size_check, summarize


@dataclass
class Row:
    """One job of the batch: its config, its built run, and its open tracker."""

    cfg: DictConfig
    run: Training
    since: float  # when the job's setup began (setup_time counts from here)
    state: dict[str, Any] | None = None  # the snapshot it resumes (`resume=auto`), restored into `run`
    resumed: Resumed | None = None
    tags: dict[str, str] = field(default_factory=dict)
    tracker: Tracker | None = None
    run_dir: Path | None = None
    closing: ExitStack = field(default_factory=ExitStack)  # leaves the tracker: ends the MLflow run
    setup_time: float = 0.0
    trial: hpo.NoTrial | hpo.TrialReporter = field(default_factory=hpo.NoTrial)  # its Optuna trial


def config_problem(cfg: DictConfig) -> str | None:
    """What in one job's config keeps it out of a batch."""
    if (cfg.resume and cfg.resume != checkpoint.AUTO) or cfg.warm_start:
        return "resume=<run> and warm_start= start from another run's state (resume=auto may batch)"
    return None


def built(cfg: DictConfig) -> Row:
    """The job's run, built as `train` builds it (in the job's Hydra context): with `resume=auto`,
    from its run dir's snapshot if it has one (its config, states, progress and stop reason)."""
    since = job_started()
    trial = hpo.this_trial()  # an Optuna trial's job reports to its own trial, as `main`'s does
    cfg, state, tags = resumed(cfg, dict(trial.tags))
    run = build(cfg)
    if state is None:
        return Row(cfg=cfg, run=run, since=since, tags=tags, trial=trial)
    progress = checkpoint.restore(state, run)
    stopped = state.get(checkpoint.STOP_REASON)
    return Row(cfg, run, since, state, Resumed(progress, stopped), tags, trial=trial)


def training_epoch(row: Row) -> int | None:
    """The epoch a row trains on from (0: a fresh start); None for a resumed row that had stopped."""
    if row.resumed is None:
        return 0
    return None if row.resumed.stop_reason is not None else row.resumed.progress.epoch


def groups(rows: Sequence[Row]) -> list[list[int]]:
    """The jobs (indices into `rows`) in groups that can each train as one batch, in job order: a
    job joins the first group whose runs it can share a batch with (src/loop/batched.py), else
    starts its own. A group of one trains alone."""
    out: list[list[int]] = []

    def fits(group: list[int], row: Row) -> bool:  # the rows that train on are at the same epoch
        epochs = {training_epoch(rows[g]) for g in group} | {training_epoch(row)}
        return runs_problem([rows[group[0]].run, row.run]) is None and len(epochs - {None}) <= 1

    for i, row in enumerate(rows):
        group = next((g for g in out if fits(g, row)), None)
        if group is None:
            out.append([i])
        else:
            group.append(i)
    return out


def open_row(row: Row) -> None:
    """The job's MLflow run, opened as `train` opens it (in the job's Hydra context): a resumed
    job's own run, reopened."""
    tags = row.tags | step_size_check(row.run)
    row.run_dir = hydra_context()[2]
    if row.run_dir is not None:
        log.info("run directory: %s", row.run_dir)
    path = None if row.run_dir is None else row.run_dir / checkpoint.SNAPSHOT
    run_id = None if row.state is None else row.state["mlflow_run_id"]
    tracker = make_tracker(row.cfg, tags=tags, resume_run_id=run_id, snapshot_path=path)
    row.closing.enter_context(tracker)
    row.tracker = tracker
    if row.state is None:
        tracker.log_dataset(row.run.data)


def snapshot(row: Row) -> Snapshot:
    """Row `row`'s snapshot writer: the single run's snapshot (src/train.py) in its run dir, with
    why the row stopped, if it has; MLflow then holds exactly the epochs the snapshot holds."""
    config_yaml = OmegaConf.to_yaml(row.cfg, resolve=True)

    def write(p: Progress, stop_reason: str | None) -> None:
        assert row.tracker is not None
        if row.run_dir is not None:
            state = checkpoint.capture(p, row.run, row.tracker.run_id, config_yaml)
            checkpoint.save(state | {checkpoint.STOP_REASON: stop_reason}, row.run_dir / checkpoint.SNAPSHOT)
        row.tracker.flush()

    return write


def ready(rows: Sequence[Row]) -> None:
    """Wait until MLflow holds every row's run and dataset (one wait: the sidecar works in order)."""
    for row in reversed(rows):
        assert row.tracker is not None
        row.tracker.ready()
        row.setup_time = time.perf_counter() - row.since


def train_rows(rows: Sequence[Row]) -> list[FitResult]:
    """Every row trained at once (resumed rows from their snapshots); each row's tracker sees its
    epochs, and each row snapshots in its run dir as a single run does."""
    stop = signals.StopRequest()
    with signals.scoped(stop):
        stop.check()
        return fit_batch(
            [r.run for r in rows],
            callbacks=[[r.tracker, r.trial] for r in rows],  # type: ignore[list-item]
            stop=stop,
            resumed=[r.resumed for r in rows],
            snapshots=[snapshot(r) for r in rows],
        )


def resume_hint(sweep_dir: Path) -> str:
    """What cli prints after an interrupted batch's `interrupted`: the command that continues every
    job from its own snapshot (this command line, in this sweep dir, with resume=auto)."""
    kept = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "resume="))]
    command = ["python", "-m", "src.train", *kept, f"hydra.sweep.dir={sweep_dir}", "resume=auto"]
    return f"; sweep dir: {sweep_dir}; continue every job with: {shlex.join(command)}"


def report_row(row: Row, result: FitResult) -> Estimates | None:
    """The job's outcome sent to MLflow (in its Hydra context), without waiting for the writes:
    the launcher sends every row's, then waits once (`close_row`)."""
    assert row.tracker is not None
    result.setup_time = row.setup_time
    return record(row.cfg, row.run, result, row.tracker, row.run_dir)


def close_row(row: Row, result: FitResult, estimates: Estimates | None) -> float | list[float]:
    """The job's MLflow run ended (waiting for its writes) and its summary printed, as `train` ends
    it (in its Hydra context); returns what `main` returns to Hydra (its best validation loss, or
    its trial's objectives, its trial told how it ended)."""
    assert row.tracker is not None
    row.closing.close()
    validated = len(row.run.data.val) > 0
    summarize(result, row.tracker.run_id, estimates, validated, row.tracker.where, row.run_dir)
    row.trial.finish(result)
    return row.trial.objective(result)


def abandon(rows: Sequence[Row], error: BaseException) -> None:
    """End every open MLflow run as the error says (KILLED for a signal, else FAILED)."""
    for row in rows:
        row.closing.__exit__(type(error), error, error.__traceback__)
