"""Data from a table (src/data/files.py reads it): `from_frame` checks every column and value before
anything is trained or logged, splits the rows, standardizes and prepends the intercept."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from src.data.splits import Data, Standardization, split
from src.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def check_columns(names: list[str], source: str) -> None:
    """Refuse repeated column names, which would make `data.target` or a feature ambiguous."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"{source} has repeated column names: {', '.join(map(repr, repeated))}; rename them"
        )


def separator_hint(columns: list[str]) -> str:
    """Why a column is missing when the file's separator is not a comma: the header is one column."""
    for name, sep in ((";", ";"), ("tab", "\t")):
        if any(sep in column for column in columns):
            return f" (the header holds {name}s: data.path must be comma-separated; save it with commas)"
    return ""


def from_frame(
    frame: pd.DataFrame,
    source: str,
    target: str,
    features: list[str] | None,
    intercept: bool | None,
    standardize: bool,
    drop_missing: bool,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
    cluster: str | None = None,
    weights: str | None = None,
) -> Data:
    """Check the columns and values, split the rows, then standardize (on training statistics only)
    and prepend the intercept column: X = [1, x_1, …, x_M] in the order of `features`. `cluster`
    (inference.cluster) names a column whose values group the rows for clustered standard errors;
    `weights` (data.weights) one of row weights. (A formula's design: src/data/formula.py.)"""
    frame = frame.set_axis([str(c) for c in frame.columns], axis="columns")
    intercept = True if intercept is None else intercept
    check_table(frame, source, target, cluster, weights)
    features = chosen_features(frame, source, target, features, cluster, weights)
    used = [target, *features, *([weights] if weights else [])]
    values, groups = finite_rows(frame, source, used, cluster, drop_missing)
    w = check_weights(values[:, -1], weights, source) if weights else None
    X = values[:, 1 : 1 + len(features)]
    data = split(X, values[:, 0], train_prop, val_prop, generator, groups=groups, weights=w)
    check_groups(data, cluster)
    names = ["const"] * intercept + features
    data, scaling = scaled(data, features, standardize, intercept)
    check_rank(data.train.X, names)
    log.info(
        "%s: %d train / %d val / %d test rows; y = %s; X = %s%s",
        source,
        len(data.train),
        len(data.val),
        len(data.test),
        target,
        ", ".join(names),
        (" (standardized)" if intercept else " (scaled, not centred: no intercept)") * standardize,
    )
    return replace(data, names=tuple(names), standardization=scaling, weighted_by=weights)


def check_groups(data: Data, cluster: str | None) -> None:
    if data.train.groups is not None and len(data.train.groups.unique()) < 2:
        raise ConfigError(
            f"inference.cluster={cluster!r} puts all {len(data.train)} training rows in one group; "
            "clustered standard errors need at least 2 groups: choose another column or inference.cov"
        )


def check_weights(w: Tensor, column: str, source: str) -> Tensor:
    """data.weights' values (finite already): each >= 0, and not all 0."""
    negative = int((w < 0).sum())
    if negative:
        raise ConfigError(
            f"data.weights={column!r}: {negative} rows of {source} have a negative weight "
            f"(e.g. {float(w[w < 0][0]):g}); weights must be >= 0"
        )
    if not bool((w > 0).any()):
        raise ConfigError(f"data.weights={column!r}: every weight is 0; at least one must be > 0")
    return w


def check_table(
    frame: pd.DataFrame, source: str, target: str, cluster: str | None, weights: str | None = None
) -> None:
    """Refuse repeated column names, an empty table, and a target, cluster or weights column it lacks."""
    columns = list(frame.columns)
    check_columns(columns, source)
    if len(frame) == 0:
        raise ConfigError(f"{source} has no rows (columns: {', '.join(columns) or 'none'})")
    available = f"available: {', '.join(columns)}"
    if target not in columns:
        raise ConfigError(
            f"data.target={target!r} is not a column of {source}; {available}{separator_hint(columns)}"
        )
    if cluster is not None and cluster not in columns:
        raise ConfigError(f"inference.cluster={cluster!r} is not a column of {source}; {available}")
    if weights is not None and weights not in columns:
        raise ConfigError(f"data.weights={weights!r} is not a column of {source}; {available}")


def chosen_features(
    frame: pd.DataFrame,
    source: str,
    target: str,
    features: list[str] | None,
    cluster: str | None,
    weights: str | None = None,
) -> list[str]:
    """The feature columns: those named (checked), or null for every numeric one but the target
    and the cluster and weights columns."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    columns = list(frame.columns)
    available = f"available: {', '.join(columns)}"

    def numeric(column: str) -> bool:
        return is_numeric_dtype(frame[column]) or is_bool_dtype(frame[column])

    if features is None:
        features = [c for c in columns if c not in (target, cluster, weights) and numeric(c)]
        skipped = [c for c in columns if c not in (target, cluster, weights) and not numeric(c)]
        if skipped:
            log.info("%s: leaving out non-numeric columns %s", source, ", ".join(skipped))
        if not features:
            raise ConfigError(f"{source} has no numeric column besides data.target={target!r}; {available}")
    if not features:
        raise ConfigError(
            "data.features=[] is not allowed: name at least one column, or null for all numeric ones"
        )
    unknown = [c for c in features if c not in columns]
    if unknown:
        raise ConfigError(
            f"data.features: {', '.join(map(repr, unknown))} not a column of {source}; {available}"
            + separator_hint(columns)
        )
    if target in features:
        raise ConfigError(f"data.features contains the target {target!r}; leave it out")
    twice = sorted({c for c in features if features.count(c) > 1})
    if twice:
        raise ConfigError(
            f"data.features lists {', '.join(map(repr, twice))} more than once: the design would be "
            "singular; drop the repeats"
        )
    for column in [target, *features, *([weights] if weights else [])]:
        if not numeric(column):
            raise not_numeric(frame, source, column, target)
    return features


def not_numeric(frame: pd.DataFrame, source: str, column: str, target: str) -> ConfigError:
    """The error for a target or feature column that does not hold numbers, with an example value."""
    example = frame[column].dropna().iloc[0] if frame[column].notna().any() else None
    fix = "choose a numeric data.target" if column == target else "leave it out of data.features"
    return ConfigError(
        f"column {column!r} of {source} is not numeric (dtype {frame[column].dtype}, "
        f"e.g. {example!r}); {fix} or encode it as numbers"
    )


def finite_rows(
    frame: pd.DataFrame, source: str, used: list[str], cluster: str | None, drop_missing: bool
) -> tuple[Tensor, Tensor | None]:
    """The `used` columns as float64 and the cluster labels as group numbers, for the rows with
    every value present and finite (refusing others unless `drop_missing`)."""
    import pandas as pd

    values = torch.from_numpy(frame[used].to_numpy(dtype="float64", na_value=math.nan))
    bad = ~torch.isfinite(values)
    codes = None
    if cluster is not None:  # the group labels may be of any type; pandas numbers them (-1: missing)
        codes = torch.from_numpy(pd.factorize(frame[cluster])[0].astype("int64"))
        bad = torch.cat([bad, (codes < 0)[:, None]], dim=1)
        used = [*used, cluster]
    if not bad.any():
        return values, codes
    if not drop_missing:
        counts = ", ".join(f"{int(k)} in {c!r}" for c, k in zip(used, bad.sum(0), strict=True) if k)
        raise ConfigError(
            f"{source} has missing or infinite values ({counts}); "
            "clean them, or set data.drop_missing=true to drop those rows"
        )
    keep = ~bad.any(1)
    log.info(
        "%s: dropped %d of %d rows with missing or infinite values", source, int((~keep).sum()), len(keep)
    )
    return values[keep], None if codes is None else codes[keep]


def scaled(
    data: Data, features: list[str], standardize: bool, intercept: bool
) -> tuple[Data, Standardization | None]:
    """Standardize X on the training split's statistics (if asked), then prepend the intercept.

    With an intercept each feature is centred and scaled, (x − m) / s; without one (a model through
    the origin) it is only scaled, x / √mean(x²): centring would put the intercept back, since
    θ·(x − m) = θ·x − θ·m."""
    dtype = data.train.X.dtype
    mean, std = torch.zeros(len(features), dtype=dtype), torch.ones(len(features), dtype=dtype)
    if standardize:
        if intercept:
            std, mean = torch.std_mean(data.train.X, dim=0, correction=0)
        else:
            std = data.train.X.pow(2).mean(0).sqrt()
        constant = [c for c, s in zip(features, std.tolist(), strict=True) if s == 0]
        if constant:
            kind = "constant" if intercept else "zero"
            raise ConfigError(
                f"data.standardize=true, but {', '.join(map(repr, constant))} is {kind} on the training "
                "split; leave it out of data.features or set data.standardize=false"
            )
        data = data.map_features(lambda X: (X - mean) / std)
        for column, m, s in zip(features, mean.tolist(), std.tolist(), strict=True):
            log.info("standardized %s = (%s - %.17g) / %.17g", column, column, m, s)
    if intercept:
        data = data.map_features(lambda X: torch.cat([torch.ones(len(X), 1, dtype=X.dtype), X], dim=1))
        mean, std = torch.cat([mean.new_zeros(1), mean]), torch.cat([std.new_ones(1), std])
    return data, Standardization(mean, std) if standardize else None


def check_rank(X: Tensor, names: list[str]) -> None:
    """Refuse a design whose columns are linearly dependent on the training split (no unique
    estimate), naming the columns that are combinations of earlier ones. Columns are scaled to unit
    length first, so badly scaled but independent columns (data in natural units) pass."""
    norms = torch.linalg.vector_norm(X, dim=0)
    Z = X / torch.where(norms > 0, norms, 1)
    tolerance = max(Z.shape) * torch.finfo(Z.dtype).eps

    def rank(columns: list[int]) -> int:
        if not columns:
            return 0
        s = torch.linalg.svdvals(Z[:, columns])
        return int((s > tolerance * max(float(s[0]), 1.0)).sum())

    if rank(list(range(Z.shape[1]))) == Z.shape[1]:
        return  # the usual case: one SVD
    kept: list[int] = []
    redundant: list[str] = []
    for j in range(Z.shape[1]):
        if float(norms[j]) > 0 and rank([*kept, j]) > len(kept):
            kept.append(j)
        else:
            redundant.append(names[j])
    if redundant:
        raise ConfigError(
            f"the design is singular on the training split ({len(X)} rows, rank {len(kept)} of "
            f"{Z.shape[1]} columns): {', '.join(map(repr, redundant))} "
            f"{'is a linear combination' if len(redundant) == 1 else 'are linear combinations'} of "
            f"{', '.join(map(repr, (names[j] for j in kept)))}; drop "
            f"{'it' if len(redundant) == 1 else 'them'} from data.features"
        )
