"""data=ill_conditioned and data=polynomial: the designs they promise."""

from __future__ import annotations

import pytest
import torch

from src.config import ConfigError
from src.train import build


@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e4, 1e8])
@pytest.mark.parametrize("rotate", [False, True])
def test_ill_conditioned_training_design_has_the_requested_condition_number(quiet_config, kappa, rotate):
    data = build(
        quiet_config(
            "data=ill_conditioned",
            f"data.condition_number={kappa}",
            f"data.rotate={rotate}",
            "trainer.dtype=float64",
        )
    ).data
    X = data.train.X.double()
    eigenvalues = torch.linalg.eigvalsh(X.T @ X)
    assert float(eigenvalues[-1] / eigenvalues[0]) == pytest.approx(kappa, rel=1e-6)
    hessian = torch.linalg.eigvalsh(2 / len(X) * X.T @ X)  # of the mean squared error
    assert float(hessian[-1]) == pytest.approx(1.0, rel=1e-9)
    diagonal = torch.allclose(X.T @ X, torch.diag(torch.diagonal(X.T @ X)), atol=1e-9 * len(X))
    assert diagonal is (not rotate or kappa == 1.0)  # scaled columns, or a rotation of them
    assert (len(data.train), len(data.val), len(data.test)) == (700, 150, 150)
    assert data.theta is not None and torch.allclose(
        data.train.y, data.train.X @ data.theta, atol=0.01
    )  # y = Xθ + 0.001 ε


def test_ill_conditioned_validation_rows_share_the_training_covariance(quiet_config):
    data = build(quiet_config("data=ill_conditioned", "data.n=20000", "data.condition_number=100")).data
    X_train, X_test = data.train.X.double(), data.test.X.double()
    sigma_train = X_train.T @ X_train / len(X_train)
    sigma_test = X_test.T @ X_test / len(X_test)
    torch.testing.assert_close(sigma_test, sigma_train, atol=0.03, rtol=0.1)


def test_ill_conditioned_needs_as_many_training_rows_as_columns(quiet_config):
    with pytest.raises(
        ConfigError, match=r"data.n=10 is not allowed: must give at least dim=10 training rows"
    ):
        build(quiet_config("data=ill_conditioned", "data.n=10"))
    with pytest.raises(ConfigError, match=r"data.condition_number=0.5 is not allowed: must be >= 1"):
        build(quiet_config("data=ill_conditioned", "data.condition_number=0.5"))


def test_polynomial_features_are_powers_and_the_true_coefficients_stop_at_true_degree(quiet_config):
    data = build(quiet_config("data=polynomial", "trainer.dtype=float64")).data
    X = data.train.X
    x = X[:, 1]
    assert X.shape[1] == 13 and torch.all(x.abs() <= 1)
    torch.testing.assert_close(X, x[:, None] ** torch.arange(13, dtype=X.dtype))
    assert data.theta is not None
    assert torch.all(data.theta[4:] == 0) and torch.all(data.theta[:4] != 0)
    residual = data.train.y - X @ data.theta
    assert 0.1 < float(residual.std()) < 0.6  # σ = 0.3 on 20 points
    with pytest.raises(ConfigError, match=r"data.true_degree=5 is not allowed: must be in \[0, degree=3\]"):
        build(quiet_config("data=polynomial", "data.degree=3", "data.true_degree=5"))
