"""`hydra/sweeper=basic` (Hydra's default sweeper: the grid of a --multirun's overrides), which leaves
checking that every job composes to a launcher that composes every job before it runs any
(`hydra/launcher=batched`, our default), instead of composing each job twice.

Hydra's basic sweeper composes every job to check it before the launcher composes it again
("this can be a bit slow for large jobs", its source says): ≈ 0.2 s a job, more than half the wall of
a 100-seed batched sweep untracked. This subclass skips that check only where the launcher says it
composes every job first (`composes_every_job_first`), so its errors come as early, before any job
runs; with any other launcher it checks as Hydra does. It is stored under Hydra's own name, `basic`,
so that every config that picks or overrides the sweeper (`override /hydra/sweeper: optuna` in an
experiment) works as with Hydra's: importing Hydra's class first registers Hydra's entry, which this
module's registration then replaces.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


class DescentlabBasicSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not getattr(self.launcher, "composes_every_job_first", False):
            super().validate_batch_is_legal(batch)


# Hydra's BasicSweeperConf with this class as its target (a dict: Hydra's plugin scan runs this
# module outside sys.modules, where a @dataclass cannot resolve its own module).
BASIC = {"_target_": f"{__name__}.DescentlabBasicSweeper", "max_batch_size": None, "params": None}
ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=BASIC, provider="descentlab")
