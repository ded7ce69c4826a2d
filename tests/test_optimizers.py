"""The lecture's methods against the lecture's formulas, never against torch.

Least squares L(θ) = (1/N) Σ (y_n − x_n·θ)² has ∇L(θ) = −(2/N) X'(y − Xθ) and ∇²L = (2/N) X'X;
each test replays the formula by hand and compares it with what `optimizer=<name>` produces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from src.loop import fit
from src.loop.training import Training
from src.models import LinearRegression
from src.train import build

FULL_BATCH = (
    "trainer.batch_size=null",
    "trainer.dtype=float64",
    "trainer.patience=100000",
    "trainer.stopping_threshold=null",
)


class Trajectory:
    """A loop callback that records θ after every epoch (one full-batch step each)."""

    def __init__(self, model: LinearRegression) -> None:
        self.model = model
        self.thetas: list[Tensor] = []

    def on_epoch_end(self, metrics: object) -> None:
        self.thetas.append(self.model.weight.detach().clone())


def run(quiet_config, *overrides: str) -> tuple[Training, Tensor, list[Tensor]]:
    """Build `python -m src.train <overrides>` on the full batch; return its parts, θ₀ and θ_1..θ_T."""
    parts = build(quiet_config(*FULL_BATCH, *overrides))
    assert isinstance(parts.model, LinearRegression)
    theta0 = parts.model.weight.detach().clone()
    trajectory = Trajectory(parts.model)
    fit(parts, callbacks=[trajectory])
    return parts, theta0, trajectory.thetas


def least_squares(parts: Training) -> tuple[Tensor, Tensor]:
    return parts.data.train.X, parts.data.train.y


def gradient(theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
    return -2 / len(y) * X.T @ (y - X @ theta)


def ols(X: Tensor, y: Tensor) -> Tensor:
    return torch.from_numpy(np.linalg.lstsq(X.numpy(), y.numpy(), rcond=None)[0])


def close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_nesterov_is_the_lectures_sequence_seen_at_its_look_ahead_point(quiet_config):
    """Lecture: θ̂_{t+1} = θ_t + β(θ_t − θ_{t−1}), θ_{t+1} = θ̂_{t+1} − η∇L(θ̂_{t+1}), θ_{−1} = θ₀.

    torch's Nesterov keeps p_t = θ̂_{t+1} (the look-ahead point) instead of θ_t: with v_{t+1} =
    βv_t + ∇L(p_t), p_{t+1} = p_t − η(∇L(p_t) + βv_{t+1}) and constant η, θ_{t+1} − θ_t = −ηv_{t+1}.
    """
    parts, theta0, iterates = run(quiet_config, "optimizer=nesterov", "trainer.max_epochs=200")
    X, y = least_squares(parts)
    eta, beta = parts.optimizer.param_groups[0]["lr"], parts.optimizer.param_groups[0]["momentum"]
    previous, current = theta0, theta0
    for p in iterates:
        look_ahead = current + beta * (current - previous)
        previous, current = current, look_ahead - eta * gradient(look_ahead, X, y)
        close(p, current + beta * (current - previous))  # θ̂_{t+2}, torch's p_{t+1}
    # The change of variables is real: torch's iterate is not the lecture's θ_t itself.
    first_theta = theta0 - eta * gradient(theta0, X, y)
    assert torch.linalg.vector_norm(iterates[0] - first_theta) > 1e-3
    assert torch.linalg.vector_norm(current - ols(X, y)) < 1e-6  # and both converge


def test_heavy_ball_momentum_follows_its_recursion(quiet_config):
    """Polyak: θ_{t+1} = θ_t − η∇L(θ_t) + β(θ_t − θ_{t−1}), θ_{−1} = θ₀ (torch's v ← βv + g; θ ← θ − ηv)."""
    parts, theta0, iterates = run(quiet_config, "optimizer=momentum", "trainer.max_epochs=40")
    X, y = least_squares(parts)
    eta, beta = parts.optimizer.param_groups[0]["lr"], parts.optimizer.param_groups[0]["momentum"]
    previous, current = theta0, theta0
    for theta in iterates:
        previous, current = current, current - eta * gradient(current, X, y) + beta * (current - previous)
        close(theta, current)


def test_newton_with_unit_step_solves_least_squares_in_one_step(quiet_config):
    parts, _, iterates = run(quiet_config, "optimizer=newton", "trainer.max_epochs=1")
    X, y = least_squares(parts)
    close(iterates[0], ols(X, y))


def test_damped_newton_step_is_the_formula(quiet_config):
    """θ₁ = θ₀ − η [∇²L + λI]⁻¹ ∇L(θ₀) with ∇²L = (2/N)X'X."""
    overrides = ("optimizer=newton", "optimizer.damping=0.5", "optimizer.lr=0.7", "trainer.max_epochs=1")
    parts, theta0, iterates = run(quiet_config, *overrides)
    X, y = least_squares(parts)
    hessian = 2 / len(y) * X.T @ X + 0.5 * torch.eye(X.shape[1], dtype=X.dtype)
    close(iterates[0], theta0 - 0.7 * torch.linalg.solve(hessian, gradient(theta0, X, y)))


def test_armijo_backtracks_an_overshooting_newton_step(quiet_config):
    """On a quadratic, s = 2 lands on the mirror image of θ₀ (no decrease): Armijo halves it to s = 1."""
    parts, theta0, plain = run(quiet_config, "optimizer=newton", "optimizer.lr=2", "trainer.max_epochs=1")
    X, y = least_squares(parts)
    close(plain[0], 2 * ols(X, y) - theta0)
    parts, _, searched = run(
        quiet_config,
        "optimizer=newton",
        "optimizer.lr=2",
        "optimizer.line_search=armijo",
        "trainer.max_epochs=1",
    )
    close(searched[0], ols(X, y))


def test_preconditioned_with_inverse_hessian_is_newton(quiet_config):
    common = ("optimizer.lr=0.5", "trainer.max_epochs=6")  # η < 1: several steps, not one
    _, _, newton = run(quiet_config, "optimizer=newton", *common)
    _, _, preconditioned = run(
        quiet_config, "optimizer=preconditioned", "optimizer.preconditioner=inverse_hessian", *common
    )
    for a, b in zip(newton, preconditioned, strict=True):
        close(a, b)


def test_preconditioned_with_identity_is_gradient_descent(quiet_config):
    common = ("optimizer.lr=0.1", "trainer.max_epochs=20")
    parts, theta0, gd = run(quiet_config, "optimizer=gd", *common)
    _, _, identity = run(
        quiet_config, "optimizer=preconditioned", "optimizer.preconditioner=identity", *common
    )
    X, y = least_squares(parts)
    theta = theta0
    for a, b in zip(gd, identity, strict=True):
        theta = theta - 0.1 * gradient(theta, X, y)  # the lecture's GD
        close(a, theta)
        close(b, theta)


def test_jacobi_and_given_diagonal_preconditioners_are_the_formula(quiet_config):
    """Jacobi: C = diag(∇²L)⁻¹ = diag((2/N) Σ x_nj²)⁻¹; diagonal: C = diag(c)."""
    parts, theta0, jacobi = run(
        quiet_config, "optimizer=preconditioned", "optimizer.lr=0.5", "trainer.max_epochs=1"
    )
    X, y = least_squares(parts)
    C = 1 / (2 / len(y) * (X**2).sum(0))
    close(jacobi[0], theta0 - 0.5 * C * gradient(theta0, X, y))
    _, theta0, given = run(
        quiet_config,
        "optimizer=preconditioned",
        "optimizer.preconditioner=diagonal",
        "optimizer.diagonal=[0.25,2.0]",
        "optimizer.lr=0.5",
        "trainer.max_epochs=1",
    )
    close(given[0], theta0 - 0.5 * torch.tensor([0.25, 2.0], dtype=X.dtype) * gradient(theta0, X, y))


def test_jacobi_undoes_badly_scaled_columns_exactly(quiet_config):
    """On data=ill_conditioned (κ = 1e4, columns scaled), ∇²L is diagonal: Jacobi is Newton."""
    parts, _, iterates = run(
        quiet_config,
        "data=ill_conditioned",
        "data.condition_number=1e4",
        "optimizer=preconditioned",
        "trainer.max_epochs=1",
    )
    X, y = least_squares(parts)
    torch.testing.assert_close(iterates[0], ols(X, y), rtol=1e-8, atol=1e-10)


def test_lbfgs_reaches_the_ols_solution_to_1e_8(quiet_config):
    parts, _, iterates = run(
        quiet_config, "optimizer=lbfgs", "trainer.max_epochs=100", "trainer.grad_tol=1e-9"
    )
    X, y = least_squares(parts)
    assert len(iterates) < 100  # stopped by the gradient tolerance, not by max_epochs
    assert float(torch.linalg.vector_norm(iterates[-1] - ols(X, y))) < 1e-8


def test_adamw_decays_apart_from_the_gradient_while_l2_enters_it(quiet_config):
    """First Adam step: m̂ = g, v̂ = g², so θ₁ = θ₀ − η g/(|g| + ε). AdamW (decoupled): θ₀(1 − ηλ) − η g/(|g|+ε)
    with g the data gradient; Adam with regularization.l2 = α: g = ∇L + αθ₀ inside the ratio."""
    one_step = ("trainer.max_epochs=1", "optimizer.lr=0.01")
    parts, theta0, adamw = run(quiet_config, "optimizer=adamw", "optimizer.weight_decay=0.5", *one_step)
    X, y = least_squares(parts)
    g = gradient(theta0, X, y)
    close(adamw[0], theta0 * (1 - 0.01 * 0.5) - 0.01 * g / (g.abs() + 1e-8))
    _, theta0, penalized = run(quiet_config, "optimizer=adam", "regularization.l2=0.5", *one_step)
    g = gradient(theta0, X, y) + 0.5 * theta0
    close(penalized[0], theta0 - 0.01 * g / (g.abs() + 1e-8))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "optimizer.preconditioner=cholesky",
            "optimizer.preconditioner='cholesky' is not allowed: must be one of",
        ),
        ("optimizer.preconditioner=diagonal", "optimizer.diagonal=None is not allowed"),
        ("optimizer.diagonal=[1.0]", "optimizer.diagonal=[1.0] is not allowed"),
    ],
)
def test_preconditioner_config_errors_name_the_key(quiet_config, override, expected):
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        build(quiet_config("optimizer=preconditioned", override))


def test_a_diagonal_of_the_wrong_length_is_a_config_error(quiet_config):
    from src.errors import ConfigError

    overrides = ("optimizer=preconditioned", "optimizer.preconditioner=diagonal", "optimizer.diagonal=[1.0]")
    with pytest.raises(ConfigError, match=r"optimizer\.diagonal has 1 entries; the model has 2 parameters"):
        build(quiet_config(*overrides))
