"""The Hydra Sweeper class; the work happens in `_impl` (imported when a sweep starts, since Hydra
imports this module at every start-up)."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class DescentlabOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        timeout: float | None,
        max_failure_rate: float,
        heartbeat_interval: float,
        grace_period: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        repeats: int = 1,
    ) -> None:
        directions = list(direction) if isinstance(direction, list | tuple) else [direction]
        directions = [str(getattr(d, "name", d)) for d in directions]
        self.sampler, self.pruner, self.directions = sampler, pruner, directions
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.timeout = n_trials, n_jobs, timeout
        self.max_failure_rate = max_failure_rate
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = dict(params or {})
        self.custom_search_space = custom_search_space
        self.repeats = repeats

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def check(self) -> None:
        """Each value rule, as one line naming the key (raised here rather than in __init__,
        where Hydra's instantiate would wrap it)."""
        checks = [
            (self.n_trials >= 1, f"hydra.sweeper.n_trials={self.n_trials} is not allowed: must be >= 1"),
            (self.n_jobs >= 1, f"hydra.sweeper.n_jobs={self.n_jobs} is not allowed: must be >= 1"),
            (self.repeats >= 1, f"hydra.sweeper.repeats={self.repeats} is not allowed: must be >= 1"),
            (
                0 <= self.max_failure_rate <= 1,
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} is not allowed: must be in [0, 1]",
            ),
            (
                0 < self.heartbeat_interval < self.grace_period,
                f"hydra.sweeper.grace_period={self.grace_period} is not allowed: "
                f"must be > heartbeat_interval={self.heartbeat_interval} > 0",
            ),
            (
                bool(self.directions) and set(self.directions) <= {"minimize", "maximize"},
                f"hydra.sweeper.direction={self.directions} is not allowed: "
                "minimize, maximize or a list of them",
            ),
            (
                self.timeout is None or self.timeout > 0,
                f"hydra.sweeper.timeout={self.timeout} is not allowed: must be > 0 seconds or null",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise HydraException(message)

    def sweep(self, arguments: list[str]) -> None:
        from ._impl import Sweep

        self.check()
        Sweep(self, arguments).run()
