"""Hypothesis classes. Each model owns its loss, so the loop never hard-codes one."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LinearRegression(nn.Module):
    """f(x) = x·θ (+ b), loss L(θ) = (1/N) Σ (y_n − x_n·θ)², the lecture's least squares."""

    def __init__(
        self, in_features: int, bias: bool = False, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        # nn.Linear's default init, U(−1/√M, 1/√M), but drawn from the run's own generator.
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features).uniform_(-bound, bound, generator=generator))
        self.bias = nn.Parameter(torch.zeros(())) if bias else None

    def forward(self, X: Tensor) -> Tensor:
        out = X @ self.weight
        return out if self.bias is None else out + self.bias

    def loss(self, X: Tensor, y: Tensor) -> Tensor:
        return torch.mean((y - self(X)) ** 2)

    def loss_and_grad(self, X: Tensor, y: Tensor) -> Tensor:
        """L and ∇L in closed form: with r = Xθ + b − y, ∇_θ L = (2/N) Xᵀr and ∂L/∂b = (2/N) Σ r.

        Written into the existing .grad buffers: this runs every step, so it allocates little.
        """
        n = y.shape[0]
        r = torch.mv(X, self.weight.detach()).sub_(y)
        if self.bias is not None:
            r.add_(self.bias.detach())
            self.bias.grad = r.sum().mul_(2 / n)
        if self.weight.grad is None:
            self.weight.grad = torch.empty_like(self.weight)
        torch.mv(X.T, r, out=self.weight.grad).mul_(2 / n)
        return torch.dot(r, r).div_(n)

    def coefficients(self) -> Tensor:
        """θ̂, comparable with the data's true θ."""
        return self.weight.detach()
