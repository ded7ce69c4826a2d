"""Simulated data: the lecture's linear model and its harder cousins. Each draws from the seeded
torch.Generator it is given, in float64."""

from __future__ import annotations

import torch
from torch import Tensor

from src.data.splits import Data, Split, split, split_sizes


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
