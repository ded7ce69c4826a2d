"""Hydra sweep syntax → optuna distributions, and trial parameters → Hydra overrides.

interval(a, b)                 FloatDistribution(a, b)
int(interval(a, b))            IntDistribution(a, b)
tag(log, interval(a, b))       FloatDistribution(a, b, log=True)      (int(...) inside: IntDistribution)
range(a, b, s)                 IntDistribution(a, last, step=s)  — Hydra's stop is exclusive, so
                               `last` is the largest value below b; floats: FloatDistribution(step=s)
choice(x, y, ...) or x,y,...   CategoricalDistribution([x, y, ...])
shuffle(range(...))            CategoricalDistribution of the range's values
key=value                      fixed: passed to every job unchanged
"""

from __future__ import annotations

import re
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SearchSpaceError(HydraException):
    """A sweep parameter this sweeper cannot turn into an optuna distribution."""


def distribution(override: Override) -> BaseDistribution:
    """The optuna distribution of one sweep override, e.g. `optimizer.lr=tag(log, interval(1e-4, 1e-2))`."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = []
        for choice in override.sweep_iterator():
            if not isinstance(choice, str | int | float | bool):
                raise SearchSpaceError(f"{key}: a choice must be a str, int, float or bool, not {choice!r}")
            choices.append(choice)
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = [v for v in override.sweep_iterator() if isinstance(v, int | float)]
        if not values:
            raise SearchSpaceError(f"{override.input_line} is an empty range")
        assert value.step is not None
        low, high, step = min(values), max(values), abs(value.step)
        if all(isinstance(v, int) for v in values) and isinstance(step, int):
            return IntDistribution(int(low), int(high), step=step)
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):  # int(interval(...))
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SearchSpaceError(
        f"{override.input_line} is not supported; "
        "use interval, int(interval), tag(log, interval), range, choice or a fixed value"
    )


def parse(arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Split overrides into a search space (sweeps) and fixed overrides, each kept as typed."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
            fixed.pop(key, None)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
            space.pop(key, None)  # a later fixed value wins, as on Hydra's command line
    return space, fixed


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each discrete distribution, for optuna's GridSampler."""
    out: dict[str, list[Any]] = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            out[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            out[key] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise SearchSpaceError(f"{key}: the grid sampler needs choice or range, not {dist}")
    return out


_PLAIN = re.compile(r"[\w./:+-]+")  # a value Hydra's override grammar reads back unquoted


def override_value(value: Any) -> str:
    """A sampled value as the right-hand side of a Hydra override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)
