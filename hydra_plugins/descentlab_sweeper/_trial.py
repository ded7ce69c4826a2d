"""How a job learns which Optuna trial it runs, wherever the launcher runs it.

The sweeper launches each trial with two Hydra overrides, `hydra.job.env_set.DESCENTLAB_OPTUNA_STUDY`
and `hydra.job.env_set.DESCENTLAB_OPTUNA_TRIAL_ID`, which Hydra sets in the environment around the
task function (and restores after it) in every launcher; they are not part of the job's config, so
they add no logged parameter and change nothing for a plain run. A job in the sweeper's own process
(Hydra's basic launcher) gets the sweeper's live trial; a job in another process or on another
machine (joblib, submitit) rebuilds it from the storage the sweeper config names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

STUDY_ENV = "DESCENTLAB_OPTUNA_STUDY"
TRIAL_ENV = "DESCENTLAB_OPTUNA_TRIAL_ID"

live: dict[tuple[str, int], optuna.Trial] = {}  # trials whose jobs run in this process


def current_trial() -> optuna.Trial | None:
    """The Optuna trial this Hydra job is, or None outside a descentlab_optuna sweep."""
    study_name, trial_id = os.environ.get(STUDY_ENV), os.environ.get(TRIAL_ENV)
    if study_name is None or trial_id is None:
        return None
    trial = live.get((study_name, int(trial_id)))
    if trial is not None:
        return trial

    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from . import _storage

    hydra = HydraConfig.get()
    storage = _storage.resolve(hydra.sweeper.storage, hydra.runtime.cwd)
    study = optuna.load_study(
        study_name=study_name,
        storage=_storage.open_storage(storage),
        pruner=instantiate(hydra.sweeper.pruner),  # should_prune asks the study's pruner
        sampler=optuna.samplers.RandomSampler(),  # the job samples nothing; keep it cheap
    )
    return optuna.trial.Trial(study, int(trial_id))


REPEAT_ENV = "DESCENTLAB_OPTUNA_REPEAT"  # with hydra.sweeper.repeats: which of the trial's seeds a job is


def reports() -> bool:
    """Whether this job reports to the pruner: with repeats only the first seed does, so what the
    pruner compares is the same seed's curve in every trial."""
    return os.environ.get(REPEAT_ENV, "0") == "0"
