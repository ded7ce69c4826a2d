"""Data sources and the train / validation / test split.

A data source is a Hydra `_target_` that takes its own options plus the split proportions and a
seeded torch.Generator, and returns `Data`. Everything is generated (or read) in float64 and cast
once, so a float32 and a float64 run see the same numbers.

Simulated: `simulate_linear` (the lecture's), `simulate_ill_conditioned`, `simulate_polynomial`,
`simulate_logistic`, `simulate_nonlinear`. Tables: `load_file` (CSV or Parquet) and `load_statsmodels`
(a data set statsmodels ships), both through `from_frame`, which checks every column and value
before anything is trained or logged.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from src.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    X: Tensor  # (n, features)
    y: Tensor  # (n,)
    groups: Tensor | None = None  # (n,) integer cluster labels, where inference.cluster names a column

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass(frozen=True)
class Standardization:
    """X = (X_data − mean) / std column by column, from the training split (the intercept: 0 and 1):
    what maps estimates back to the data's own units (src/estimation/inference.py)."""

    mean: Tensor  # float64, one per column of X
    std: Tensor


@dataclass(frozen=True)
class Data:
    train: Split
    val: Split  # may be empty (val_prop = 0): the loop then monitors train loss
    test: Split  # may be empty (train_prop + val_prop = 1): no test_loss
    theta: Tensor | None = None  # the true coefficients, where the data are simulated
    names: tuple[str, ...] = ()  # X's columns: `const`, the table's columns; x1..xM where unnamed
    standardization: Standardization | None = None  # None: X is in the data's own units

    @property
    def n_features(self) -> int:
        return self.train.X.shape[1]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.names or tuple(f"x{j + 1}" for j in range(self.n_features))

    def splits(self) -> tuple[Split, Split, Split]:
        return self.train, self.val, self.test

    def to(self, *, dtype: torch.dtype, device: torch.device | str = "cpu") -> Data:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        train, val, test = (replace(s, X=move(s.X), y=move(s.y)) for s in self.splits())
        theta = None if self.theta is None else move(self.theta)
        return replace(self, train=train, val=val, test=test, theta=theta)

    def map_features(self, f: Callable[[Tensor], Tensor]) -> Data:
        """The same rows with f applied to each split's X."""
        train, val, test = (replace(s, X=f(s.X)) for s in self.splits())
        return replace(self, train=train, val=val, test=test)


def split_sizes(n: int, train_prop: float, val_prop: float) -> tuple[int, int, int]:
    """Rows in train, validation and test. Validation or test may be empty (full-sample estimation:
    train_prop=1); ConfigError if the training split is."""
    n_train = min(round(n * train_prop), n)
    n_val = min(round(n * val_prop), n - n_train)
    if n_train < 1:
        raise ConfigError(
            f"{n} rows are too few for train_prop={train_prop}, val_prop={val_prop}: "
            f"the split gives {n_train} train rows; it must be >= 1"
        )
    return n_train, n_val, n - n_train - n_val


def split(
    X: Tensor,
    y: Tensor,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
    theta: Tensor | None = None,
    groups: Tensor | None = None,
) -> Data:
    """Shuffle the rows once, then cut them into train, validation and test."""
    n_train, n_val, _ = split_sizes(y.shape[0], train_prop, val_prop)
    rows = torch.randperm(y.shape[0], generator=generator)

    def part(r: Tensor) -> Split:
        return Split(X[r], y[r], None if groups is None else groups[r])

    train, val, test = rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val :]
    return Data(part(train), part(val), part(test), theta)


def simulate_linear(
    n: int,
    dim: int,
    noise_std: float,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
) -> Data:
    """The lecture's regression: y = x·θ + σε with x ~ N(0, I), θ ~ N(0, I), ε ~ N(0, 1)."""
    f64 = torch.float64
    theta = torch.randn(dim, generator=generator, dtype=f64)
    X = torch.randn(n, dim, generator=generator, dtype=f64)
    y = X @ theta + noise_std * torch.randn(n, generator=generator, dtype=f64)
    return split(X, y, train_prop, val_prop, generator, theta)


def simulate_ill_conditioned(
    n: int,
    dim: int,
    noise_std: float,
    condition_number: float,
    rotate: bool,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
) -> Data:
    """y = x·θ + σε on a design whose training X'X has condition number κ = `condition_number`.

    Rows come from N(0, Σ), Σ = V diag(λ) V', λ_i = κ^(−i/(dim−1)) / 2 for i = 0 … dim−1, so the
    Hessian of the mean squared error, (2/N) X'X, has eigenvalues from 1 down to 1/κ: its largest is
    L = 1, and η = 1/L = 1 is gradient descent's textbook step whatever κ. V = I (badly scaled
    columns, which a diagonal preconditioner undoes) unless `rotate` (a random rotation: collinear
    columns, which it does not). The training rows are exact: X = √N Q diag(√λ) V' with Q'Q = I, so
    X'X / N = Σ and cond(X'X) = κ to rounding. Validation and test rows are fresh draws from N(0, Σ).
    """
    f64 = torch.float64
    n_train, n_val, n_test = split_sizes(n, train_prop, val_prop)
    exponents = torch.arange(dim, dtype=f64) / max(dim - 1, 1)
    scale = (condition_number**-exponents / 2).sqrt()  # √λ
    V = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=f64)).Q if rotate else None

    def design(Z: Tensor) -> Tensor:
        X = Z * scale
        return X if V is None else X @ V.T

    theta = torch.randn(dim, generator=generator, dtype=f64)
    Q = torch.linalg.qr(torch.randn(n_train, dim, generator=generator, dtype=f64)).Q
    X_train = design(n_train**0.5 * Q)
    X_val, X_test = (design(torch.randn(m, dim, generator=generator, dtype=f64)) for m in (n_val, n_test))

    def split_of(X: Tensor) -> Split:
        return Split(X, X @ theta + noise_std * torch.randn(len(X), generator=generator, dtype=f64))

    return Data(split_of(X_train), split_of(X_val), split_of(X_test), theta)


def simulate_polynomial(
    n: int,
    degree: int,
    true_degree: int,
    noise_std: float,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
) -> Data:
    """A model that can overfit: few points, many features.

    x ~ U(−1, 1); features 1, x, …, x^degree; y = Σ_{k ≤ true_degree} θ_k x^k + σε with θ_k ~ N(0, 1)
    and θ_k = 0 above true_degree, so the true θ over all the features is known.
    """
    f64 = torch.float64
    x = 2 * torch.rand(n, generator=generator, dtype=f64) - 1
    X = x[:, None] ** torch.arange(degree + 1, dtype=f64)
    theta = torch.zeros(degree + 1, dtype=f64)
    theta[: true_degree + 1] = torch.randn(true_degree + 1, generator=generator, dtype=f64)
    y = X @ theta + noise_std * torch.randn(n, generator=generator, dtype=f64)
    return split(X, y, train_prop, val_prop, generator, theta)


def simulate_logistic(
    n: int, dim: int, train_prop: float, val_prop: float, generator: torch.Generator
) -> Data:
    """Binary choice: y ~ Bernoulli(σ(x·θ)) with x ~ N(0, I), θ ~ N(0, I); y is 0 or 1."""
    f64 = torch.float64
    theta = torch.randn(dim, generator=generator, dtype=f64)
    X = torch.randn(n, dim, generator=generator, dtype=f64)
    y = (torch.rand(n, generator=generator, dtype=f64) < torch.sigmoid(X @ theta)).to(f64)
    return split(X, y, train_prop, val_prop, generator, theta)


def simulate_nonlinear(
    n: int, dim: int, noise_std: float, train_prop: float, val_prop: float, generator: torch.Generator
) -> Data:
    """y = sin(x·θ) + σε with x, θ ~ N(0, I): no θ a linear model could recover, so no `theta`."""
    f64 = torch.float64
    theta = torch.randn(dim, generator=generator, dtype=f64)
    X = torch.randn(n, dim, generator=generator, dtype=f64)
    y = torch.sin(X @ theta) + noise_std * torch.randn(n, generator=generator, dtype=f64)
    return split(X, y, train_prop, val_prop, generator)


# ------------------------------------------------------------------------------------------ tables
READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}


def load_file(path: str, target: str, **table: Any) -> Data:
    """A CSV or Parquet file, by extension; a relative path is relative to the launch directory."""
    import pandas as pd
    from hydra.utils import to_absolute_path

    file = Path(to_absolute_path(path))  # Hydra may have changed the working directory
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        allowed = ", ".join(sorted(READERS))
        raise ConfigError(f"data.path={file}: unknown file type {file.suffix!r}; allowed: {allowed}")
    if not file.exists():
        raise ConfigError(f"data.path={file}: no such file")
    try:
        frame = getattr(pd, reader)(file)
        if reader == "read_csv":  # pandas renames a repeated name (x, x.1): read the header as written
            check_columns(
                pd.read_csv(file, header=None, nrows=1, dtype=str).iloc[0].tolist(), f"data.path={file}"
            )
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data.path={file}: the file is empty") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds; the message says which
        kind = reader.removeprefix("read_").replace("csv", "CSV").replace("parquet", "Parquet")
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"data.path={file}: cannot read it as {kind}: {reason}") from exc
    return from_frame(frame, f"data.path={file}", target, **table)


def statsmodels_datasets() -> list[str]:
    import statsmodels.datasets as datasets

    return sorted(name for name in datasets.__all__ if hasattr(getattr(datasets, name), "load_pandas"))


def load_statsmodels(name: str, target: str | None, **table: Any) -> Data:
    """A data set statsmodels ships (`statsmodels.datasets.<name>`, with its license note there);
    nothing is downloaded. `target` null: the data set's own dependent variable."""
    if name not in statsmodels_datasets():
        available = ", ".join(statsmodels_datasets())
        raise ConfigError(f"data.name={name!r} is not a statsmodels data set; available: {available}")
    dataset = importlib.import_module(f"statsmodels.datasets.{name}").load_pandas()
    return from_frame(dataset.data, f"statsmodels data set {name!r}", target or dataset.endog_name, **table)


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
    intercept: bool,
    standardize: bool,
    drop_missing: bool,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
    cluster: str | None = None,
) -> Data:
    """Check the columns and values, split the rows, then standardize (on training statistics only)
    and prepend the intercept column: X = [1, x_1, …, x_M] in the order of `features`. `cluster`
    (inference.cluster) names a column whose values group the rows for clustered standard errors."""
    frame = frame.set_axis([str(c) for c in frame.columns], axis="columns")
    check_table(frame, source, target, cluster)
    features = chosen_features(frame, source, target, features, cluster)
    values, groups = finite_rows(frame, source, [target, *features], cluster, drop_missing)
    data = split(values[:, 1:], values[:, 0], train_prop, val_prop, generator, groups=groups)
    if data.train.groups is not None and len(data.train.groups.unique()) < 2:
        raise ConfigError(
            f"inference.cluster={cluster!r} puts all {len(data.train)} training rows in one group; "
            "clustered standard errors need at least 2 groups: choose another column or inference.cov"
        )
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
        " (standardized)" * standardize,
    )
    return replace(data, names=tuple(names), standardization=scaling)


def check_table(frame: pd.DataFrame, source: str, target: str, cluster: str | None) -> None:
    """Refuse repeated column names, an empty table, and a target or cluster column it lacks."""
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


def chosen_features(
    frame: pd.DataFrame, source: str, target: str, features: list[str] | None, cluster: str | None
) -> list[str]:
    """The feature columns: those named (checked), or null for every numeric one but the target
    and the cluster column."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    columns = list(frame.columns)
    available = f"available: {', '.join(columns)}"

    def numeric(column: str) -> bool:
        return is_numeric_dtype(frame[column]) or is_bool_dtype(frame[column])

    if features is None:
        features = [c for c in columns if c not in (target, cluster) and numeric(c)]
        skipped = [c for c in columns if c not in (target, cluster) and not numeric(c)]
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
    for column in [target, *features]:
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
    """Standardize X on the training split's statistics (if asked), then prepend the intercept."""
    dtype = data.train.X.dtype
    mean, std = torch.zeros(len(features), dtype=dtype), torch.ones(len(features), dtype=dtype)
    if standardize:
        std, mean = torch.std_mean(data.train.X, dim=0, correction=0)
        constant = [c for c, s in zip(features, std.tolist(), strict=True) if s == 0]
        if constant:
            raise ConfigError(
                f"data.standardize=true, but {', '.join(map(repr, constant))} is constant on the training "
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


def check_fit(data: Data, model: nn.Module, batch_size: int | None) -> None:
    """Refuse a data / model / batch combination that cannot train as asked, before anything runs."""
    if batch_size is not None and batch_size > len(data.train):
        raise ConfigError(
            f"trainer.batch_size={batch_size} is not allowed: the training split has {len(data.train)} "
            f"rows; use at most {len(data.train)}, or null for the full split"
        )
    check_target: Callable[[Tensor], None] | None = getattr(model, "check_target", None)
    if check_target is not None:
        check_target(torch.cat([data.train.y, data.val.y, data.test.y]))
