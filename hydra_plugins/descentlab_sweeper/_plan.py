"""A sweep's whole config, checked at once before anything runs or is logged."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from hydra.errors import HydraException
from omegaconf import DictConfig

from src.sweep import studies
from src.sweep.objectives import Objectives, parse

from . import _identity, _space, _warm

if TYPE_CHECKING:
    from .sweeper import DescentlabOptunaSweeper


@dataclass(frozen=True)
class Plan:
    objectives: Objectives
    space: _space.Space
    arguments: list[str]  # params and command-line overrides, for the default study name
    enqueue: list[dict[str, Any]]  # points to evaluate first, as params of the space
    warm_source: optuna.Study | None  # hydra.sweeper.warm_start_from, found
    study_name: str
    storage: str  # resolved: a journal path or a database URL
    fresh: bool  # storage null: this command's own study, replacing an older one in the sweep dir
    identity: dict[str, Any]  # the study's user attributes: space, objectives, directions
    status: _identity.Status | None  # the study as it stands, None if it is new (or fresh)
    n_trials: int  # the study's budget (a grid's size, if smaller)
    launch_dir: str

    @property
    def full(self) -> bool:
        return self.status is not None and self.status.full(self.n_trials)


MOTPE = (
    "hydra/sweeper/sampler=motpe is not allowed: the 'motpe' sampler was removed in Optuna 4.0; use "
    "hydra/sweeper/sampler=tpe (multi-objective since Optuna 3) or hydra/sweeper/sampler=nsgaii"
)


def default_study_name(job_name: str, overrides: Sequence[str], custom_search_space: str | None) -> str:
    """`<job>-<digest of the search space and fixed overrides>`: the same command, the same study."""
    key = "\n".join([*sorted(overrides), custom_search_space or ""])
    return f"{job_name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def check_numbers(sweeper: DescentlabOptunaSweeper) -> None:
    rules = [
        (sweeper.n_trials >= 1, f"hydra.sweeper.n_trials={sweeper.n_trials} is not allowed: must be >= 1"),
        (sweeper.n_jobs >= 1, f"hydra.sweeper.n_jobs={sweeper.n_jobs} is not allowed: must be >= 1"),
        (sweeper.repeats >= 1, f"hydra.sweeper.repeats={sweeper.repeats} is not allowed: must be >= 1"),
        (
            0 <= sweeper.max_failure_rate <= 1,
            f"hydra.sweeper.max_failure_rate={sweeper.max_failure_rate} is not allowed: must be in [0, 1]",
        ),
        (
            0 < sweeper.heartbeat_interval < sweeper.grace_period,
            f"hydra.sweeper.grace_period={sweeper.grace_period} is not allowed: "
            f"must be > heartbeat_interval={sweeper.heartbeat_interval} > 0",
        ),
        (
            sweeper.timeout is None or sweeper.timeout > 0,
            f"hydra.sweeper.timeout={sweeper.timeout} is not allowed: must be > 0 seconds or null",
        ),
    ]
    for ok, message in rules:
        if not ok:
            raise HydraException(message)
    if str(sweeper.sampler.get("_target_", "")).endswith("MOTPESampler"):
        raise HydraException(MOTPE)
    if sweeper.search_space:
        raise HydraException(
            "hydra.sweeper.search_space is not read (hydra-optuna-sweeper deprecated it in 1.2): write "
            "each parameter under hydra.sweeper.params in sweep syntax, e.g. x: interval(-5.5, 5.5)"
        )


def check(sweeper: DescentlabOptunaSweeper, arguments: list[str], config: DictConfig) -> Plan:
    check_numbers(sweeper)
    objectives = parse(sweeper.direction, sweeper.objectives)
    if objectives.multi and not str(sweeper.pruner.get("_target_", "")).endswith("NopPruner"):
        raise HydraException(
            f"hydra/sweeper/pruner={sweeper.pruner._target_.rsplit('.', 1)[-1]} is not allowed with "
            f"{len(objectives.directions)} objectives: Optuna prunes single-objective studies only; "
            "use hydra/sweeper/pruner=none"
        )
    overrides = [f"{key!s}={value}" for key, value in sweeper.params.items()] + list(arguments)
    space = _space.parse(overrides, sweeper.range_stop_included)
    n_trials = sweeper.n_trials
    if str(sweeper.sampler.get("_target_", "")).endswith("GridSampler"):
        # every parameter needs its list of values; the budget is at most the grid
        n_trials = min(n_trials, math.prod(len(values) for values in space.grid().values()))
    enqueue = []
    for i, point in enumerate(sweeper.enqueue):
        if not isinstance(point, Mapping):
            raise HydraException(
                f"hydra.sweeper.enqueue[{i}]={point} is not allowed: a mapping of parameter to value"
            )
        where, extendable = f"hydra.sweeper.enqueue[{i}]", bool(sweeper.custom_search_space)
        enqueue.append(space.check_point(point, where, extendable))
    cwd, sweep_dir = str(config.hydra.runtime.cwd), str(config.hydra.sweep.dir)
    storage = studies.resolve(sweeper.storage, cwd, sweep_dir)
    source = None
    if sweeper.warm_start_from:
        source = _warm.load_source(sweeper.warm_start_from, storage, cwd)
        if len(source.directions) != len(objectives.directions):
            raise HydraException(
                f"hydra.sweeper.warm_start_from={sweeper.warm_start_from}: study {source.study_name} "
                f"has {len(source.directions)} objective(s), this sweep {len(objectives.directions)}"
            )
    name = sweeper.study_name or default_study_name(
        str(config.hydra.job.name), overrides, sweeper.custom_search_space
    )
    wanted = _identity.identity(
        space.distributions, sweeper.custom_search_space, objectives.names, objectives.directions
    )
    fresh = sweeper.storage is None
    status = None if fresh else _identity.check(storage, name, wanted)
    return Plan(
        objectives, space, overrides, enqueue, source, name, storage, fresh, wanted, status, n_trials, cwd
    )
