"""A design from a formula: `data.formula='y ~ np.log(income) + age + I(age**2) + C(region) + x1:x2'`.

The formula is read by formulaic, which writes the terms as patsy (and so statsmodels' formula API)
does: `Intercept`, `np.log(income)`, `I(age ** 2)`, `C(region)[T.south]` (treatment dummies against
the first level, the reference), `x1:x2`. `- 1` or `+ 0` drops the intercept. Rows with a missing
value in a column the formula uses, or a term that is NaN there (np.log of a negative), are refused
unless data.drop_missing=true drops them; a term that is ±inf (np.log(0)) is always refused.

Formulas are Python expressions evaluated on the table's columns, as in patsy: run only your own.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from src.config.formulas import MAX_COLUMNS, one_line, parsed, unknown_column
from src.data.splits import Data, Standardization, split
from src.data.tables import check_columns, check_groups, check_rank, check_weights, not_numeric, scaled
from src.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
INTERCEPT = "Intercept"  # the intercept's name in the table, as formulaic and patsy write it


@dataclass(frozen=True)
class Design:
    """y and the columns of X from a formula (the intercept apart), on the rows kept."""

    target: str  # the left-hand side as written, e.g. `np.log(wage)`
    y: Tensor  # (n,) float64
    X: Tensor  # (n, k) float64, without the intercept's column
    names: list[str]  # X's column names, as formulaic writes them
    intercept: bool  # whether the formula has one
    rows: list[int]  # positions, in the table, of the rows kept


def design(frame: pd.DataFrame, source: str, formula: str, drop_missing: bool) -> Design:
    """Evaluate `formula` on `frame`: the design, the names of its columns, the rows kept."""
    import numpy as np
    from formulaic import model_matrix
    from formulaic.errors import FormulaicError

    target, intercept = parsed(formula)
    where = f"data.formula={formula!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # np.log(0): the inf is refused below
            matrices = model_matrix(formula, frame, na_action="drop")
    except FormulaicError as exc:
        raise evaluation_error(frame, source, where, exc) from None
    lhs, rhs = matrices.lhs, matrices.rhs
    if lhs.shape[1] != 1:
        raise ConfigError(
            f"{where}: the left-hand side {target!r} must be one numeric column, "
            f"but it makes {lhs.shape[1]} ({', '.join(map(str, lhs.columns))})"
        )
    dropped = len(frame) - len(rhs)
    if dropped and not drop_missing:
        used = sorted(c for c in matrices.model_spec.required_variables | {target} if c in frame.columns)
        counts = ", ".join(f"{int(frame[c].isna().sum())} in {c!r}" for c in used if frame[c].isna().any())
        raise ConfigError(
            f"{source}: {dropped} of {len(frame)} rows have a missing value in the formula's columns or "
            f"terms ({counts or 'NaN from a transformation such as np.log of a negative'}); "
            "clean them, or set data.drop_missing=true to drop those rows"
        )
    names = [str(c) for c in rhs.columns]
    values = np.asarray(rhs, dtype="float64")
    check_finite(values, names, where)
    check_width(values, names, where, len(frame))
    keep = [i for i, name in enumerate(names) if name != INTERCEPT]
    y = torch.from_numpy(np.asarray(lhs, dtype="float64")[:, 0].copy())
    check_finite(y[:, None].numpy(), [target], where)
    rows = frame.index.get_indexer(rhs.index).tolist()
    return Design(
        target, y, torch.from_numpy(values[:, keep].copy()), [names[i] for i in keep], intercept, rows
    )


def evaluation_error(frame: pd.DataFrame, source: str, where: str, exc: Exception) -> ConfigError:
    """A formula that does not evaluate on the table: most often a column it lacks."""
    message = one_line(str(exc))
    missing = unknown_column(message, where, source, list(map(str, frame.columns)))
    return missing or ConfigError(f"{where} cannot be evaluated on {source}: {message}")


def check_finite(values: object, names: list[str], where: str) -> None:
    import numpy as np

    bad = ~np.isfinite(values)  # type: ignore[call-overload]
    if bad.any():
        columns = [f"{int(k)} in {name!r}" for name, k in zip(names, bad.sum(0), strict=True) if k]
        raise ConfigError(
            f"{where} gives infinite values ({', '.join(columns)}; e.g. np.log of 0): "
            "transform the column differently, or leave those rows out of the file"
        )


def check_width(values: object, names: list[str], where: str, rows: int) -> None:
    """Refuse a design too wide to fit densely, naming the term that makes it so."""
    width = len(names)
    if width <= MAX_COLUMNS:
        return
    counts: dict[str, int] = {}
    for name in names:
        term = name.split("[", 1)[0]
        counts[term] = counts.get(term, 0) + 1
    term, count = max(counts.items(), key=lambda item: item[1])
    column = term[2:-1].split(",")[0].strip() if term.startswith("C(") else "<column>"
    raise ConfigError(
        f"{where} makes {width} columns ({term} alone {count}; {rows} rows): more than {MAX_COLUMNS}, "
        f"too wide for a dense fit here; model=linear: take {term} out of the formula and absorb it, "
        f"data.absorb={column} (the within transformation); model=logistic: cluster on it without "
        f"dummies (inference.cov=cluster inference.cluster={column}), or aggregate the groups"
    )


def from_formula(
    frame: pd.DataFrame,
    source: str,
    formula: str,
    drop_missing: bool,
    cluster: str | None,
    weights: str | None,
    absorb: str | None = None,
    *,
    target: str | None,
    features: list[str] | None,
    intercept: bool | None,
    standardize: bool,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
) -> Data:
    """`from_frame` for a formula: the design, then the split, standardization and checks as there;
    the intercept, if the formula has one, is the first column, `Intercept`. With `absorb`
    (data.absorb), y and X are demeaned within its groups first, and there is no intercept."""
    where = f"data.formula={formula!r}"
    check_columns(list(frame.columns), source)
    if features is not None:
        raise ConfigError("data.features and data.formula both choose the regressors: give one")
    frame = frame.reset_index(drop=True)
    made = design(frame, source, formula, drop_missing)
    check_agrees(made, where, target, intercept)
    named = {"inference.cluster": cluster, "data.absorb": absorb, "data.weights": weights}
    y, X, labels, w = extra_columns(frame.iloc[made.rows], source, made, named, drop_missing)
    fixed = labels.get("data.absorb")
    if fixed is not None:
        X, y = within(X, y, fixed, w)
    data = split(X, y, train_prop, val_prop, generator, groups=labels.get("inference.cluster"), weights=w)
    check_groups(data, cluster)
    has_intercept = made.intercept and fixed is None
    names = [INTERCEPT] * has_intercept + made.names
    if has_intercept:
        data, scaling = scaled(data, made.names, standardize, True)
    else:
        data, scaling = scaled_only(data, made.names, standardize)
    try:
        check_rank(data.train.X, names)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("from data.features", f"from {where}")) from None
    absorbed = None if fixed is None else (str(absorb), len(fixed.unique()))
    rows = f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test rows"
    scaled_as = " (standardized)" * standardize + f"; weights {weights}" * bool(weights)
    scaled_as += f"; {absorbed[1]} fixed effects of {absorb} absorbed" if absorbed else ""
    log.info("%s: %s; %s; X = %s%s", source, rows, formula, ", ".join(names), scaled_as)
    return replace(data, names=tuple(names), standardization=scaling, weighted_by=weights, absorbed=absorbed)


def check_agrees(made: Design, where: str, target: str | None, intercept: bool | None) -> None:
    """data.target and data.intercept, where given, must say what the formula says."""
    if target is not None and target != made.target:
        raise ConfigError(
            f"data.target={target!r} disagrees with {where}, which explains {made.target!r}; "
            "leave data.target unset (null)"
        )
    if intercept is not None and intercept != made.intercept:
        has = "has an intercept (write `- 1` to drop it)" if made.intercept else "drops the intercept"
        raise ConfigError(
            f"data.intercept={str(intercept).lower()} disagrees with {where}, which {has}; "
            "leave data.intercept unset (null): the formula decides"
        )


def within(X: Tensor, y: Tensor, groups: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor]:
    """The within transformation: X and y minus their (weighted) means in each group. By
    Frisch–Waugh–Lovell, least squares on the result gives the slopes, residuals and every sandwich
    of least squares with one dummy per group; only the degrees of freedom must count the groups."""
    f = torch.ones_like(y) if w is None else w
    size = int(groups.max()) + 1
    total = torch.zeros(size, dtype=y.dtype).index_add_(0, groups, f).clamp(min=torch.finfo(y.dtype).tiny)
    XY = torch.cat([X, y[:, None]], dim=1)
    means = (
        torch.zeros(size, XY.shape[1], dtype=y.dtype).index_add_(0, groups, XY * f[:, None]) / total[:, None]
    )
    demeaned = XY - means[groups]
    return demeaned[:, :-1].contiguous(), demeaned[:, -1].contiguous()


def extra_columns(
    frame: pd.DataFrame, source: str, made: Design, named: dict[str, str | None], drop: bool
) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor | None]:
    """y and X with the label columns (inference.cluster, data.absorb) and the weights (data.weights)
    of the same rows, by key; rows missing any are dropped (data.drop_missing) or refused."""
    import pandas as pd

    columns = list(frame.columns)
    for key, column in named.items():
        if column is not None and column not in columns:
            raise ConfigError(
                f"{key}={column!r} is not a column of {source}; available: {', '.join(columns)}"
            )
    keep = torch.ones(len(frame), dtype=torch.bool)
    labels: dict[str, Tensor] = {}
    weights, w = named.get("data.weights"), None
    for key, column in named.items():
        if column is None or key == "data.weights":
            continue
        labels[key] = torch.from_numpy(pd.factorize(frame[column])[0].astype("int64"))
        keep &= labels[key] >= 0
    if weights is not None:
        if not pd.api.types.is_numeric_dtype(frame[weights]):
            raise not_numeric(frame, source, weights, "")
        w = torch.from_numpy(frame[weights].to_numpy(dtype="float64", na_value=math.nan, copy=True))
        keep &= torch.isfinite(w)
    if not bool(keep.all()):
        missing = int((~keep).sum())
        named_ = " or ".join(repr(c) for key, c in named.items() if c is not None)
        if not drop:
            raise ConfigError(
                f"{source} has {missing} rows with a missing or infinite value in {named_}; "
                "clean them, or set data.drop_missing=true to drop those rows"
            )
        log.info("%s: dropped %d rows with a missing value in %s", source, missing, named_)
    if w is not None:
        w = check_weights(w[keep], str(weights), source)
    return made.y[keep], made.X[keep], {key: v[keep] for key, v in labels.items()}, w


def scaled_only(data: Data, names: list[str], standardize: bool) -> tuple[Data, Standardization | None]:
    """Without an intercept, standardizing scales each column by its training std but does not
    centre it: centring would add an intercept the formula left out."""
    if not standardize:
        return data, None
    std = torch.std(data.train.X, dim=0, correction=0)
    constant = [c for c, s in zip(names, std.tolist(), strict=True) if s == 0]
    if constant:
        raise ConfigError(
            f"data.standardize=true, but {', '.join(map(repr, constant))} is constant on the training "
            "split; change data.formula or set data.standardize=false"
        )
    data = data.map_features(lambda X: X / std)
    return data, Standardization(torch.zeros_like(std), std)
