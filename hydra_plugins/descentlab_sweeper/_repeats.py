"""`hydra.sweeper.repeats=k`: each trial is evaluated on k seeds, and its objective is their mean.

Minibatch SGD is random, so one seed per configuration cannot tell a real difference from noise.
The k jobs of a trial run with `seed=s, s+1, ..., s+k-1` (s = the sweep's `seed`): the same seeds for
every trial, so trials are compared on common random numbers. With MLflow on, the trial gets its own
run under the sweep's parent and each seed's run nests under it.

Pruning stays comparable across trials: only the first seed's job reports `val_loss` (the same seed
in every trial), and the other seeds run only if the pruner let the first one finish. The standard
error of the mean of each objective is the trial's user attribute `<objective>_se` (e.g.
`best_val_loss_se`); the trial's run carries the trial's params and, like any group of repeats
(src.sweep.groups), n, mean and 95% interval of the seeds' results as metrics; both are
src.repeats' statistics (`spread`). The seeds are the same in every trial, so trials are compared
with the best one seed by seed (paired) when the sweep ends.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from optuna.trial import Trial, TrialState

from src.jobs import ENV_SET, PARENT_RUN_ENV
from src.repeats import spread
from src.sweep import trial as hpo
from src.sweep.objectives import Objectives

from ._outcome import judge, stored

if TYPE_CHECKING:
    from ._report import StudyRuns


def seeds(base: int, repeats: int) -> list[int]:
    """The seeds of each trial's jobs: base, base + 1, ..., the same for every trial."""
    return [base + i for i in range(repeats)]


def launch(
    launcher: Launcher,
    trial: Trial,
    overrides: list[str],
    *,
    seeds: list[int],
    study: optuna.Study,
    objectives: Objectives,
    runs: StudyRuns,
) -> JobReturn:
    """Run the trial's job (one per seed with more than one seed) and return one outcome: with
    repeats, a COMPLETED return whose value is the mean over seeds, or the first seed's return if it
    was pruned or failed."""
    k = len(seeds)
    if k == 1:
        (ret,) = launcher.launch([overrides], initial_job_idx=trial.number)
        return ret
    run_id = runs.start_trial(trial, k)
    # The seeds' runs nest under the trial's run: a job's own env_set wins over the multirun's.
    nest = [f"++{ENV_SET}{PARENT_RUN_ENV}={run_id}"] if run_id else []
    jobs = [
        [*overrides, f"seed={seed}", *nest, f"++{ENV_SET}{hpo.REPEAT_ENV}={i}"]
        for i, seed in enumerate(seeds)
    ]
    first = launcher.launch(jobs[:1], initial_job_idx=trial.number * k)
    outcome = first[0]
    state, _, _ = judge(outcome, stored(study, trial.number).user_attrs, objectives)
    if state is TrialState.COMPLETE:
        rest = launcher.launch(jobs[1:], initial_job_idx=trial.number * k + 1)
        outcome = combine(trial, [*first, *rest], objectives.names)
    runs.end_trial(run_id, outcome.status == JobStatus.COMPLETED, objectives.names)
    return outcome


def combine(trial: Trial, returns: list[JobReturn], names: list[str]) -> JobReturn:
    """The mean over seeds of each objective (the first failed job's return, if one failed); each
    objective's standard error is the trial's user attribute `<name>_se`."""
    for ret in returns:
        if ret.status != JobStatus.COMPLETED:
            return ret
    single = len(names) == 1
    values = [[ret.return_value] if single else ret.return_value for ret in returns]
    try:
        columns = [[float(v[i]) for v in values] for i in range(len(names))]
    except (TypeError, ValueError, IndexError):
        return returns[0]  # not numbers: the sweeper's own check fails the trial with the reason
    spreads = [spread(column) for column in columns]
    for name, stats in zip(names, spreads, strict=True):
        trial.set_user_attr(f"{name}_se", stats.se)
    trial.set_user_attr("values_per_seed", columns[0] if single else columns)
    means = [stats.mean for stats in spreads]
    return replace(returns[-1], _return_value=means[0] if single else means)
