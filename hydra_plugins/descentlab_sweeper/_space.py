"""Hydra sweep syntax → optuna distributions, and trial parameters → Hydra overrides.

interval(a, b)                 FloatDistribution(a, b)
int(interval(a, b))            IntDistribution(a, b)
tag(log, interval(a, b))       FloatDistribution(a, b, log=True)      (int(...) inside: IntDistribution)
range(a, b, s)                 hydra/sweeper=optuna (hydra-optuna-sweeper's meaning): the stop is
                               included, IntDistribution(a, b, step=s), floats FloatDistribution(step=s);
                               hydra/sweeper=descentlab_optuna: Hydra's exclusive stop, `b` becomes
                               the largest value below it
choice(x, y, ...) or x,y,...   CategoricalDistribution([x, y, ...])
shuffle(range(...))            CategoricalDistribution of the range's values (Hydra's, stop excluded)
key=value, ~key, +key=value    fixed: passed to every job unchanged

The grid sampler walks what Hydra's basic sweeper would (a range's stop excluded under both names,
as hydra-optuna-sweeper's grid does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass
class Space:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key → the override as typed
    discrete: dict[str, list[Any]] = field(default_factory=dict)  # Hydra's own values of each sweep

    def grid(self) -> dict[str, list[Any]]:
        """Every value of each parameter, for optuna's GridSampler."""
        for key, dist in self.distributions.items():
            if key not in self.discrete:
                raise SearchSpaceError(f"{key}: the grid sampler needs choice or range, not {dist}")
        return dict(self.discrete)

    def check_point(self, point: Mapping[str, Any], where: str, extendable: bool) -> dict[str, Any]:
        """A point given by the user (hydra.sweeper.enqueue) as params of this space."""
        params = {}
        for key, value in point.items():
            dist = self.distributions.get(str(key))
            if dist is None:
                if extendable:  # a parameter custom_search_space will suggest
                    params[str(key)] = value
                    continue
                raise SearchSpaceError(
                    f"{where}: {key} is not a parameter of this sweep; its parameters: "
                    f"{', '.join(self.distributions) or 'none'}"
                )
            if not contains(dist, value):
                raise SearchSpaceError(f"{where}: {key}={value!r} is outside {key}'s space {dist}")
            params[str(key)] = value
        return params


def contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def distribution(override: Override, range_stop_included: bool) -> BaseDistribution:
    """The optuna distribution of one sweep override, e.g. `optimizer.lr=tag(log, interval(1e-4, 1e-2))`."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(hydra_values(override))
    if isinstance(value, RangeSweep):
        values = hydra_values(override)
        assert value.start is not None and value.stop is not None and value.step is not None
        if range_stop_included:  # hydra-optuna-sweeper: range(a, b, s) → [a, b] in steps of s
            start, stop, step = value.start, value.stop, value.step
            if not step > 0 or stop < start:
                raise SearchSpaceError(
                    f"{override.input_line}: hydra/sweeper=optuna needs start <= stop and a step > 0"
                )
            if all(isinstance(v, int) for v in (start, stop, step)):
                return IntDistribution(int(start), int(stop), step=int(step))
            return FloatDistribution(float(start), float(stop), step=float(step))
        if not values:
            raise SearchSpaceError(f"{override.input_line} is an empty range")
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
        f"use interval, int(interval), tag(log, interval), range, choice or a fixed value for {key}"
    )


def hydra_values(override: Override) -> list[Any]:
    """The values Hydra's basic sweeper would run, for choice, range and shuffle(range)."""
    values = []
    for choice in override.sweep_iterator():
        if not isinstance(choice, str | int | float | bool):
            key = override.get_key_element()
            raise SearchSpaceError(f"{key}: a choice must be a str, int, float or bool, not {choice!r}")
        values.append(choice)
    return values


def parse(arguments: list[str], range_stop_included: bool) -> Space:
    """Split overrides into a search space (sweeps) and fixed overrides, each kept as typed."""
    space = Space()
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        for part in (space.distributions, space.fixed, space.discrete):
            part.pop(key, None)  # a later word wins, as on Hydra's command line
        if override.is_sweep_override():
            dist = space.distributions[key] = distribution(override, range_stop_included)
            if isinstance(dist, CategoricalDistribution):  # shuffle() drew its order once
                space.discrete[key] = list(dist.choices)
            elif not override.is_interval_sweep():
                space.discrete[key] = hydra_values(override)
        else:
            space.fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space


_PLAIN = re.compile(r"[A-Za-z0-9_./:+-]+")  # ASCII only: a Unicode letter is no token of Hydra's grammar
_PARSER = OverridesParser.create()


def override_value(value: Any) -> str:
    """A sampled value as the right-hand side of a Hydra override: quoted unless it is a plain ASCII
    token that Hydra reads back as the same value (so 'true', '1' or 'étude' stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and _reads_back(value) == value:
            return value
        # Hydra reads a backslash literally except in a run before a quote or the string's end.
        escaped = re.sub(r"(\\+)(?='|$)", r"\1\1", value).replace("'", "\\'")
        return f"'{escaped}'"
    return str(value)


def _reads_back(text: str) -> Any:
    try:
        (parsed,) = _PARSER.parse_overrides([f"k={text}"])
    except HydraException:
        return None
    return parsed.value()
