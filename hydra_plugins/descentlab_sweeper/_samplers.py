"""The sampler a sweep asks, built from `hydra/sweeper/sampler`: options that YAML cannot hold as
Python objects are given as upstream gives them (a dotted path for a function, a config with
`_target_` for a sampler, crossover or mutation) and turned into what Optuna takes here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from hydra.errors import HydraException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from . import _warm

if TYPE_CHECKING:
    from ._plan import Plan


def build(config: DictConfig, plan: Plan, n_existing: int) -> optuna.samplers.BaseSampler:
    cfg = OmegaConf.to_container(config, resolve=True)
    assert isinstance(cfg, dict)
    if cfg.get("seed") is not None and n_existing:
        # A resumed study (or a second worker) must not replay the first process's draws.
        cfg["seed"] = int(cfg["seed"]) + n_existing
    if isinstance(cfg.get("constraints_func"), str):
        cfg["constraints_func"] = get_method(cfg["constraints_func"])  # fn(FrozenTrial) -> [c, ...]
    if cfg.get("reference_points") is not None:
        cfg["reference_points"] = np.asarray(cfg["reference_points"], dtype=float)  # NSGA-III
    if cfg.get("source_trials") is not None:
        cfg["source_trials"] = source_trials(cfg["source_trials"], plan)
    sampler = instantiate(cfg)  # recursive: independent_sampler, crossover, mutation
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    return sampler(plan.space.grid())  # GridSampler is a partial waiting for the grid


def source_trials(spec: Any, plan: Plan) -> list[optuna.trial.FrozenTrial]:
    """CMA-ES's `source_trials` (warm-starting CMA-ES): a study, named as warm_start_from names one
    (a study in this storage, or `<storage>[#<study>]`); its COMPLETE trials."""
    if not isinstance(spec, str):
        raise HydraException(
            f"hydra.sweeper.sampler.source_trials={spec!r} is not allowed: name a study, as "
            "hydra.sweeper.warm_start_from does (`<study>` or `<storage path or URL>#<study>`)"
        )
    source = _warm.load_source(spec, plan.storage, plan.launch_dir)
    return source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
