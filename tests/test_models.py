"""Model choices: the logit's loss and gradient against their formulas, the MLP's shape and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from src.models import MLP, LogisticRegression
from src.train import build, train


@pytest.mark.parametrize("bias", [False, True])
def test_logit_loss_is_the_mean_negative_log_likelihood_and_its_gradient_is_exact(bias):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = (torch.rand(40, generator=g, dtype=torch.float64) < 0.4).double()
    model = LogisticRegression(3, bias=bias, generator=g).double()
    if model.bias is not None:
        with torch.no_grad():
            model.bias.fill_(0.3)
    w, b = model.weight.detach().numpy(), 0.3 if bias else 0.0
    p = 1 / (1 + np.exp(-(X.numpy() @ w + b)))
    nll = -np.mean(y.numpy() * np.log(p) + (1 - y.numpy()) * np.log(1 - p))
    assert float(model.loss(X, y).detach()) == pytest.approx(nll, rel=1e-13)

    params = list(model.parameters())
    expected = torch.autograd.grad(model.loss(X, y), params)
    loss = model.loss_and_grad(X, y)
    assert float(loss) == pytest.approx(nll, rel=1e-13)
    for param, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-12, atol=1e-15)
    # ∇_θ L = (1/N) Xᵀ(p − y), the formula itself
    weight_grad = model.weight.grad
    assert weight_grad is not None
    np.testing.assert_allclose(weight_grad.numpy(), X.numpy().T @ (p - y.numpy()) / 40, rtol=1e-12)


def test_mlp_layers_activation_and_initial_bounds():
    g = torch.Generator().manual_seed(0)
    model = MLP(3, hidden=[5, 4], activation="relu", generator=g)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 5), (5, 4), (4, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2  # none after the output layer
    for m in linears:  # nn.Linear's own default: U(−1/√fan_in, 1/√fan_in)
        bound = 1 / np.sqrt(m.in_features)
        weight, bias = m.weight.detach().abs().max(), m.bias.detach().abs().max()
        assert bound / 2 < float(weight) <= bound and float(bias) <= bound
    X, y = torch.randn(10, 3, generator=g), torch.randn(10, generator=g)
    assert model(X).shape == (10,)
    assert float(model.loss(X, y).detach()) == pytest.approx(float(((model(X) - y) ** 2).mean().detach()))


def test_mlp_initial_values_come_from_the_run_generator_only(quiet_config):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = MLP(2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not drawn from
    again = MLP(2, generator=torch.Generator().manual_seed(5))
    other = MLP(2, generator=torch.Generator().manual_seed(6))
    for a, b, c in zip(first.parameters(), again.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.slow
def test_mlp_fits_the_curve_a_linear_model_cannot(quiet_config):
    common = ("data=nonlinear", "optimizer=adam", "trainer.max_epochs=40")
    mlp = train(quiet_config(*common, "model=mlp"))
    linear = train(quiet_config(*common, "model=linear", "model.bias=true"))
    # σ² = 0.01 is the floor; a line through sin(x·θ) leaves most of its variance.
    assert mlp.best_val_loss < 0.05 < 0.2 < linear.best_val_loss


def test_unknown_activation_is_refused_at_compose_time(cli):
    proc = cli("model=mlp", "model.activation=swish")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: model.activation") and "tanh, relu, gelu, sigmoid, silu" in line


def test_logistic_model_on_logistic_data_builds_in_float64(quiet_config):
    parts = build(quiet_config("data=logistic", "model=logistic", "model.bias=true", "trainer.dtype=float64"))
    model, ref = parts.model, parts.reference
    assert ref is not None and ref.theta.shape == (3,)  # two weights, then the bias
    assert [p.dtype for p in model.parameters()] == [torch.float64, torch.float64]
