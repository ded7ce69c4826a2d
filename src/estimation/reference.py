"""Exact references: the minimizer θ* of the training objective, where it can be computed exactly.

Computed once, in float64, on the training split the run trains on (after any standardization and
cast), so that per epoch the loop can report how far the optimizer is from the estimate:
`opt_gap` = L_train(θ_t) − L_train(θ*) and `ref_error` = ‖θ_t − θ*‖. θ* covers every parameter of
the model in `model.parameters()` order: the weights, then the bias if the model has one.

The objective with the L2 penalty α = `l2` is L(θ) + (α/2)‖θ‖², the bias included (as torch's
weight_decay includes it):
- least squares, (1/N) Σ (y_n − z_n·θ)² + (α/2)‖θ‖²: closed form;
- logistic, (1/N) Σ [log(1 + e^{z_n·θ}) − y_n z_n·θ] + (α/2)‖θ‖²: Newton's method to machine precision.
Other models (the MLP) are not convex: no reference, and a log line says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.data import Split
from src.models import LinearRegression, LogisticRegression

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    theta: Tensor  # θ*, float64, the model.parameters() flattened and concatenated
    loss: float  # L_train(θ*), penalty included
    method: str  # how θ* was found, for the log

    def error(self, parameters: Iterable[Tensor]) -> float:
        """‖θ − θ*‖ over all of a model's parameters."""
        theta = torch.cat([p.detach().reshape(-1) for p in parameters]).to(self.theta)
        return float(torch.linalg.vector_norm(theta - self.theta))


def design(X: Tensor, bias: bool) -> Tensor:
    """Z = [X, 1] with a bias (last, as the model orders its parameters), else X; in float64."""
    X = X.double()
    return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], dim=1) if bias else X


def least_squares(X: Tensor, y: Tensor, bias: bool = False, l2: float = 0.0) -> Reference:
    """argmin (1/N)‖y − Zθ‖² + (α/2)‖θ‖².

    α = 0: least squares by QR (torch.linalg.lstsq), stable on ill-conditioned designs. α > 0: the
    gradient −(2/N) Zᵀ(y − Zθ) + αθ vanishes at (ZᵀZ + (αN/2) I) θ = Zᵀy, a positive definite system.
    """
    Z, y = design(X, bias), y.double()
    n, p = Z.shape
    if l2 == 0:
        theta = torch.linalg.lstsq(Z, y[:, None]).solution[:, 0]
        method = "least squares, closed form (QR)"
    else:
        eye = torch.eye(p, dtype=Z.dtype, device=Z.device)
        theta = torch.linalg.solve(Z.T @ Z + (l2 * n / 2) * eye, Z.T @ y)
        method = f"ridge least squares (l2={l2:g}), closed form"
    loss = torch.mean((y - Z @ theta) ** 2) + l2 / 2 * theta @ theta
    return Reference(theta, float(loss), method)


def logistic_mle(
    X: Tensor, y: Tensor, bias: bool = False, l2: float = 0.0, max_iter: int = 100
) -> Reference | None:
    """The logit MLE (α = 0) or its penalized version, by Newton's method with step halving.

    ∇L = (1/N) Zᵀ(p − y) + αθ and ∇²L = (1/N) Zᵀ diag(p(1 − p)) Z + αI with p = σ(Zθ). Newton
    converges quadratically near θ*; it stops when a step no longer changes θ beyond rounding. None
    when the MLE does not exist (classes separable on the training split, α = 0: θ runs off to ∞).
    """
    Z, y = design(X, bias), y.double()
    n, p = Z.shape
    eye = torch.eye(p, dtype=Z.dtype, device=Z.device)

    def objective(theta: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(Z @ theta, y) + l2 / 2 * theta @ theta

    theta = torch.zeros(p, dtype=Z.dtype, device=Z.device)
    current = objective(theta)
    for iteration in range(max_iter):
        prob = torch.sigmoid(Z @ theta)
        grad = Z.T @ (prob - y) / n + l2 * theta
        hessian = (Z.T * (prob * (1 - prob))) @ Z / n + l2 * eye
        step = torch.linalg.lstsq(hessian, grad[:, None]).solution[:, 0]
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
