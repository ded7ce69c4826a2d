"""A formula's syntax (data.formula), checked with the rest of the config: before torch is imported,
so a typo in a formula answers as fast as a typo in a key. What it means on the data (its columns,
missing values) is src/data/formula.py's."""

from __future__ import annotations

import re
from typing import Any

from src.errors import ConfigError

MAX_COLUMNS = 2000  # a dense design wider than this is refused (each Newton step solves k × k)


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


def terms(formula: str) -> list[str]:
    """The right-hand side's terms as formulaic writes them (`C(firm)`, `x1:x2`, `1`)."""
    from formulaic import Formula

    return [str(term) for term in Formula(formula).rhs]


def check_absorb(data: Any, model_target: str, cov: str | None) -> None:
    """data.absorb=<column>: the within transformation, valid for least squares only, on the full
    sample, with the fixed effects out of the formula; HC2/HC3 need the dummies' leverage."""
    column = data.get("absorb")
    if column is None:
        return
    where = f"data.absorb={column!r}"
    if data.get("formula") is None:
        raise ConfigError(
            f"{where} needs data.formula='y ~ x1 + x2' (the regressors besides the fixed effects)"
        )
    if model_target != "src.models.LinearRegression":
        raise ConfigError(
            f"{where}: absorbing fixed effects (the within transformation) is valid for model=linear "
            "only; a logit's fixed effects do not difference out: put C(...) in data.formula (at most "
            f"{MAX_COLUMNS} columns), or cluster on {column} without its dummies"
        )
    if data.get("train_prop") != 1.0 or data.get("val_prop") != 0.0:
        raise ConfigError(
            f"{where} absorbs the group means of the full sample: set data.train_prop=1.0 "
            "data.val_prop=0.0 (+experiment=estimate does)"
        )
    if cov in ("HC2", "HC3"):
        raise ConfigError(
            f"inference.cov={cov} needs each row's leverage in the design with the dummies of {column}; "
            f"with {where} choose classical, HC0, HC1 or cluster"
        )
    twice = [t for t in terms(data.formula) if re.fullmatch(rf"C\(\s*{re.escape(column)}\s*(,.*)?\)", t)]
    if twice:
        raise ConfigError(
            f"{where} and {twice[0]} in data.formula={data.formula!r} both take out the fixed effects of "
            f"{column}: give one (absorb them, or keep the dummies)"
        )
