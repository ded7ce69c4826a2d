"""The training job's side of an Optuna sweep (`hydra/sweeper=optuna` or `descentlab_optuna`).

Inside a sweep, the job reports val_loss to its trial after each epoch and stops when the pruner
says so (the trial ends PRUNED); when training diverged it leaves the reason on the trial, and the
sweeper ends the trial FAIL. It returns the objectives the sweep names (`hydra.sweeper.objectives`,
by default the best val_loss). Its MLflow run is tagged with the trial and nested under the sweep's
parent run. Outside a sweep, `this_trial()` is a no-op.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig

from hydra_plugins.descentlab_slurm.launcher import check_config as check_launcher
from hydra_plugins.descentlab_sweeper import current_trial, reports
from hydra_plugins.descentlab_sweeper.sweeper import check_config
from src.loop import EpochMetrics, FitResult, StopTraining

if TYPE_CHECKING:
    import optuna

FAILED_STOPS = ("diverged", "non_finite")  # stop reasons that make a trial FAIL, not COMPLETE
# What a job can return as an objective: the fit's numbers (hydra.sweeper.objectives names them).
OBJECTIVES = ("best_val_loss", "test_loss", "wall_time", "epochs", "best_epoch", "param_error")


def objectives(sweeper: DictConfig | None) -> list[str]:
    """The objectives this job returns: hydra.sweeper.objectives, by default best_val_loss alone."""
    named = sweeper.get("objectives") if sweeper is not None else None
    if named is None:
        return ["best_val_loss"]
    return [str(n) for n in named] if isinstance(named, ListConfig | list) else [str(named)]


def check_sweep(cfg: DictConfig) -> None:
    """Before a sweep logs anything: the sweeper's whole config, and objectives this job can return."""
    check_config(cfg)  # a no-op for sweepers other than this project's
    check_launcher(cfg)  # likewise for launchers
    sweeper = cfg.hydra.sweeper
    if "objectives" not in sweeper:
        return
    names = objectives(sweeper)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise HydraException(
            f"hydra.sweeper.objectives: {', '.join(unknown)} is not an objective; "
            f"available: {', '.join(OBJECTIVES)}"
        )
    direction = sweeper.get("direction")
    n_directions = len(direction) if isinstance(direction, ListConfig | list) else 1
    if len(names) != n_directions:  # objectives unset: best_val_loss alone
        raise HydraException(
            f"hydra.sweeper.direction has {n_directions} entries: name as many objectives, "
            f"e.g. hydra.sweeper.objectives=[best_val_loss,wall_time]; available: {', '.join(OBJECTIVES)}"
        )


class NoTrial:
    """A plain run: nothing to report."""

    tags: ClassVar[dict[str, str]] = {}

    def objective(self, result: FitResult) -> float:
        return result.best_val_loss

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def finish(self, result: FitResult) -> None:
        pass


class TrialReporter:
    """A loop callback that reports val_loss to the job's Optuna trial and prunes on its word."""

    def __init__(self, trial: optuna.Trial, objectives: list[str]) -> None:
        self.trial, self.objectives = trial, objectives
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

    def objective(self, result: FitResult) -> float | list[float]:
        """What the sweep optimizes: one number, or one per named objective (nan when the fit has
        none, e.g. param_error without a true θ; the sweeper then ends the trial FAIL)."""
        values = [getattr(result, name) for name in self.objectives]
        values = [math.nan if v is None else float(v) for v in values]
        return values[0] if len(values) == 1 else values

    def finish(self, result: FitResult) -> None:
        self.trial.set_user_attr("stop_reason", result.stop_reason)
        self.trial.set_user_attr("epochs", result.epochs)
        if result.stop_reason in FAILED_STOPS:
            self.trial.set_user_attr("fail_reason", f"{result.stop_reason} at epoch {result.epochs}")


def this_trial() -> NoTrial | TrialReporter:
    """The Optuna trial this job runs, as a loop callback; a no-op outside an Optuna sweep."""
    trial = current_trial()
    if trial is None:
        return NoTrial()
    from hydra.core.hydra_config import HydraConfig

    return TrialReporter(trial, objectives(HydraConfig.get().sweeper))
