"""Each lesson in experiments/ teaches what it says.

A lesson's grid (its `hydra.sweeper.params`) is expanded with Hydra's own override parser, as
`--multirun` does, and each point is trained in-process with tracking off; one lesson also runs
as the real `python -m src.train --multirun +experiment=...` command.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from src.loop import EpochMetrics, FitResult, evaluate, fit
from src.loop.training import Training
from src.models import LinearRegression
from src.train import CONF, build
from tests.helpers import all_runs

LESSONS = ["batch_size", "conditioning", "early_stopping", "momentum", "ridge", "robbins_monro"]


def grid(lesson: str, seeds: bool = True) -> list[tuple[str, ...]]:
    """The override combinations `--multirun +experiment=<lesson>` launches; `seeds=False` leaves out
    the seed axis of a lesson that repeats its runs (each point then runs with the default seed 0)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"+experiment={lesson}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items() if seeds or key != "seed"]
    axes = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        for o in OverridesParser.create().parse_overrides(params)
    ]
    return list(itertools.product(*axes))


def run_lesson(lesson: str) -> dict[str, tuple[Training, FitResult]]:
    """Train every grid point; keyed by its overrides, e.g. 'data.condition_number=100.0 optimizer=gd'."""
    out = {}
    for point in grid(lesson, seeds=False):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("config", overrides=[f"+experiment={lesson}", *point, "trainer.progress=false"])
        cfg.tracking = {"_target_": "src.tracking.NullTracker"}
        parts = build(cfg)
        out[" ".join(point)] = (parts, fit(parts))
    return out


def error(metrics: EpochMetrics | FitResult) -> float:
    """‖θ − θ̂‖, known on every lesson's simulated data."""
    assert metrics.param_error is not None
    return metrics.param_error


def test_every_lesson_has_a_grid_and_its_own_mlflow_experiment():
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for lesson in LESSONS:
        assert (experiments / f"{lesson}.yaml").is_file()
        assert len(grid(lesson)) >= 2
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("config", overrides=[f"+experiment={lesson}"])
        assert cfg.tracking.experiment == f"lesson-{lesson}"


@pytest.mark.parametrize("lesson", ["batch_size", "robbins_monro", "momentum"])
def test_stochastic_lessons_repeat_each_point_on_five_seeds(lesson):
    points = grid(lesson)
    seeds = {dict(o.split("=", 1) for o in point)["seed"] for point in points}
    assert seeds == {"0", "1", "2", "3", "4"}
    assert len(points) == 5 * len(grid(lesson, seeds=False))


def test_conditioning_newton_at_once_gd_slows_with_kappa_preconditioning_does_not():
    runs = {key: result for key, (_, result) in run_lesson("conditioning").items()}

    def iterations(kappa: str, optimizer: str) -> int:
        result = runs[f"data.condition_number={kappa} optimizer={optimizer}"]
        return result.epochs if result.stop_reason == "converged" else 10**9  # not within max_epochs

    for kappa in ("1", "100.0", "10000.0"):
        assert iterations(kappa, "newton") <= 2  # least squares: one Newton step
        assert iterations(kappa, "preconditioned") <= 2  # Jacobi undoes the badly scaled columns
        assert iterations(kappa, "lbfgs") < 100
    assert iterations("1", "gd") < iterations("100.0", "gd") < iterations("10000.0", "gd")
    assert runs["data.condition_number=10000.0 optimizer=gd"].stop_reason == "max_epochs"
    assert iterations("10000.0", "preconditioned") < iterations("10000.0", "gd")


def test_momentum_nesterov_and_heavy_ball_beat_gradient_descent_at_kappa_1e2():
    runs = {key: result for key, (_, result) in run_lesson("momentum").items()}
    assert {r.stop_reason for r in runs.values()} == {"converged"}  # ‖∇L‖ < 1e-6
    gd, heavy_ball, nesterov = (runs[f"optimizer={o}"].epochs for o in ("gd", "momentum", "nesterov"))
    assert nesterov < heavy_ball < gd
    assert nesterov * 3 < gd  # ~√κ against ~κ iterations


def test_batch_size_small_batches_progress_faster_per_gradient_evaluation_then_stall_noisier():
    runs = {key: result for key, (_, result) in run_lesson("batch_size").items()}
    one, many, full = (runs[f"trainer.batch_size={b}"].history for b in ("1", "32", "null"))
    # After one epoch (N per-example gradients each), more steps went further.
    assert one[0].val_loss < many[0].val_loss < full[0].val_loss
    # The batch gradient's variance: ≈ 1/|B| of the per-example one, none for the full batch.
    variance = {b: [m.grad_variance or 0.0 for m in h] for b, h in (("1", one), ("32", many), ("full", full))}
    assert variance["full"] == [0.0] * len(full) and full[0].grad_variance == 0.0
    assert variance["1"][-1] > 10 * variance["32"][-1] > 0
    # With a constant η, |B| = 1 ends on a higher noise floor than |B| = 32.
    assert one[-1].val_loss > many[-1].val_loss


def test_robbins_monro_keeps_shrinking_the_error_where_constant_eta_stalls():
    runs = {key: result for key, (_, result) in run_lesson("robbins_monro").items()}
    constant, decaying = runs["schedule=constant"].history, runs["schedule=robbins_monro"].history
    assert error(decaying[-1]) < error(constant[-1]) / 3
    assert decaying[-1].lr < constant[-1].lr / 100
    # Constant η's error no longer trends down over the second half: a noise ball.
    half = len(constant) // 2
    assert min(error(m) for m in constant[half:]) > error(decaying[-1])


def test_ridge_path_matches_the_closed_form():
    runs = run_lesson("ridge")
    errors = {}
    for key, (parts, result) in runs.items():
        alpha = float(key.split("=")[1])
        X, y = parts.data.train.X, parts.data.train.y
        closed_form = torch.linalg.solve(
            X.T @ X + len(y) * alpha / 2 * torch.eye(X.shape[1], dtype=X.dtype), X.T @ y
        )
        assert isinstance(parts.model, LinearRegression)
        assert float(torch.linalg.vector_norm(parts.model.weight.detach() - closed_form)) < 1e-6
        errors[alpha] = error(result)
    assert len(errors) == 6
    # On a noisy, badly conditioned design some shrinkage estimates θ better than OLS (α = 0).
    assert min(e for a, e in errors.items() if a > 0) < errors[0.0]
    assert errors[1.0] > errors[0.0]  # and too much is bias


def test_early_stopping_restores_the_best_validation_epoch():
    runs = run_lesson("early_stopping")
    for parts, result in runs.values():
        val = [m.val_loss for m in result.history]
        assert result.best_epoch == 1 + val.index(min(val))
        assert evaluate(parts.learner, parts.data.val) == result.best_val_loss  # bitwise: restored
        assert result.stop_reason == "early_stopped" and result.epochs == result.best_epoch + 300
    _, overfit = runs["data.degree=12"]
    best = overfit.history[overfit.best_epoch - 1]
    assert overfit.history[-1].val_loss > 2 * best.val_loss  # val turned up ...
    assert overfit.history[-1].train_loss < best.train_loss  # ... while train kept falling
    _, right = runs["data.degree=3"]
    assert right.best_val_loss < overfit.history[-1].val_loss


@pytest.mark.slow
@pytest.mark.parametrize("lesson", ["early_stopping"])
def test_a_lesson_runs_as_the_documented_command(cli, tmp_path, lesson):
    proc = cli("--multirun", f"+experiment={lesson}")
    assert proc.returncode == 0, proc.stderr
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", f"lesson-{lesson}")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == len(grid(lesson)) and {r.info.status for r in runs} == {"FINISHED"}
    assert "adam degree=12" in proc.stdout  # the comparison table names each grid point
    assert (tmp_path / "multirun" / "compare.png").stat().st_size > 0
