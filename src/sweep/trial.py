"""The training job's side of an Optuna sweep (`hydra/sweeper=optuna` or `descentlab_optuna`).

Inside a sweep, the job reports val_loss to its trial after each epoch and stops when the pruner
says so (the trial ends PRUNED); when training diverged it leaves the reason on the trial, and the
sweeper ends the trial FAIL. It returns the objectives the sweep names (`hydra.sweeper.objectives`,
by default the best val_loss). Its MLflow run is tagged with the trial and nested under the sweep's
parent run. Outside a sweep, `this_trial()` is a no-op.

The sweeper (hydra_plugins/descentlab_sweeper) launches each trial with the overrides
`hydra.job.env_set.DESCENTLAB_OPTUNA_STUDY` and `..._TRIAL_ID`, which every launcher hands to the
job's config; they add no logged parameter and change nothing for a plain run. A job in the
sweeper's own process (Hydra's basic launcher) gets the sweeper's live trial (`live`); a job in
another process or on another machine (joblib, submitit) opens the study the sweeper config names.
This module imports nothing of the plugins; the plugins import it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from omegaconf import DictConfig

from src.jobs import job_env
from src.loop import EpochMetrics, FitResult, StopTraining
from src.loop.loop import FAILED_STOPS
from src.sweep.objectives import job_results, parse

if TYPE_CHECKING:
    import optuna

STUDY_ENV = "DESCENTLAB_OPTUNA_STUDY"
TRIAL_ENV = "DESCENTLAB_OPTUNA_TRIAL_ID"
REPEAT_ENV = "DESCENTLAB_OPTUNA_REPEAT"  # with hydra.sweeper.repeats: which of the trial's seeds a job is
live: dict[tuple[str, int], optuna.Trial] = {}  # trials whose jobs run in this process (the sweeper's)


def objectives(sweeper: DictConfig) -> list[str]:
    """The results this job returns: those hydra.sweeper.objectives names, by default best_val_loss."""
    return job_results(parse(sweeper.get("direction"), sweeper.get("objectives")))


@runtime_checkable
class ChecksConfig(Protocol):
    """A Hydra plugin class that can check a composed config before anything runs (ours do)."""

    @classmethod
    def check_config(cls, config: DictConfig) -> bool | None:
        """Raise on a bad config; False: the sweep will launch no job (e.g. its study is full)."""


def check_sweep(cfg: DictConfig) -> bool:
    """Before a sweep logs anything: the sweeper's and the launcher's whole config (where their
    class can check it), and objectives this job can return. False when the sweep will launch no
    job, so that nothing (no parent run) is made for it."""
    from hydra.utils import get_class

    runs = True
    for node in (cfg.hydra.sweeper, cfg.hydra.launcher):
        plugin = get_class(str(node._target_))
        if issubclass(plugin, ChecksConfig):
            runs = plugin.check_config(cfg) is not False and runs
    if "objectives" in cfg.hydra.sweeper:  # a sweeper that names its objectives: ours
        objectives(cfg.hydra.sweeper)
    return runs


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


def current_trial() -> optuna.Trial | None:
    """The Optuna trial this Hydra job is, or None outside a descentlab_optuna sweep."""
    study_name, trial_id = job_env(STUDY_ENV), job_env(TRIAL_ENV)
    if study_name is None or trial_id is None:
        return None
    trial = live.get((study_name, int(trial_id)))
    if trial is not None:
        return trial

    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from src.sweep import studies

    hydra = HydraConfig.get()
    study = optuna.load_study(
        study_name=study_name,
        storage=studies.open_storage(
            studies.resolve(hydra.sweeper.storage, hydra.runtime.cwd, str(hydra.sweep.dir))
        ),
        pruner=instantiate(hydra.sweeper.pruner),  # should_prune asks the study's pruner
        sampler=optuna.samplers.RandomSampler(),  # the job samples nothing; keep it cheap
    )
    return optuna.trial.Trial(study, int(trial_id))


def reports() -> bool:
    """Whether this job reports to the pruner: with repeats only the first seed does, so what the
    pruner compares is the same seed's curve in every trial."""
    return job_env(REPEAT_ENV) in (None, "0")


def this_trial() -> NoTrial | TrialReporter:
    """The Optuna trial this job runs, as a loop callback; a no-op outside an Optuna sweep."""
    trial = current_trial()
    if trial is None:
        return NoTrial()
    from hydra.core.hydra_config import HydraConfig

    return TrialReporter(trial, objectives(HydraConfig.get().sweeper))
