"""The rule vocabulary behind the config schemas (src/config/rules.py) and how the schemas use it.

The messages users see are in tests/test_bad_input.py; here, what each kind of rule accepts."""

from __future__ import annotations

import dataclasses
import math

import pytest

from src.config import schemas
from src.config.rules import bound, check, one_of
from src.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (">= 1", [1, 2, 10**20], [0, 0.999, -math.inf]),
        ("> 0", [1e-300, 3.0], [0.0, -1e-300]),
        ("in [0, 1)", [0.0, 0.5, 0.999999], [-1e-12, 1.0]),
        ("in (0, 1]", [1e-12, 1.0], [0.0, 1.0 + 1e-12]),
        ("in (0, 1)", [0.5], [0.0, 1.0]),
    ],
)
def test_a_bound_accepts_what_its_interval_holds_and_null(spec, inside, outside):
    rule = bound(spec)
    assert rule.text == f"must be {spec}"
    assert all(rule.ok(v) for v in [*inside, None])
    assert not any(rule.ok(v) for v in outside)


def test_one_of_names_its_choices():
    assert one_of(None, "armijo").text == "must be null or armijo"
    assert one_of("a", "b").text == "must be one of a, b"
    assert one_of("a", "b").ok("b") and not one_of("a", "b").ok(None)


def test_check_reports_list_items_by_index_and_relations_after_fields():
    with pytest.raises(ConfigError, match=r"^model\.hidden\[2\]=0 is not allowed: must be >= 1$"):
        check(schemas.MLPModelConf(hidden=[3, 4, 0]), "model")
    sgd = schemas.SGDConf(lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ConfigError, match=r"^optimizer\.momentum=0\.0 is not allowed: must be > 0 with"):
        check(sgd, "optimizer")
    check(schemas.SGDConf(lr=0.1, momentum=0.9, nesterov=True), "optimizer")


def every_schema() -> list[type]:
    return [cls for group in schemas.SCHEMAS.values() for cls in group.values()]


@pytest.mark.parametrize("schema", every_schema(), ids=lambda cls: cls.__name__)
def test_a_subclass_that_changes_a_default_keeps_the_fields_rules(schema):
    """A field re-declared with a plain default would drop its parent's rules without a word."""
    for f in dataclasses.fields(schema):
        for parent in schema.__mro__[1:]:
            inherited = getattr(parent, "__dataclass_fields__", {}).get(f.name)
            if inherited is not None:
                texts = [rule.text for rule in f.metadata.get("rules", ())]
                assert texts == [rule.text for rule in inherited.metadata.get("rules", ())], f.name


def test_every_yaml_choice_with_a_schema_is_registered():
    assert set(schemas.SCHEMAS) == {"optimizer", "schedule", "data", "model", "tracking"}
    assert schemas.SCHEMAS["optimizer"]["sgd"] is schemas.SGDConf
    assert schemas.SCHEMAS["tracking"]["none"] is schemas.TrackingConf
