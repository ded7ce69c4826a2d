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


def split(
    X: Tensor,
    y: Tensor,
    train_prop: float,
    val_prop: float,
    generator: torch.Generator,
    theta: Tensor | None = None,
) -> Data:
    """Shuffle the rows once, then cut them into train, validation and test."""
    n = y.shape[0]
    n_train, n_val = round(n * train_prop), round(n * val_prop)
    n_test = n - n_train - n_val
    if n_train < 1 or n_test < 1 or (val_prop > 0 and n_val < 1):
        raise ConfigError(
            f"{n} rows are too few for train_prop={train_prop}, val_prop={val_prop}: "
            f"the split gives {n_train} train / {n_val} val / {n_test} test rows, "
            "each must be >= 1"
        )
    rows = torch.randperm(n, generator=generator)
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
