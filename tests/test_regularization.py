"""The explicit L2 penalty: L(θ) + (α/2)‖θ‖² with L the mean squared error, α = regularization.l2.

Setting the gradient −(2/N)X'(y − Xθ) + αθ to zero gives (X'X + (Nα/2) I) θ = X'y: the closed-form
ridge estimator with penalty Nα/2 on the sum of squares (N = training rows). The tests compare
with that formula, and check that it is not the (X'X + NαI)⁻¹X'y of an α‖θ‖² penalty.
"""

from __future__ import annotations

import pytest
import torch

from src.config import ConfigError
from src.loop import fit
from src.models import LinearRegression
from src.train import build
from tests.test_optimizers import FULL_BATCH, Trajectory


def ridge(X: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """argmin ‖y − Xθ‖² + penalty ‖θ‖² = (X'X + penalty·I)⁻¹ X'y."""
    return torch.linalg.solve(X.T @ X + penalty * torch.eye(X.shape[1], dtype=X.dtype), X.T @ y)


@pytest.mark.parametrize("alpha", [0.01, 0.3, 2.0])
def test_gradient_descent_on_the_penalized_loss_converges_to_closed_form_ridge(quiet_config, alpha):
    cfg = quiet_config(
        *FULL_BATCH,
        "optimizer=gd",
        f"regularization.l2={alpha}",
        "trainer.grad_tol=1e-10",
        "trainer.max_epochs=5000",
    )
    parts = build(cfg)
    assert isinstance(parts.model, LinearRegression)
    trajectory = Trajectory(parts.model)
    result = fit(parts, callbacks=[trajectory])
    X, y = parts.data.train.X, parts.data.train.y
    N = len(y)
    assert result.stop_reason == "converged"  # ‖∇(L + (α/2)‖θ‖²)‖ < 1e-10
    expected = ridge(X, y, N * alpha / 2)
    assert float(torch.linalg.vector_norm(trajectory.thetas[-1] - expected)) < 1e-6
    assert float(torch.linalg.vector_norm(trajectory.thetas[-1] - ridge(X, y, N * alpha))) > 1e-4


def test_newton_solves_the_penalized_problem_in_one_step(quiet_config):
    """The penalty is part of the loss, so Newton's Hessian includes αI."""
    parts = build(
        quiet_config(*FULL_BATCH, "optimizer=newton", "regularization.l2=0.5", "trainer.max_epochs=1")
    )
    fit(parts)
    X, y = parts.data.train.X, parts.data.train.y
    assert isinstance(parts.model, LinearRegression)
    torch.testing.assert_close(
        parts.model.weight.detach(), ridge(X, y, len(y) * 0.5 / 2), rtol=1e-10, atol=1e-12
    )


def test_train_loss_carries_the_penalty_and_validation_and_test_do_not(quiet_config):
    alpha = 1.5
    parts = build(
        quiet_config(*FULL_BATCH, "optimizer=gd", f"regularization.l2={alpha}", "trainer.max_epochs=1")
    )
    model, data = parts.model, parts.data
    assert isinstance(model, LinearRegression)
    theta0 = model.weight.detach().clone()
    result = fit(parts)
    theta1 = model.weight.detach()
    (epoch,) = result.history

    def mse(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> float:
        return float(torch.mean((y - X @ theta) ** 2))

    train_objective = mse(data.train.X, data.train.y, theta0) + alpha / 2 * float(theta0 @ theta0)
    assert epoch.train_loss == pytest.approx(train_objective, rel=1e-12)  # the batch loss before the step
    assert epoch.val_loss == pytest.approx(mse(data.val.X, data.val.y, theta1), rel=1e-12)
    assert result.test_loss == pytest.approx(mse(data.test.X, data.test.y, theta1), rel=1e-12)
    X, y = data.train.X, data.train.y
    penalized_gradient = -2 / len(y) * X.T @ (y - X @ theta1) + alpha * theta1
    assert epoch.grad_norm == pytest.approx(float(torch.linalg.vector_norm(penalized_gradient)), rel=1e-10)


def test_a_negative_penalty_is_a_config_error(quiet_config):
    with pytest.raises(ConfigError, match=r"regularization.l2=-0.1 is not allowed: must be >= 0"):
        build(quiet_config("regularization.l2=-0.1"))
