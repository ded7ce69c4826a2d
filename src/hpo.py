"""The training job's side of an Optuna sweep (`hydra/sweeper=descentlab_optuna`).

Inside a sweep, the job reports val_loss to its trial after each epoch and stops when the pruner
says so (the trial ends PRUNED); when training diverged it leaves the reason on the trial, and the
sweeper ends the trial FAIL. Its MLflow run is tagged with the trial and nested under the sweep's
parent run. Outside a sweep, `this_trial()` is a no-op.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from hydra_plugins.descentlab_sweeper import current_trial, reports
from src.loop import EpochMetrics, FitResult, StopTraining

if TYPE_CHECKING:
    import optuna

FAILED_STOPS = ("diverged", "non_finite")  # stop reasons that make a trial FAIL, not COMPLETE


class NoTrial:
    """A plain run: nothing to report."""

    tags: ClassVar[dict[str, str]] = {}

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def finish(self, result: FitResult) -> None:
        pass


class TrialReporter:
    """A loop callback that reports val_loss to the job's Optuna trial and prunes on its word."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.tags = {"optuna.study": trial.study.study_name, "optuna.trial": str(trial.number)}
        # Optuna prunes single objectives only; with repeats, only the first seed reports.
        self.prunable = len(trial.study.directions) == 1 and reports()

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        # A non-finite loss is the loop's to stop on (non_finite, a FAIL), not the pruner's.
        if not self.prunable or not math.isfinite(metrics.val_loss):
            return
        self.trial.report(metrics.val_loss, metrics.epoch)
        if self.trial.should_prune():
            raise StopTraining("pruned")

    def finish(self, result: FitResult) -> None:
        self.trial.set_user_attr("stop_reason", result.stop_reason)
        self.trial.set_user_attr("epochs", result.epochs)
        if result.stop_reason in FAILED_STOPS:
            self.trial.set_user_attr("fail_reason", f"{result.stop_reason} at epoch {result.epochs}")


def this_trial() -> NoTrial | TrialReporter:
    """The Optuna trial this job runs, as a loop callback; a no-op outside an Optuna sweep."""
    trial = current_trial()
    return NoTrial() if trial is None else TrialReporter(trial)
