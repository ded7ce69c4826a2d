"""`hydra.sweeper.repeats=k`: each trial is evaluated on k seeds, and its objective is their mean.

Minibatch SGD is random, so one seed per configuration cannot tell a real difference from noise.
The k jobs of a trial run with `seed=s, s+1, ..., s+k-1` (s = the sweep's `seed`): the same seeds for
every trial, so trials are compared on common random numbers. With MLflow on, the trial gets its own
run under the sweep's parent and each seed's run nests under it.

Pruning stays comparable across trials: only the first seed's job reports `val_loss` (the same seed
in every trial), and the other seeds run only if the pruner let the first one finish. The standard
error of the mean is the trial's user attribute `best_val_loss_se` and a metric of its run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import mean, stdev
from typing import TYPE_CHECKING

from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import Trial, TrialState

from src.jobs import ENV_SET, PARENT_RUN_ENV
from src.sweep import trial as hpo

if TYPE_CHECKING:
    from ._impl import Sweep


def seeds(sweep: Sweep) -> list[int]:
    base = int(sweep.config.get("seed") or 0)
    return [base + i for i in range(sweep.sweeper.repeats)]


def launch(sweep: Sweep, trial: Trial, overrides: list[str]) -> JobReturn:
    """Run the trial's job (k jobs with repeats) and return one outcome: with repeats, a COMPLETED
    return whose value is the mean over seeds, or the first seed's return if it was pruned or failed."""
    k = sweep.sweeper.repeats
    if k == 1:
        (ret,) = sweep.launcher.launch([overrides], initial_job_idx=trial.number)
        return ret
    run_id = sweep.runs.start_trial(trial, k)
    # The seeds' runs nest under the trial's run: a job's own env_set wins over the multirun's.
    nest = [f"++{ENV_SET}{PARENT_RUN_ENV}={run_id}"] if run_id else []
    jobs = [
        [*overrides, f"seed={seed}", *nest, f"++{ENV_SET}{hpo.REPEAT_ENV}={i}"]
        for i, seed in enumerate(seeds(sweep))
    ]
    first = sweep.launcher.launch(jobs[:1], initial_job_idx=trial.number * k)
    outcome = first[0]
    if sweep._judge(trial, first[0])[0] is TrialState.COMPLETE:
        rest = sweep.launcher.launch(jobs[1:], initial_job_idx=trial.number * k + 1)
        outcome = combine(trial, [*first, *rest], len(sweep.objectives.directions))
    sweep.runs.end_trial(run_id, outcome.status == JobStatus.COMPLETED)
    return outcome


def combine(trial: Trial, returns: list[JobReturn], n_objectives: int) -> JobReturn:
    """The mean over seeds of each objective (the first failed job's return, if one failed)."""
    for ret in returns:
        if ret.status != JobStatus.COMPLETED:
            return ret
    values = [ret.return_value if n_objectives > 1 else [ret.return_value] for ret in returns]
    try:
        columns = [[float(v[i]) for v in values] for i in range(n_objectives)]
    except (TypeError, ValueError, IndexError):
        return returns[0]  # not numbers: the sweeper's own check fails the trial with the reason
    means = [mean(c) for c in columns]
    errors = [stdev(c) / math.sqrt(len(c)) for c in columns]
    trial.set_user_attr("best_val_loss_se", errors[0] if n_objectives == 1 else errors)
    trial.set_user_attr("values_per_seed", columns[0] if n_objectives == 1 else columns)
    return replace(returns[-1], _return_value=means[0] if n_objectives == 1 else means)
