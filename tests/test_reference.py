"""Exact references against statsmodels, scipy and the normal equations; opt_gap and ref_error per epoch."""

from __future__ import annotations

import logging
from itertools import pairwise

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from scipy.optimize import minimize
from torch.nn.utils import parameters_to_vector

from src.estimation.reference import least_squares, logistic_mle
from src.loop import EpochMetrics, FitResult, fit
from src.loop.training import Training
from src.models import LogisticRegression
from src.train import CONF, build, train


def opt_gaps(result: FitResult) -> list[float]:
    gaps = [m.opt_gap for m in result.history]
    assert all(g is not None for g in gaps)
    return gaps  # type: ignore[return-value]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------ the bundled data sets, as runs see them
def test_least_squares_reference_is_statsmodels_ols_on_the_bundled_fair(quiet_config):
    for standardize in ("true", "false"):  # raw units: a design with cond(X) ≈ 350
        parts = build(quiet_config("data=fair", f"data.standardize={standardize}", "trainer.dtype=float64"))
        train, ref = parts.data.train, parts.reference
        assert ref is not None
        ols = sm.OLS(train.y.numpy(), train.X.numpy()).fit()
        assert relative(ref.theta.numpy(), ols.params) < 1e-8
        assert ref.loss == pytest.approx(ols.ssr / len(train), rel=1e-12)


def test_bias_is_the_last_parameter_of_the_reference(quiet_config):
    cfg = quiet_config("data=fair", "data.intercept=false", "model.bias=true", "trainer.dtype=float64")
    parts = build(cfg)
    train, ref = parts.data.train, parts.reference
    assert ref is not None
    ols = sm.OLS(train.y.numpy(), sm.add_constant(train.X.numpy())).fit()  # const first
    assert relative(ref.theta.numpy(), np.roll(ols.params, -1)) < 1e-8


def test_logit_reference_is_statsmodels_logit_on_the_bundled_spector(quiet_config):
    for standardize in ("true", "false"):
        parts = build(
            quiet_config("data=spector", f"data.standardize={standardize}", "trainer.dtype=float64")
        )
        assert isinstance(parts.model, LogisticRegression)  # data=spector picks the logit
        train, ref = parts.data.train, parts.reference
        assert ref is not None
        logit = sm.Logit(train.y.numpy(), train.X.numpy()).fit(method="newton", tol=1e-14, disp=0)
        assert relative(ref.theta.numpy(), logit.params) < 1e-6
        assert ref.loss == pytest.approx(-logit.llf / len(train), rel=1e-10)


def test_logit_on_the_full_spector_gives_the_textbook_estimates():
    """Spector and Mazzeo's logit (Greene, Table 21.1): const −13.02, GPA 2.83, TUCE 0.095, PSI 2.38."""
    from statsmodels.datasets import spector

    d = spector.load_pandas()
    X, y = torch.tensor(d.exog.to_numpy()), torch.tensor(d.endog.to_numpy())
    ref = logistic_mle(X, y, bias=True)
    assert ref is not None
    logit = sm.Logit(d.endog, sm.add_constant(d.exog)).fit(method="newton", tol=1e-14, disp=0)
    assert relative(ref.theta.numpy(), np.roll(logit.params.to_numpy(), -1)) < 1e-6
    np.testing.assert_allclose(ref.theta.numpy(), [2.826, 0.0952, 2.379, -13.02], rtol=2e-3)


# ---------------------------------------------------------------------------------- the penalized variants
def test_ridge_reference_solves_the_penalized_normal_equations():
    """∇[(1/N)‖y − Zθ‖² + (α/2)‖θ‖²] = 0  ⇔  (ZᵀZ + (αN/2) I) θ = Zᵀy, here with Z = [X, 1]."""
    rng = np.random.default_rng(1)
    X, y, alpha = rng.normal(size=(50, 3)), rng.normal(size=50), 0.3
    ref = least_squares(torch.tensor(X), torch.tensor(y), bias=True, l2=alpha)
    Z = np.column_stack([X, np.ones(50)])
    expected = np.linalg.solve(Z.T @ Z + alpha * 50 / 2 * np.eye(4), Z.T @ y)
    np.testing.assert_allclose(ref.theta.numpy(), expected, rtol=1e-12)
    assert ref.loss == pytest.approx(np.mean((y - Z @ expected) ** 2) + alpha / 2 * expected @ expected)
    assert least_squares(torch.tensor(X), torch.tensor(y), bias=True).loss < ref.loss  # penalty costs


def test_penalized_logit_reference_is_scipys_minimizer():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 2))
    y = (rng.uniform(size=80) < 1 / (1 + np.exp(-X @ [1.0, -2.0]))).astype(float)
    alpha = 0.05

    def objective(theta: np.ndarray) -> float:
        z = X @ theta
        return float(np.mean(np.logaddexp(0, z) - y * z) + alpha / 2 * theta @ theta)

    ref = logistic_mle(torch.tensor(X), torch.tensor(y), l2=alpha)
    assert ref is not None
    best = minimize(objective, np.zeros(2), method="BFGS", options={"gtol": 1e-12})
    np.testing.assert_allclose(ref.theta.numpy(), best.x, rtol=1e-6)
    assert ref.loss == pytest.approx(objective(ref.theta.numpy()), rel=1e-14)


def test_separable_classes_have_no_logit_reference(caplog):
    X = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert logistic_mle(X, y) is None
    assert "does not exist" in caplog.text
    assert logistic_mle(X, y, l2=0.1) is not None  # the penalty makes the minimizer finite


# ------------------------------------------------------------------------------------- per-epoch metrics
def fit_recording_theta(parts: Training) -> tuple[FitResult, list[np.ndarray]]:
    """fit, and θ_t (all parameters) at each epoch's end, when the metrics are taken."""
    model, thetas = parts.model, []

    class Record:
        def on_epoch_end(self, metrics: EpochMetrics) -> None:
            thetas.append(parameters_to_vector(model.parameters()).detach().numpy().copy())

    return fit(parts, callbacks=[Record()]), thetas


def test_gd_gap_in_float64_is_the_quadratic_form_and_falls_monotonically(quiet_config):
    """For least squares L(θ) − L(θ̂) = (θ − θ̂)ᵀ (XᵀX/N) (θ − θ̂) exactly, θ̂ from statsmodels."""
    cfg = quiet_config(
        "optimizer=gd", "trainer.dtype=float64", "trainer.max_epochs=150", "trainer.patience=1000",
        "trainer.stopping_threshold=null",
    )  # fmt: skip
    parts = build(cfg)
    X, y = parts.data.train.X.numpy(), parts.data.train.y.numpy()
    theta_hat = sm.OLS(y, X).fit().params
    result, thetas = fit_recording_theta(parts)
    gaps = opt_gaps(result)
    assert len(gaps) == len(thetas) == 150
    for gap, ref_error, theta in zip(gaps, [m.ref_error for m in result.history], thetas, strict=True):
        d = theta - theta_hat
        assert gap == pytest.approx(d @ (X.T @ X / len(y)) @ d, rel=1e-6, abs=1e-19)
        assert ref_error == pytest.approx(np.linalg.norm(d), rel=1e-6, abs=1e-12)
    assert all(g >= -1e-19 for g in gaps)  # never below the minimum, beyond rounding
    assert all(b <= a + 1e-19 for a, b in pairwise(gaps))
    assert gaps[0] > 1e-2 and gaps[-1] < 1e-15


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stochastic_methods_report_a_gap_that_is_never_negative(quiet_config, optimizer):
    result = train(quiet_config(f"optimizer={optimizer}", "trainer.dtype=float64", "trainer.max_epochs=40"))
    gaps = opt_gaps(result)
    assert min(gaps) >= -1e-18 and gaps[-1] < gaps[0] / 100


def test_logistic_gd_gap_falls_to_the_mle(quiet_config):
    cfg = quiet_config(
        "data=logistic", "model=logistic", "optimizer=gd", "optimizer.lr=2", "trainer.dtype=float64",
        "trainer.max_epochs=200", "trainer.patience=1000", "trainer.stopping_threshold=null",
    )  # fmt: skip
    result = train(cfg)
    gaps = opt_gaps(result)
    assert all(g >= -1e-15 for g in gaps) and all(b <= a + 1e-15 for a, b in pairwise(gaps))
    ref_error = result.history[-1].ref_error
    assert gaps[-1] < 1e-10 and ref_error is not None and ref_error < 1e-4


@pytest.mark.parametrize("model", ["linear", "logistic"])
def test_with_an_l2_penalty_the_gap_is_to_the_penalized_minimum(quiet_config, model):
    # η below 2/L: L ≈ 2λ_max(XᵀX/N) + α for least squares, ≤ λ_max(XᵀX/N)/4 + α for the logit.
    data, lr = ("logistic", 2.0) if model == "logistic" else ("linear", 0.5)
    cfg = quiet_config(
        f"data={data}", f"model={model}", "model.bias=true", "regularization.l2=0.1", "optimizer=gd",
        f"optimizer.lr={lr}", "trainer.dtype=float64", "trainer.max_epochs=200", "trainer.patience=1000",
        "trainer.stopping_threshold=null",
    )  # fmt: skip
    result = train(cfg)
    gaps = opt_gaps(result)
    assert min(gaps) >= -1e-15 and gaps[-1] < 1e-12  # GD converges to the reference's minimizer


def test_no_reference_for_the_mlp(quiet_config, caplog):
    caplog.set_level(logging.INFO)
    result = train(quiet_config("data=nonlinear", "model=mlp", "trainer.max_epochs=2"))
    assert result.reference_loss is None
    assert all(m.opt_gap is None and m.ref_error is None for m in result.history)
    assert "no exact reference for MLP" in caplog.text


@pytest.mark.parametrize("optimizer", ["lbfgs", "newton"])
def test_second_order_methods_reach_the_exact_minimum_in_float64(quiet_config, optimizer):
    """Runs once the optimizer catalog (issue 4) provides conf/optimizer/<optimizer>.yaml."""
    if not (CONF / "optimizer" / f"{optimizer}.yaml").exists():
        pytest.skip(f"optimizer={optimizer} is not in this checkout")
    result = train(quiet_config(f"optimizer={optimizer}", "trainer.dtype=float64", "trainer.max_epochs=30"))
    gaps = opt_gaps(result)
    assert min(gaps) < 1e-10 and min(gaps) >= -1e-18


# ------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", ["logistic", "mlp"])
def test_data_model_and_reference_honour_the_dtype(quiet_config, dtype, model):
    parts = build(quiet_config("data=logistic", f"model={model}", f"trainer.dtype={dtype}"))
    data = parts.data
    expected = getattr(torch, dtype)
    assert {t.dtype for s in (data.train, data.val, data.test) for t in (s.X, s.y)} == {expected}
    assert {p.dtype for p in parts.model.parameters()} == {expected}
    if model == "logistic":
        assert (
            parts.reference is not None and parts.reference.theta.dtype == torch.float64
        )  # always computed in float64
