"""The training loop on the lecture's problem: convergence, stop reasons, restore, seeds, batches."""

from __future__ import annotations

import math

import pytest
import torch

from src.config import Sampling
from src.data import Split
from src.loop import StopTraining, batches, epoch_order, evaluate, loss_and_grad
from src.models import LinearRegression
from src.train import build, train

OPTIMIZERS = [
    "gd",
    "sgd",
    "momentum",
    "nesterov",
    "adam",
    "adamw",
    "rmsprop",
    "adagrad",
    "lbfgs",
    "newton",
    "preconditioned",
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_recovers_theta(quiet_config, optimizer):
    result = train(quiet_config(f"optimizer={optimizer}"))
    assert result.param_error is not None and result.param_error <= 1e-3
    assert result.best_val_loss < 2e-6  # the noise floor is σ² = 1e-6
    assert math.isfinite(result.test_loss) and result.test_loss < 2e-6


def test_gd_takes_one_full_batch_step_per_epoch(quiet_config):
    """After one epoch, θ₁ = θ₀ − η ∇L(θ₀) with ∇L(θ) = −(2/N) X'(y − Xθ), the lecture's GD."""
    cfg = quiet_config("optimizer=gd", "trainer.max_epochs=1", "trainer.dtype=float64")
    parts = build(cfg)
    model, X, y = parts.model, parts.data.train.X, parts.data.train.y
    assert isinstance(model, LinearRegression)
    theta0 = model.weight.detach().clone()
    expected = theta0 + cfg.optimizer.lr * 2 / len(y) * X.T @ (y - X @ theta0)
    from src.loop import fit

    fit(parts)
    torch.testing.assert_close(model.weight.detach(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["optimizer=gd", "trainer.dtype=float64", "trainer.stopping_threshold=1e-4"], "converged"),
        ([], "early_stopped"),
        (["optimizer=gd", "optimizer.lr=1.5"], "diverged"),  # |1 − 2η| = 2 > 1: GD blows up
        (["optimizer.lr=1e4"], "non_finite"),
        (["trainer.max_epochs=7"], "max_epochs"),
        (["trainer.max_time=0.05", "trainer.patience=100000"], "max_time"),
    ],
)
def test_stop_reasons(quiet_config, overrides, reason):
    result = train(quiet_config(*overrides))
    assert result.stop_reason == reason
    last = result.history[-1]
    if reason == "converged":  # relative to the exact minimum: L − L* < 1e-4 |L*|
        assert result.reference_loss is not None
        gaps = [float(m.opt_gap or 0) for m in result.history]
        tolerance = 1e-4 * result.reference_loss
        assert gaps[-1] < tolerance and all(g >= tolerance for g in gaps[:-1])
    if reason == "early_stopped":
        assert result.epochs - result.best_epoch == 50  # the lecture's patience
    if reason == "diverged":  # relative to the starting loss, ≈ 1.8 here
        assert math.isfinite(last.val_loss) and last.val_loss > 1e5 * result.history[0].val_loss / 4
    if reason == "non_finite":
        assert not math.isfinite(last.val_loss)
    if reason == "max_epochs":
        assert result.epochs == 7


def test_a_diverged_epoch_is_never_the_best(quiet_config):
    """Newton with η = 1e10 overshoots θ* by a factor 1e10 in its first step: no epoch is better
    than θ₀, so θ₀ is kept (and test_loss is its loss), rather than the diverged epoch's θ."""
    from src.loop import fit

    parts = build(quiet_config("optimizer=newton", "optimizer.lr=1e10"))
    assert isinstance(parts.model, LinearRegression)
    theta0 = parts.model.weight.detach().clone()
    result = fit(parts)
    assert result.stop_reason == "diverged" and result.history[0].val_loss > 1e5
    assert (result.best_epoch, result.best_val_loss) == (0, math.inf)
    assert torch.equal(parts.model.weight.detach(), theta0)
    assert result.test_loss == evaluate(parts.learner, parts.data.test)


def test_a_callback_can_stop_training(quiet_config):
    class StopAtThree:
        def on_epoch_end(self, metrics):
            if metrics.epoch == 3:
                raise StopTraining("pruned")

    result = train(quiet_config(), callbacks=[StopAtThree()])
    assert (result.stop_reason, result.epochs) == ("pruned", 3)


def test_restored_parameters_are_the_best_epochs_copy(quiet_config):
    # Constant-η SGD wanders in a noise ball, so the last epoch is worse than the best one.
    cfg = quiet_config("trainer.patience=1000", "trainer.max_epochs=60", "optimizer.lr=0.3")
    parts = build(cfg)
    from src.loop import fit

    result = fit(parts)
    assert result.history[-1].val_loss > result.best_val_loss
    assert result.best_epoch < result.epochs
    restored = evaluate(parts.learner, parts.data.val)
    assert restored == result.best_val_loss  # bitwise: the best epoch's parameters, not the last
    assert result.param_error == result.history[result.best_epoch - 1].param_error


def test_same_seed_same_numbers_other_seed_other_numbers(quiet_config):
    def history(seed: int) -> list[tuple[float, float]]:
        result = train(quiet_config(f"seed={seed}", "trainer.max_epochs=20"))
        return [(m.train_loss, m.val_loss) for m in result.history]

    assert history(3) == history(3)
    assert history(3) != history(4)


def test_without_validation_split_train_loss_is_monitored(quiet_config):
    from src.loop import fit

    parts = build(quiet_config("data.val_prop=0", "trainer.max_epochs=20"))
    assert len(parts.data.val) == 0
    result = fit(parts)
    # The restored best parameters' loss on the training split is exactly the best monitored loss.
    assert evaluate(parts.learner, parts.data.train) == result.best_val_loss
    assert result.param_error is not None and result.param_error < 1e-3


def row_ids(n: int, size: int, sampling: Sampling, g: torch.Generator) -> list[list[int]]:
    """The rows of each batch of one epoch, read back from the batches themselves."""
    split = Split(torch.arange(n, dtype=torch.float64)[:, None], torch.zeros(n))
    return [xb[:, 0].long().tolist() for xb, _ in batches(split, size, epoch_order(n, size, sampling, g))]


def test_shuffle_covers_each_row_once_in_a_new_order_each_epoch():
    g = torch.Generator().manual_seed(0)
    first, second = row_ids(100, 32, Sampling.shuffle, g), row_ids(100, 32, Sampling.shuffle, g)
    assert [len(b) for b in first] == [32, 32, 32, 4]
    assert sorted(row for batch in first for row in batch) == list(range(100))
    assert first != second


def test_sequential_keeps_the_stored_order():
    g = torch.Generator().manual_seed(0)
    assert row_ids(10, 4, Sampling.sequential, g) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_full_batch_is_the_whole_split():
    g = torch.Generator().manual_seed(0)
    assert row_ids(10, 10, Sampling.shuffle, g) == [list(range(10))]


def test_replacement_draws_full_batches_that_repeat_rows():
    g = torch.Generator().manual_seed(0)
    rows = [row for batch in row_ids(1000, 32, Sampling.replacement, g) for row in batch]
    assert len(rows) == 32 * 32  # ⌈1000/32⌉ batches of 32
    assert len(set(rows)) < len(rows)  # P(no repeat in 1024 draws from 1000) is ~0


@pytest.mark.parametrize("bias", [False, True])
def test_closed_form_gradient_matches_autograd_of_the_loss(bias):
    g = torch.Generator().manual_seed(1)
    X, y = (
        torch.randn(50, 3, generator=g, dtype=torch.float64),
        torch.randn(50, generator=g, dtype=torch.float64),
    )
    model = LinearRegression(3, bias=bias, generator=g).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    loss = loss_and_grad(model, X, y)
    closed = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    reference = model.loss(X, y)  # (1/N) Σ (y − xθ − b)², differentiated by autograd
    auto = torch.autograd.grad(reference, list(model.parameters()))
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-14, atol=0)
    for c, a in zip(closed, auto, strict=True):
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("sampling", ["shuffle", "replacement", "sequential"])
def test_each_sampling_mode_converges(quiet_config, sampling):
    result = train(quiet_config(f"trainer.sampling={sampling}"))
    assert result.param_error is not None and result.param_error <= 1e-3


def test_train_loss_is_the_batch_size_weighted_mean(quiet_config):
    # With η ≈ 0, θ stays at θ₀, so the size-weighted mean of the batch losses (300, 300, 100 rows)
    # must equal the loss on the whole training split; an unweighted mean would not.
    cfg = quiet_config(
        "optimizer.lr=1e-30", "trainer.batch_size=300", "trainer.max_epochs=1", "trainer.dtype=float64"
    )
    parts = build(cfg)
    expected = evaluate(parts.learner, parts.data.train)
    from src.loop import fit

    result = fit(parts)
    assert result.history[0].train_loss == pytest.approx(expected, rel=1e-12)
