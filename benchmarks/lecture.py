"""The lecture's SGD script, as written there: DataLoader over a TensorDataset, nn.Linear, autograd.

The baseline the benchmarks compare descentlab against. `python -m benchmarks.lecture [epochs]`
runs it as a whole process (figure P2).
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_problem(n: int = 1000, m: int = 2, sigma: float = 0.001, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(m, generator=g)
    X = torch.randn(n, m, generator=g)
    Y = X @ theta + sigma * torch.randn(n, generator=g)
    return theta, X, Y


def residuals(model: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    Y_hat = model(X).squeeze()
    r = Y_hat - Y
    return torch.mean(r**2)


def lecture_sgd(
    X: torch.Tensor,
    Y: torch.Tensor,
    epochs: int,
    batch_size: int = 32,
    lr: float = 0.1,
    method=torch.optim.SGD,
):
    """Returns (model, steps)."""
    train_loader = DataLoader(TensorDataset(X, Y), batch_size=batch_size, shuffle=True)
    model = nn.Linear(X.shape[1], 1, bias=False)
    optimizer = method(model.parameters(), lr=lr)
    steps = 0
    for _epoch in range(epochs):
        for X_batch, Y_batch in train_loader:
            optimizer.zero_grad()
            loss = residuals(model, X_batch, Y_batch)  # primal
            loss.backward()  # backprop / reverse-mode AD
            optimizer.step()
            steps += 1
    return model, steps


def lecture_adam(X: torch.Tensor, Y: torch.Tensor, epochs: int, batch_size: int = 32, lr: float = 1e-3):
    """The same loop with torch.optim.Adam. Returns (model, steps)."""
    return lecture_sgd(X, Y, epochs, batch_size, lr, method=torch.optim.Adam)


if __name__ == "__main__":
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    theta, X, Y = make_problem()
    n_train = 700
    start = time.perf_counter()
    model, steps = lecture_sgd(X[:n_train], Y[:n_train], epochs)
    print(f"||theta - theta_hat|| = {torch.norm(theta - model.weight.squeeze())}")
