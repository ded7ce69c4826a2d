"""Search spaces too conditional for `hydra.sweeper.params`, named by `hydra.sweeper.custom_search_space`.

Each is fn(cfg, trial): it suggests parameters on the Optuna trial, and every parameter it suggests
becomes the override `<name>=<value>` of the trial's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    import optuna

# The learning rates each optimizer works in on the lecture's problem (log-uniform bounds):
# plain gradient steps need η near 1 / L; momentum and Adam take smaller ones.
LR_RANGES = {
    "gd": (1e-2, 1.0),
    "sgd": (1e-3, 0.5),
    "momentum": (1e-4, 0.1),
    "nesterov": (1e-4, 0.1),
    "adam": (1e-4, 0.1),
}


def optimizer_choice(cfg: DictConfig, trial: optuna.Trial) -> None:
    """A categorical over the optimizer groups, then a learning rate in that optimizer's range."""
    optimizer = trial.suggest_categorical("optimizer", list(LR_RANGES))
    trial.suggest_float("optimizer.lr", *LR_RANGES[optimizer], log=True)
