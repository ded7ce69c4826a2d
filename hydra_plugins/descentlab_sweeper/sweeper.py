"""The Hydra Sweeper class; the work happens in `_impl` (imported when a sweep starts, since Hydra
imports this module at every start-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    from ._plan import Plan


class DescentlabOptunaSweeper(Sweeper):
    name = "descentlab_optuna"
    range_stop_included = False  # Hydra's own range: range(1, 3) is 1, 2

    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: Any,
        objectives: Any,
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
        enqueue: Any,
        warm_start_from: str | None,
        repeats: int = 1,
        search_space: Any = None,
    ) -> None:
        self.sampler, self.pruner = sampler, pruner
        self.direction, self.objectives = direction, objectives
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.timeout = n_trials, n_jobs, timeout
        self.max_failure_rate = max_failure_rate
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = dict(params or {})
        self.custom_search_space = custom_search_space
        self.enqueue = list(enqueue or [])
        self.warm_start_from = warm_start_from
        self.repeats = repeats
        self.search_space = search_space

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def check(self, arguments: list[str], config: DictConfig) -> Plan:
        """The whole sweep config, checked before anything runs or is logged: each bad value is
        one line naming its key (raised here rather than in __init__, where Hydra's instantiate
        would wrap it)."""
        from ._plan import check

        return check(self, arguments, config)

    @classmethod
    def check_config(cls, config: DictConfig) -> bool:
        """Check a composed config's sweep before the sweep starts, for a Hydra callback that would
        log something first (src.sweep.parent.MultirunParent, which finds this method on the class);
        False when the sweep will launch no job (its study is already full)."""
        from hydra.utils import instantiate

        sweeper = instantiate(config.hydra.sweeper)
        return not sweeper.check(list(config.hydra.overrides.task), config).full

    def sweep(self, arguments: list[str]) -> None:
        from ._impl import Sweep

        assert self.config is not None, "Hydra calls setup() before sweep()"
        plan = self.check(arguments, self.config)
        if plan.full:
            from ._report import say_full

            say_full(plan)  # one line, exit 0: nothing to run, no parent run was made
            return
        Sweep(self, plan).run()


class OptunaSweeper(DescentlabOptunaSweeper):
    """`hydra/sweeper=optuna`: the same sweeper, reading parameters as hydra-optuna-sweeper does."""

    name = "optuna"
    range_stop_included = True  # hydra-optuna-sweeper: range(1, 3) is IntDistribution(1, 3)
