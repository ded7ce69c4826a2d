"""src/loop/batched.py: runs trained as one batch give what each run gives trained alone.

The reference is the existing single-run path, `fit(build(cfg))`, for the same configs: per epoch
every metric to 1e-12 relative in float64, the same stop epoch and reason, the same best epoch,
test loss and restored parameters."""

from __future__ import annotations

import math

import pytest
import torch

from src.loop import EpochMetrics, FitResult, StopTraining, fit
from src.loop.batched import fit_batch, why_not_batched
from src.train import build, compose

METRICS = ("train_loss", "val_loss", "lr", "grad_norm", "param_error", "opt_gap", "ref_error")


def runs_of(*configs: tuple[str, ...]) -> list:
    return [build(compose("tracking=none", "trainer.dtype=float64", *c)) for c in configs]


def assert_same(alone: FitResult, batched: FitResult, rtol: float = 1e-12) -> None:
    assert (batched.stop_reason, batched.epochs) == (alone.stop_reason, alone.epochs)
    assert batched.best_epoch == alone.best_epoch
    assert len(batched.history) == len(alone.history) == alone.epochs
    for one, row in zip(alone.history, batched.history, strict=True):
        assert row.epoch == one.epoch
        for key in METRICS:
            a, b = getattr(one, key), getattr(row, key)
            assert (a is None) == (b is None), key
            if a is not None:
                assert math.isclose(b, a, rel_tol=rtol, abs_tol=0.0), (one.epoch, key, a, b)
    for key in ("best_val_loss", "test_loss", "param_error"):
        assert math.isclose(getattr(batched, key), getattr(alone, key), rel_tol=rtol), key


CASES = {
    "sgd": ("optimizer=sgd",),
    "momentum": ("optimizer=momentum", "optimizer.dampening=0.1", "optimizer.weight_decay=0.001"),
    "nesterov": ("optimizer=nesterov", "model.bias=true"),
    "adam": ("optimizer=adam", "optimizer.weight_decay=0.01"),
    "schedule": ("optimizer=momentum", "schedule=step", "schedule.step_size=20"),
    "step_schedule": ("optimizer=adamw", "schedule=robbins_monro", "trainer.sampling=replacement"),
    "logistic": ("data=logistic", "model=logistic", "model.bias=true", "regularization.l2=0.001"),
}
# The logit's exp runs vectorized over the stacked (R, n) batch and over a single run's (n,) one:
# torch's SIMD exp and its scalar tail can differ in the last bit for the same input, so the
# trajectories part by ulps; least squares has no transcendental function and agrees to ~1e-15.
RTOL = {"logistic": 1e-9}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c == "logistic" else c for c in CASES]
)
def test_each_seed_as_if_alone(case: str) -> None:
    configs = [(*CASES[case], f"seed={seed}") for seed in range(3)]
    alone = [fit(run) for run in runs_of(*configs)]
    batched = fit_batch(runs_of(*configs))
    for one, row in zip(alone, batched, strict=True):
        assert_same(one, row, RTOL.get(case, 1e-12))
    assert len({r.epochs for r in alone}) > 1  # rows stopped at different epochs: the masks mattered


def test_a_grid_of_hyper_parameters_as_if_alone() -> None:
    """Rows differ in learning rate, momentum (0 or not), Nesterov and schedule constants."""
    grid = [
        ("optimizer=sgd", "optimizer.lr=0.02", "seed=1"),
        ("optimizer=momentum", "optimizer.lr=0.01", "seed=1"),
        ("optimizer=nesterov", "optimizer.lr=0.03", "seed=2"),
        ("optimizer=sgd", "optimizer.lr=3.0", "seed=3"),  # diverges quickly
    ]
    configs = [(*c, "schedule=exponential", f"schedule.gamma={0.9 + i / 100}") for i, c in enumerate(grid)]
    alone = [fit(run) for run in runs_of(*configs)]
    batched = fit_batch(runs_of(*configs))
    for one, row in zip(alone, batched, strict=True):
        assert_same(one, row)
    assert "diverged" in {r.stop_reason for r in alone}


def test_restored_parameters_are_the_best_epochs() -> None:
    configs = [("optimizer=momentum", f"seed={seed}") for seed in range(2)]
    alone_runs, batch_runs = runs_of(*configs), runs_of(*configs)
    for run in alone_runs:
        fit(run)
    fit_batch(batch_runs)
    for one, row in zip(alone_runs, batch_runs, strict=True):
        torch.testing.assert_close(row.model.state_dict(), one.model.state_dict(), rtol=1e-12, atol=0)


class StopAt:
    """A pruner-like callback: stops its row at a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        if metrics.epoch == self.epoch:
            raise StopTraining("pruned")


def test_a_callback_stops_only_its_row() -> None:
    configs = [("optimizer=sgd", f"seed={seed}") for seed in range(3)]
    results = fit_batch(runs_of(*configs), callbacks=[(), (StopAt(5),), ()])
    assert (results[1].stop_reason, results[1].epochs) == ("pruned", 5)
    alone = fit(runs_of(configs[2])[0])
    assert_same(alone, results[2])


def test_runs_that_cannot_share_a_batch_are_named() -> None:
    assert why_not_batched(runs_of(("optimizer=sgd",), ("optimizer=adam",))) is not None
    assert (
        why_not_batched(
            runs_of(
                ("optimizer=lbfgs", "trainer.batch_size=null"),
            )
        )
        is not None
    )
    assert why_not_batched(runs_of(("trainer.batch_size=16",), ("trainer.batch_size=32",))) is not None
    assert (
        why_not_batched(
            runs_of(
                ("model=mlp",),
            )
        )
        is not None
    )
    assert why_not_batched(runs_of(("seed=1",), ("seed=2", "optimizer.lr=0.3"))) is None


def test_float32_steps_are_the_single_runs() -> None:
    """In float32 the steps are bitwise the single run's (each hyper-parameter is cast to float32 as
    torch casts a Python number); the epoch's reductions (mean, norm) over a stacked tensor may sum
    in another order: a few float32 ulps (≤ 1e-6 relative)."""
    configs = [("optimizer=adam", "trainer.dtype=float32", f"seed={seed}") for seed in range(2)]
    alone = [fit(run) for run in runs_of(*configs)]
    batched = fit_batch(runs_of(*configs))
    for one, row in zip(alone, batched, strict=True):
        assert_same(one, row, rtol=1e-6)
        assert row.test_loss == one.test_loss  # the restored parameters are the same bits
