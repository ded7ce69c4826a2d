"""Hypothesis classes. Each model owns its loss, so the loop never hard-codes one.

Built as `instantiate(cfg.model)(n_features, generator=generator)`: every random initial value is
drawn from the run's seeded generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.config.schemas import Activation
from src.errors import ConfigError


@functools.cache
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def scalar(value: float, like: Tensor) -> Tensor:
    """`value` as a 0-dim tensor of `like`'s dtype, made once. `t.mul_(tensor)` takes a third of
    the time of `t.mul_(float)`, which wraps the Python number in a new tensor on every call, and
    gives the same result: a float scalar is cast to the tensor's dtype either way."""
    return _scalar(value, like.dtype, like.device)


def outcome(y: Tensor) -> tuple[Tensor, Tensor | None]:
    """The 0/1 outcome and the rows' frequency weights (None: unweighted). A weighted logit's target is
    (n, 2), the outcome and the weight side by side, so each row's weight follows it into every batch,
    split and evaluation without the loop knowing (src/train.py `weighted` makes it)."""
    return (y[:, 0], y[:, 1]) if y.ndim == 2 else (y, None)


def logit_loss(eta: Tensor, y: Tensor) -> Tensor:
    """(1/N) Σ f_n [log(1 + e^{η_n}) − y_n η_n], f_n the frequency weight (1 unweighted): GLM's
    freq_weights log-likelihood, −(1/N) × statsmodels' `GLM(..., freq_weights=f).loglike`."""
    target, weight = outcome(y)
    return F.binary_cross_entropy_with_logits(eta, target, weight=weight)


def newton_system(Z: Tensor, y: Tensor, theta: Tensor, logit: bool) -> tuple[Tensor, Tensor, float]:
    """Newton's step on the data loss at θ as a least-squares problem: (A, c, s) with

        ∇L(θ) = s Aᵀ(Aθ − c),   ∇²L(θ) = s AᵀA,   so   θ − [∇²L]⁻¹∇L = argmin_θ' ‖A θ' − c‖,

    the next iterate without forming the Hessian (whose condition number is A's squared):
    - least squares, L = (1/N)‖Zθ − y‖²: A = Z, c = y, s = 2/N (one step lands on the fit);
    - logit, p = σ(Zθ), v = p(1 − p), frequency weights f (1 unweighted): A = √(fv) Z,
      c = √(fv) Zθ − √f (p − y)/√v, s = 1/N: IRLS's weighted least squares on the working response.
    Z is the design with the bias's column of ones, last, as the model orders its parameters.
    """
    n = len(y)
    if not logit:
        return Z, y, 2 / n
    target, weight = outcome(y)
    eta = Z @ theta
    prob = torch.sigmoid(eta)
    root = (prob * (1 - prob)).clamp(min=torch.finfo(Z.dtype).tiny).sqrt()
    residual = (prob - target) / root
    if weight is not None:
        root_f = weight.sqrt()
        root, residual = root * root_f, residual * root_f
    return Z * root[:, None], root * eta - residual, 1 / n


class LinearRegression(nn.Module):
    """f(x) = x·θ (+ b), loss L(θ) = (1/N) Σ (y_n − x_n·θ)², the lecture's least squares."""

    logit = False  # its loss's Newton system (`newton_system`): least squares, not the logit's

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
        weight, bias = self.weight, self.bias
        r = torch.mv(X, weight.detach()).sub_(y)
        if bias is not None:
            r.add_(bias.detach())
            bias.grad = r.sum().mul_(scalar(2 / n, r))
        grad = weight.grad
        if grad is None:
            grad = weight.grad = torch.empty_like(weight)
        torch.mv(X.T, r, out=grad).mul_(scalar(2 / n, r))
        return torch.dot(r, r).div_(scalar(n, r))

    def coefficients(self) -> Tensor:
        """θ̂, comparable with the data's true θ."""
        return self.weight.detach()

    def newton_system(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float]:
        """`newton_system` of this model's loss on (X, y) at its parameters (weights, then bias)."""
        weight, bias = self.weight.detach(), self.bias
        Z, theta = X, weight
        if bias is not None:
            Z = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], dim=1)
            theta = torch.cat([weight, bias.detach().reshape(1)])
        return newton_system(Z, y, theta, self.logit)


class LogisticRegression(LinearRegression):
    """P(y = 1 | x) = σ(x·θ (+ b)); loss the mean binary cross-entropy, i.e. −(1/N) × the logit
    log-likelihood, computed on the logits for numerical stability."""

    logit = True

    def loss(self, X: Tensor, y: Tensor) -> Tensor:
        return logit_loss(self(X), y)

    def loss_and_grad(self, X: Tensor, y: Tensor) -> Tensor:
        """L and ∇L in closed form: with r = f (σ(Xθ + b) − y), f the rows' frequency weights (1
        unweighted), ∇_θ L = (1/N) Xᵀr and ∂L/∂b = (1/N) Σ r."""
        n = y.shape[0]
        weight, bias = self.weight, self.bias
        target, frequency = outcome(y)
        with torch.no_grad():
            logits = self(X)
            loss = logit_loss(logits, y)
            r = torch.sigmoid(logits).sub_(target)
            if frequency is not None:
                r.mul_(frequency)
            if bias is not None:
                bias.grad = r.sum().div_(scalar(n, r))
            grad = weight.grad
            if grad is None:
                grad = weight.grad = torch.empty_like(weight)
            torch.mv(X.T, r, out=grad).div_(scalar(n, r))
        return loss

    def check_target(self, y: Tensor) -> None:
        values = outcome(y)[0].unique()
        if not ((values == 0) | (values == 1)).all():
            shown = ", ".join(f"{v:g}" for v in values[:5].tolist()) + ", ..." * (len(values) > 5)
            raise ConfigError(
                f"model=logistic needs a 0/1 target, but y takes {len(values)} values ({shown}); "
                "recode it as 0/1, or choose model=linear or model=mlp"
            )


class MLP(nn.Module):
    """f(x) = W_K a(… a(W_1 x + b_1) …) + b_K, loss the mean squared error. Not convex in its
    parameters, so it has no exact reference (no opt_gap)."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (32, 32),
        activation: str | Activation = "tanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        act: type[nn.Module] = getattr(
            nn, Activation[activation].value if isinstance(activation, str) else activation.value
        )
        sizes = [in_features, *hidden, 1]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(sizes):
            # nn.Linear's default init, U(−1/√fan_in, 1/√fan_in), drawn from the run's generator;
            # skip_init leaves torch's global RNG untouched.
            linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            bound = 1 / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.uniform_(-bound, bound, generator=generator)
            layers += [linear, act()]
        self.net = nn.Sequential(*layers[:-1])  # no activation after the output layer

    def forward(self, X: Tensor) -> Tensor:
        return self.net(X).squeeze(-1)

    def loss(self, X: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(self(X), y)
