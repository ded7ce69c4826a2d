"""The loop's grad_variance metric and its gradient-tolerance stop, against their definitions."""

from __future__ import annotations

import pytest
import torch

from src.config import Sampling
from src.loop import gradient_variance
from src.train import build, train


def per_example_gradients(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """∇ℓ_n(θ) = −2 (y_n − x_n·θ) x_n for ℓ_n = (y_n − x_n·θ)², one row per example."""
    return -2 * (y - X @ theta)[:, None] * X


@pytest.fixture
def problem(quiet_config):
    parts = build(quiet_config("trainer.dtype=float64", "data.n=300", "data.noise_std=0.5"))
    return parts.model, parts.data.train


@pytest.mark.parametrize(
    ("size", "sampling"), [(1, "shuffle"), (8, "shuffle"), (8, "replacement"), (50, "sequential")]
)
def test_gradient_variance_is_the_per_example_variance_over_the_batch_size(problem, size, sampling):
    model, split = problem
    G = per_example_gradients(split.X, split.y, model.weight.detach())
    N = len(G)
    S2 = float((G - G.mean(0)).pow(2).sum(1).mean())  # the lecture's E‖∇ℓ − ∇L‖²
    finite_population = 1.0 if sampling == "replacement" else (N - size) / (N - 1)
    expected = S2 / size * finite_population
    assert gradient_variance(model, split, size, Sampling(sampling)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("replacement", [False, True])
def test_gradient_variance_is_what_random_batches_show(problem, replacement):
    """Monte Carlo: the mean of ‖g_B − ∇L‖² over 20,000 random batches of 8 rows."""
    model, split = problem
    G = per_example_gradients(split.X, split.y, model.weight.detach())
    N, size, draws = len(G), 8, 20_000
    generator = torch.Generator().manual_seed(1)
    if replacement:
        rows = torch.randint(N, (draws, size), generator=generator)
    else:
        rows = torch.rand(draws, N, generator=generator).argsort(dim=1)[:, :size]
    deviations = G[rows].mean(1) - G.mean(0)
    observed = float(deviations.pow(2).sum(1).mean())
    sampling = Sampling.replacement if replacement else Sampling.shuffle
    assert gradient_variance(model, split, size, sampling) == pytest.approx(observed, rel=0.05)


def test_full_batch_has_no_gradient_variance(problem):
    model, split = problem
    assert gradient_variance(model, split, len(split), Sampling.shuffle) == 0.0
    assert gradient_variance(model, split, len(split), Sampling.sequential) == 0.0


def test_grad_variance_is_logged_only_on_request(quiet_config):
    plain = train(quiet_config("trainer.max_epochs=3"))
    assert all(m.grad_variance is None for m in plain.history)
    asked = train(quiet_config("trainer.max_epochs=3", "trainer.grad_variance=true"))
    assert all(m.grad_variance is not None and m.grad_variance > 0 for m in asked.history)


def test_grad_tol_stops_at_the_first_epoch_below_it(quiet_config):
    result = train(quiet_config("optimizer=gd", "trainer.dtype=float64", "trainer.grad_tol=1e-5"))
    assert result.stop_reason == "converged"
    norms = [m.grad_norm for m in result.history]
    assert norms[-1] < 1e-5 and all(n >= 1e-5 for n in norms[:-1])
    # GD on L with ∇²L ≈ 2I and η = 0.1 contracts the gradient by about 0.8 per step.
    assert 0.7 < norms[-1] / norms[-2] < 0.9


def test_the_losses_at_theta_star_leave_theta_star_and_the_trained_parameters_as_they_were():
    from src.loop import fit
    from tests.helpers import make_config

    run = build(make_config("tracking=none", "trainer.max_epochs=5", "trainer.progress=false"))
    assert run.reference is not None
    theta_star = run.reference.theta.clone()
    result = fit(run)
    trained = torch.cat([p.detach().reshape(-1) for p in run.model.parameters()])
    assert torch.equal(run.reference.theta, theta_star)  # θ* itself is never written to
    assert not torch.allclose(trained.double(), theta_star)  # the model keeps its own best θ
    X, y = run.data.val.X.double(), run.data.val.y.double()
    at_star = float(torch.mean((X @ theta_star - y) ** 2))
    assert result.reference_val_loss == pytest.approx(at_star, rel=1e-4)  # a float32 model: y − Xθ rounds
