"""A formula's syntax (data.formula), checked with the rest of the config: before torch is imported,
so a typo in a formula answers as fast as a typo in a key. What it means on the data (its columns,
missing values) is src/data/formula.py's."""

from __future__ import annotations

import re

from src.errors import ConfigError


def one_line(text: str) -> str:
    """formulaic's message without its colours and markers, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m|[⧛⧚]", "", text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def parsed(formula: str) -> tuple[str, bool]:
    """The left-hand side and whether the right-hand side has an intercept; a syntax error, or a
    formula without exactly one left-hand side, is a ConfigError."""
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    where = f"data.formula={formula!r}"
    try:
        spec = Formula(formula)
    except FormulaicError as exc:
        raise ConfigError(f"{where} is not a formula: {one_line(str(exc))}") from None
    if not hasattr(spec, "lhs") or len(spec.lhs) != 1:
        raise ConfigError(
            f"{where} needs one column to explain on the left of `~`, e.g. 'y ~ x1 + C(region)'"
        )
    (target,) = (str(term) for term in spec.lhs)
    terms = [str(term) for term in spec.rhs]
    if not terms:
        raise ConfigError(
            f"{where} has no regressors: write at least one term after `~` "
            "(a column, np.log(x), I(x**2), C(group), x1:x2; `1` for the intercept alone)"
        )
    return target, "1" in terms
