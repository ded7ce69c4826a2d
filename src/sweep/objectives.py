"""What a sweep optimizes: its directions, the objectives' names, what a job's return means, and
which objectives descentlab's job can return. The one owner of `hydra.sweeper.direction` and
`hydra.sweeper.objectives`: the Optuna sweeper (hydra_plugins/descentlab_sweeper) reads them here,
the check before a sweep starts (`src.sweep.trial.check_sweep`) and each job (`this_trial`) too.

A job returns a number (one direction) or one number per direction, as with hydra-optuna-sweeper.
`hydra.sweeper.objectives` names them (descentlab's job returns the named results; another app's
names are labels); unnamed, they are `value` or `value_0`, `value_1`, ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.errors import HydraException

DIRECTIONS = ("minimize", "maximize")
# What descentlab's job can return as an objective: the fit's numbers (hydra.sweeper.objectives names them).
RESULTS = ("best_val_loss", "test_loss", "wall_time", "epochs", "best_epoch", "param_error")


@dataclass(frozen=True)
class Objectives:
    directions: list[str]
    names: list[str]
    named: bool  # the user named them in hydra.sweeper.objectives

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    def describe(self) -> str:
        return ", ".join(f"{d} {n}" for d, n in zip(self.directions, self.names, strict=True))

    def values(self, returned: Any) -> tuple[list[float] | None, str | None]:
        """The job's return as one finite number per objective, or None and why not."""
        try:
            if self.multi or (isinstance(returned, Sequence) and not isinstance(returned, str)):
                values = [float(v) for v in returned]
            else:
                values = [float(returned)]
        except (TypeError, ValueError):
            return None, f"the job returned {returned!r}, not {self._expected()}"
        if len(values) != len(self.directions) or not all(map(math.isfinite, values)):
            return None, f"the job returned {returned!r}, not {self._expected()}"
        return values, None

    def _expected(self) -> str:
        if self.multi:
            return f"{len(self.directions)} finite numbers ({', '.join(self.names)})"
        return "a finite number"


def parse(direction: Any, objectives: Any) -> Objectives:
    """hydra.sweeper.direction and .objectives, checked; a bad value is one line naming the key."""
    given = list(direction) if _is_list(direction) else [direction]
    directions = [str(getattr(d, "name", d)) for d in given]  # hydra-optuna-sweeper's Direction enum
    if not directions or not set(directions) <= set(DIRECTIONS):
        raise HydraException(
            f"hydra.sweeper.direction={_show(direction)} is not allowed: "
            "minimize, maximize or a list of them, e.g. [minimize, minimize]"
        )
    if objectives is None:
        names = ["value"] if len(directions) == 1 else [f"value_{i}" for i in range(len(directions))]
        return Objectives(directions, names, named=False)
    names = [str(n) for n in objectives] if _is_list(objectives) else [str(objectives)]
    if len(names) != len(directions) or len(set(names)) != len(names) or not all(names):
        raise HydraException(
            f"hydra.sweeper.objectives={_show(objectives)} is not allowed: one distinct name per "
            f"direction ({len(directions)}: {_show(direction)})"
        )
    return Objectives(directions, names, named=True)


def job_results(objectives: Objectives) -> list[str]:
    """The fit's results descentlab's job returns for these objectives (unnamed: best_val_loss
    alone); a HydraException naming the key where it cannot return them."""
    if not objectives.named:
        if objectives.multi:
            raise HydraException(
                f"hydra.sweeper.direction has {len(objectives.directions)} entries: name as many "
                "objectives, e.g. hydra.sweeper.objectives=[best_val_loss,wall_time]; "
                f"available: {', '.join(RESULTS)}"
            )
        return ["best_val_loss"]
    unknown = [n for n in objectives.names if n not in RESULTS]
    if unknown:
        raise HydraException(
            f"hydra.sweeper.objectives: {', '.join(unknown)} is not an objective; "
            f"available: {', '.join(RESULTS)}"
        )
    return objectives.names


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _show(value: Any) -> str:
    if _is_list(value):
        return "[" + ", ".join(str(getattr(v, "name", v)) for v in value) + "]"
    return str(getattr(value, "name", value))
