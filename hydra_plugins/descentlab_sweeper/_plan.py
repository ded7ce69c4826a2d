"""A sweep's whole config, checked at once before anything runs or is logged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from hydra.errors import HydraException

from src.sweep import studies
from src.sweep.objectives import Objectives, parse

from . import _space, _warm

if TYPE_CHECKING:
    from .sweeper import DescentlabOptunaSweeper


@dataclass(frozen=True)
class Plan:
    objectives: Objectives
    space: _space.Space
    arguments: list[str]  # params and command-line overrides, for the default study name
    enqueue: list[dict[str, Any]]  # points to evaluate first, as params of the space
    warm_source: optuna.Study | None  # hydra.sweeper.warm_start_from, found


def check(sweeper: DescentlabOptunaSweeper, arguments: list[str], cwd: str) -> Plan:
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
    objectives = parse(sweeper.direction, sweeper.objectives)
    if objectives.multi and not str(sweeper.pruner.get("_target_", "")).endswith("NopPruner"):
        raise HydraException(
            f"hydra/sweeper/pruner={sweeper.pruner._target_.rsplit('.', 1)[-1]} is not allowed with "
            f"{len(objectives.directions)} objectives: Optuna prunes single-objective studies only; "
            "use hydra/sweeper/pruner=none"
        )
    overrides = [f"{key!s}={value}" for key, value in sweeper.params.items()] + list(arguments)
    space = _space.parse(overrides, sweeper.range_stop_included)
    if str(sweeper.sampler.get("_target_", "")).endswith("GridSampler"):
        space.grid()  # every parameter needs its list of values
    enqueue = []
    for i, point in enumerate(sweeper.enqueue):
        if not isinstance(point, Mapping):
            raise HydraException(
                f"hydra.sweeper.enqueue[{i}]={point} is not allowed: a mapping of parameter to value"
            )
        where, extendable = f"hydra.sweeper.enqueue[{i}]", bool(sweeper.custom_search_space)
        enqueue.append(space.check_point(point, where, extendable))
    source = None
    if sweeper.warm_start_from:
        storage = studies.resolve(sweeper.storage, cwd)
        source = _warm.load_source(sweeper.warm_start_from, storage, cwd)
        if len(source.directions) != len(objectives.directions):
            raise HydraException(
                f"hydra.sweeper.warm_start_from={sweeper.warm_start_from}: study {source.study_name} "
                f"has {len(source.directions)} objective(s), this sweep {len(objectives.directions)}"
            )
    return Plan(objectives, space, overrides, enqueue, source)
