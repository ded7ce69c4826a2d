"""Declarative checks for config schemas: each field names its rules (`checked(default, rule, ...)`),
a schema names the rules between its fields (`relations`), and `check` applies them all, raising a
ConfigError that names the key, its value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from src.errors import ConfigError


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {rule}")


@dataclass(frozen=True)
class Rule:
    """What a field allows: `ok(value)`, else the message says `text`; `each`: every item of a list,
    reported as key[i]."""

    ok: Callable[[Any], bool]
    text: str
    each: bool = False


def bound(spec: str, note: str = "", *, each: bool = False) -> Rule:
    """A range as the message writes it: '>= 1', '> 0', 'in [0, 1)', 'in (0, 1]'. Null passes: the
    field's type already says whether it may be null."""
    if spec.startswith("in "):
        low, high = (float(x) for x in spec[4:-1].split(", "))
        above = operator.le if spec[3] == "[" else operator.lt
        below = operator.le if spec[-1] == "]" else operator.lt
    else:
        op, limit = spec.split()
        low, high = float(limit), math.inf
        above, below = (operator.le if op == ">=" else operator.lt), operator.lt
    return Rule(lambda v: v is None or (above(low, v) and below(v, high)), f"must be {spec}{note}", each)


def one_of(*allowed: str | None) -> Rule:
    names = ", ".join(a for a in allowed if a is not None)
    return Rule(lambda v: v in allowed, f"must be {'null or' if None in allowed else 'one of'} {names}")


def checked(default: Any, *rules: Rule) -> Any:
    """A field with its default and the rules its value must meet (`check` reads them). A subclass
    that changes the default re-declares the field, rules included (tests/test_config.py checks)."""
    if isinstance(default, list):
        return field(default_factory=default.copy, metadata={"rules": rules})
    return field(default=default, metadata={"rules": rules})


class Checked:
    def relations(self) -> Iterable[tuple[bool, str, str]]:
        """Rules between fields, each as (holds, the field it is reported on, what is allowed)."""
        return ()


def check(node: Checked, key: str) -> None:
    """Every rule of a schema: each field's own first, in field order, then the relations."""
    for f in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        for rule in f.metadata.get("rules", ()):
            for i, item in enumerate(value) if rule.each else [(None, value)]:
                name = f"{key}.{f.name}" if i is None else f"{key}.{f.name}[{i}]"
                require(rule.ok(item), name, item, rule.text)
    for ok, name, text in node.relations():
        require(ok, f"{key}.{name}", getattr(node, name), text)


def numbers(node: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """Every float in a config container, with its dotted key (list items as key[i])."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numbers(v, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node
