"""Data sources and the train / validation / test split.

A data source is a Hydra `_target_` that takes its own options plus the split proportions and a
seeded torch.Generator, and returns `Data`. Everything is generated in float64 and cast once, so a
float32 and a float64 run see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from src.config import ConfigError


@dataclass(frozen=True)
class Split:
    X: Tensor  # (n, features)
    y: Tensor  # (n,)

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass(frozen=True)
class Data:
    train: Split
    val: Split  # may be empty (val_prop = 0): the loop then monitors train loss
    test: Split
    theta: Tensor | None = None  # the true coefficients, where the data are simulated

    @property
    def n_features(self) -> int:
        return self.train.X.shape[1]

    def to(self, *, dtype: torch.dtype, device: torch.device | str = "cpu") -> Data:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        return replace(
            self,
            train=Split(move(self.train.X), move(self.train.y)),
            val=Split(move(self.val.X), move(self.val.y)),
            test=Split(move(self.test.X), move(self.test.y)),
            theta=None if self.theta is None else move(self.theta),
        )


def split_sizes(n: int, train_prop: float, val_prop: float) -> tuple[int, int, int]:
    """Rows in train, validation and test; ConfigError if any split that should exist is empty."""
    n_train, n_val = round(n * train_prop), round(n * val_prop)
    n_test = n - n_train - n_val
    if n_train < 1 or n_test < 1 or (val_prop > 0 and n_val < 1):
        raise ConfigError(
            f"{n} rows are too few for train_prop={train_prop}, val_prop={val_prop}: "
            f"the split gives {n_train} train / {n_val} val / {n_test} test rows, "
            "each must be >= 1"
        )
    return n_train, n_val, n_test


def split(
    X: Tensor,
    y: Tensor,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
    theta: Tensor | None = None,
) -> Data:
    """Shuffle the rows once, then cut them into train, validation and test."""
    n_train, n_val, _ = split_sizes(y.shape[0], train_prop, val_prop)
    rows = torch.randperm(y.shape[0], generator=generator)
    train, val, test = rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val :]
    return Data(Split(X[train], y[train]), Split(X[val], y[val]), Split(X[test], y[test]), theta)


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
