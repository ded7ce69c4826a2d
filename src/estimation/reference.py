"""Exact references: the minimizer θ* of the training objective, where it can be computed exactly.

Computed once, in float64, on the training split the run trains on (after any standardization and
cast), so that per epoch the loop can report how far the optimizer is from the estimate:
`opt_gap` = L_train(θ_t) − L_train(θ*) and `ref_error` = ‖θ_t − θ*‖. θ* covers every parameter of
the model in `model.parameters()` order: the weights, then the bias if the model has one.

The objective with the L2 penalty α = `l2` is L(θ) + (α/2)‖θ‖², the bias included (as torch's
weight_decay includes it):
- least squares, (1/N) Σ (y_n − z_n·θ)² + (α/2)‖θ‖²: closed form, by QR (the same bits on every call);
- logistic, (1/N) Σ f_n [log(1 + e^{z_n·θ}) − y_n z_n·θ] + (α/2)‖θ‖² (f_n: data.weights' frequency
  weights, 1 without): Newton's method to machine precision.
Other models (the MLP) are not convex: no reference, and a log line says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from src.data import Split
from src.models import LinearRegression, LogisticRegression, logit_loss, newton_system
from src.optim.qr import augmented, lstsq

log = logging.getLogger(__name__)

MAX_DIGITS = 16.0  # agreement to the last bit of a float64: where a digits metric stops


@dataclass(frozen=True)
class Reference:
    theta: Tensor  # θ*, float64, the model.parameters() flattened and concatenated
    loss: float  # L_train(θ*), penalty included
    method: str  # how θ* was found, for the log

    def error(self, parameters: Iterable[Tensor]) -> float:
        """‖θ − θ*‖ over all of a model's parameters."""
        theta = torch.cat([p.detach().reshape(-1) for p in parameters]).to(self.theta)
        return float(torch.linalg.vector_norm(theta - self.theta))

    def objective_digits(self, opt_gap: float) -> float | None:
        """The digits of L* that L_train(θ) agrees with: −log10((L − L*)/|L*|), from 0 (a gap as large
        as L* itself, or larger) to MAX_DIGITS (no gap left to measure). None when L* = 0 (an exact fit:
        no relative gap)."""
        return None if self.loss == 0 else agreement(opt_gap / abs(self.loss))

    def theta_digits(self, error: float) -> float | None:
        """The digits of θ* that θ agrees with: −log10(‖θ − θ*‖/‖θ*‖), from 0 to MAX_DIGITS; None
        when θ* = 0."""
        norm = float(torch.linalg.vector_norm(self.theta))
        return None if norm == 0 else agreement(error / norm)


def agreement(relative: float) -> float:
    """−log10 of a relative difference, within [0, MAX_DIGITS]: ≥ 0 by construction, so that a
    linear chart of it reads like a log axis of the difference (each unit, 10× closer)."""
    if not math.isfinite(relative):
        return 0.0
    return MAX_DIGITS if relative <= 10**-MAX_DIGITS else min(MAX_DIGITS, max(0.0, -math.log10(relative)))


def design(X: Tensor, bias: bool) -> Tensor:
    """Z = [X, 1] with a bias (last, as the model orders its parameters), else X; in float64."""
    X = X.double()
    return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], dim=1) if bias else X


def objective_terms(
    logit: bool, Z: Tensor, y: Tensor, theta: Tensor, l2: float
) -> tuple[float, Tensor, Tensor]:
    """The training objective L(θ) + (α/2)‖θ‖², its gradient and its Hessian, in closed form: the
    gradient s Aᵀ(Aθ − c) + αθ and Hessian s AᵀA + αI from the model's least-squares form (src.models.
    newton_system), the one place the logit's (1/N) Zᵀ(p − y) and (1/N) Zᵀ diag(p(1 − p)) Z live."""
    A, c, s = newton_system(Z, y, theta, logit)
    eye = torch.eye(len(theta), dtype=Z.dtype, device=Z.device)
    data = logit_loss(Z @ theta, y) if logit else torch.mean((Z @ theta - y) ** 2)
    gradient = s * (A.T @ (A @ theta - c)) + l2 * theta
    return float(data + l2 / 2 * theta @ theta), gradient, s * (A.T @ A) + l2 * eye


def least_squares(X: Tensor, y: Tensor, bias: bool = False, l2: float = 0.0) -> Reference:
    """argmin (1/N)‖y − Zθ‖² + (α/2)‖θ‖², by a QR of Z (src.optim.qr: bitwise the same θ* on every
    call, stable on ill-conditioned designs). α > 0: the gradient −(2/N) Zᵀ(y − Zθ) + αθ vanishes at
    (ZᵀZ + (αN/2) I) θ = Zᵀy, the least-squares problem of [Z; √(αN/2) I] against [y; 0].
    """
    Z, y = design(X, bias), y.double()
    A, b = augmented(Z, y, l2 * len(y) / 2)
    theta = lstsq(A, b)
    method = "least squares, closed form (QR)" if l2 == 0 else f"ridge least squares (l2={l2:g}), QR"
    loss = torch.mean((y - Z @ theta) ** 2) + l2 / 2 * theta @ theta
    return Reference(theta, float(loss), method)


def logistic_mle(
    X: Tensor, y: Tensor, bias: bool = False, l2: float = 0.0, max_iter: int = 100
) -> Reference | None:
    """The logit MLE (α = 0) or its penalized version, by Newton's method with step halving.

    Each step is IRLS's weighted least-squares problem (src.models.newton_system, solved by QR:
    the same step as H⁻¹∇L with ∇L = (1/N) Zᵀ(p − y) + αθ, ∇²L = (1/N) Zᵀ diag(p(1 − p)) Z + αI,
    p = σ(Zθ)). Newton converges quadratically near θ*; it stops when a step no longer changes θ
    beyond rounding. None when the MLE does not exist (classes separable on the training split,
    α = 0: θ runs off to ∞).
    """
    Z, y = design(X, bias), y.double()
    p = Z.shape[1]

    def objective(theta: Tensor) -> Tensor:
        return logit_loss(Z @ theta, y) + l2 / 2 * theta @ theta

    theta = torch.zeros(p, dtype=Z.dtype, device=Z.device)
    current = objective(theta)
    for iteration in range(max_iter):
        A, c, s = newton_system(Z, y, theta, logit=True)
        step = theta - lstsq(*augmented(A, c, l2 / s))
        if not torch.isfinite(step).all():
            break
        if torch.linalg.vector_norm(step) <= 1e-14 * (1 + torch.linalg.vector_norm(theta)):
            return Reference(theta, float(current), f"logit MLE, Newton ({iteration} iterations)")
        # Far from θ*, a full step may overshoot: halve it while the objective rises. Near θ*, the
        # change falls below the objective's rounding, so a rise within rounding still counts as none.
        t, slack = 1.0, 1e-15 * (1 + float(current))
        while (candidate := objective(theta - t * step)) > current + slack and t > 1e-8:
            t /= 2
        theta, current = theta - t * step, candidate
    log.warning(
        "no exact reference: the logit MLE does not exist on the training split (Newton did not "
        "converge in %d iterations; are the classes separable?); opt_gap and ref_error are not reported",
        max_iter,
    )
    return None


def exact(model: nn.Module, train: Split, l2: float = 0.0) -> Reference | None:
    """The exact minimizer of `model`'s training objective, or None where there is none to compute."""
    reference: Reference | None
    if isinstance(model, LogisticRegression):  # before LinearRegression, its base class
        reference = logistic_mle(train.X, train.y, model.bias is not None, l2)
    elif isinstance(model, LinearRegression):
        reference = least_squares(train.X, train.y, model.bias is not None, l2)
    else:
        log.info(
            "no exact reference for %s (not convex): opt_gap and ref_error are not reported",
            type(model).__name__,
        )
        return None
    if reference is not None:
        log.info("exact reference, %s: L_train(theta*) = %.12g", reference.method, reference.loss)
    return reference
