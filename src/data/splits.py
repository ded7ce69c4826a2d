"""What every data source returns: `Data`, three `Split`s cut from one shuffle of the rows (and the
true θ where the data are simulated), and the check that a model fits it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from src.errors import ConfigError

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Split:
    X: Tensor  # (n, features)
    y: Tensor  # (n,)
    groups: Tensor | None = None  # (n,) integer cluster labels, where inference.cluster names a column
    weights: Tensor | None = None  # (n,) each row's weight >= 0, where data.weights names a column

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
    weighted_by: str | None = None  # data.weights' column; its values are each split's `weights`
    absorbed: tuple[str, int] | None = None  # data.absorb's column and its groups, demeaned away

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

        def moved(s: Split) -> Split:
            weights = None if s.weights is None else move(s.weights)
            return replace(s, X=move(s.X), y=move(s.y), weights=weights)

        train, val, test = (moved(s) for s in self.splits())
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
    weights: Tensor | None = None,
) -> Data:
    """Shuffle the rows once, then cut them into train, validation and test."""
    n_train, n_val, _ = split_sizes(y.shape[0], train_prop, val_prop)
    rows = torch.randperm(y.shape[0], generator=generator)

    def part(r: Tensor) -> Split:
        return Split(X[r], y[r], *(None if t is None else t[r] for t in (groups, weights)))

    train, val, test = rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val :]
    return Data(part(train), part(val), part(test), theta)


def whitened(data: Data) -> Data:
    """Weighted least squares as least squares: each row of X and y times √w, which is how
    statsmodels' WLS fits and what its covariances are computed on, so the estimate, the exact
    reference and every standard error (classical, HC, cluster) follow. The weights are then spent."""

    def whiten(s: Split) -> Split:
        if s.weights is None:
            return s
        root = s.weights.sqrt()
        return replace(s, X=s.X * root[:, None], y=s.y * root, weights=None)

    train, val, test = (whiten(s) for s in data.splits())
    return replace(data, train=train, val=val, test=test)


def with_frequencies(data: Data) -> Data:
    """A weighted logit's data: each split's target becomes (n, 2), the 0/1 outcome and the row's
    frequency weight (src.models.outcome reads them apart), so the weights follow the rows into every
    batch. The weights are then spent."""

    def pair(s: Split) -> Split:
        if s.weights is None:
            return s
        return replace(s, y=torch.stack([s.y, s.weights], dim=1), weights=None)

    train, val, test = (pair(s) for s in data.splits())
    return replace(data, train=train, val=val, test=test)


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
