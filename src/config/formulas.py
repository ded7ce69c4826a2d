"""A formula's syntax (data.formula), checked with the rest of the config: before torch is imported,
so a typo in a formula answers as fast as a typo in a key; and, from a CSV's first rows and its
weights column (pandas only), a column the formula names but the file lacks and weights that are
negative or missing (`check_file`, called by src/cli.py's precheck). What the formula means on all
the data (transformations, missing values) is src/data/formula.py's, which checks all of it again."""

from __future__ import annotations

import math
import re
import warnings
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


def unknown_column(message: str, where: str, source: str, columns: list[str]) -> ConfigError | None:
    """formulaic's error for a name the data lack, in our words; None for any other error."""
    missing = re.search(r"`([^`]+)` is not present in the dataset", message)
    if missing is None:
        return None
    return ConfigError(
        f"{where}: {missing.group(1)!r} is not a column of {source}; available: {', '.join(columns)}"
    )


def check_file(data: Any, cluster: str | None) -> None:
    """A CSV's formula columns and weights, from its first rows and the weights' own column, before
    torch is imported; anything this cannot judge is left to the run, which checks everything."""
    from hydra.utils import to_absolute_path

    path, formula, weights, absorb = (
        data.get("path"),
        data.get("formula"),
        data.get("weights"),
        data.get("absorb"),
    )
    if path is None or not str(path).lower().endswith(".csv") or (formula is None and weights is None):
        return
    import pandas as pd

    file = to_absolute_path(str(path))
    source = f"data.path={file}"
    try:
        head = pd.read_csv(file, nrows=100)
    except Exception:  # no such file, not a CSV: the run says which
        return
    columns = [str(c) for c in head.columns]
    if formula is not None:
        check_formula_columns(formula, head, source, columns)
    for key, column in (("inference.cluster", cluster), ("data.absorb", absorb)):
        if column is not None and column not in columns:
            raise ConfigError(
                f"{key}={column!r} is not a column of {source}; available: {', '.join(columns)}"
            )
    if weights is not None:
        labels = [cluster, absorb] if formula is not None else None
        check_weight_column(file, source, columns, weights, labels, data.get("drop_missing", False))


def check_formula_columns(formula: str, head: Any, source: str, columns: list[str]) -> None:
    """The formula evaluated on the file's first rows: only a name the file lacks is judged here."""
    from formulaic import model_matrix
    from formulaic.errors import FormulaicError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_matrix(formula, head, na_action="ignore")
    except FormulaicError as exc:
        error = unknown_column(one_line(str(exc)), f"data.formula={formula!r}", source, columns)
        if error is not None:
            raise error from None
    except Exception:  # a transformation failing on these rows: the run judges all of them
        return


def check_weight_column(
    file: str, source: str, columns: list[str], weights: str, labels: list[str | None] | None, drop: bool
) -> None:
    """data.weights: a column of the file, present and finite in each row (unless drop_missing, or,
    without a formula, where the run counts every column's gaps together), >= 0, not all 0. `labels`:
    the formula's cluster and absorb columns, whose gaps the run counts with the weights'."""
    import pandas as pd

    if weights not in columns:
        raise ConfigError(
            f"data.weights={weights!r} is not a column of {source}; available: {', '.join(columns)}"
        )
    named = [c for c in (labels or []) if c is not None and c in columns] + [weights]
    frame = pd.read_csv(file, usecols=named)
    if not pd.api.types.is_numeric_dtype(frame[weights]):
        return
    w = frame[weights].to_numpy(dtype="float64", na_value=math.nan)
    bad = ~(pd.Series(w).abs() < math.inf) | frame[named[:-1]].isna().any(axis=1)
    if drop or (bad.any() and labels is None):
        return
    if bad.any():
        raise ConfigError(
            f"{source} has {int(bad.sum())} rows with a missing or infinite value in "
            f"{' or '.join(map(repr, named))}; clean them, or set data.drop_missing=true to drop those rows"
        )
    if (w < 0).any():
        raise ConfigError(
            f"data.weights={weights!r}: {int((w < 0).sum())} rows of {source} have a negative weight "
            f"(e.g. {float(w[w < 0][0]):g}); weights must be >= 0"
        )
    if not (w > 0).any():
        raise ConfigError(f"data.weights={weights!r}: every weight is 0; at least one must be > 0")
