"""Each schedule's η_t against its formula, and the Robbins–Monro verdict for each schedule."""

from __future__ import annotations

import math

import pytest

from src.config import ConfigError
from src.schedules import robbins_monro_verdict
from src.train import build, train
from tests.helpers import all_runs

ETA0 = 0.1
T = 100


def formula(name: str, t: int) -> float:
    if name == "constant":
        return ETA0
    if name == "step":  # step_size = 10, γ = 0.5 (overridden below)
        return ETA0 * 0.5 ** (t // 10)
    if name == "exponential":  # γ = 0.99
        return ETA0 * 0.99**t
    if name == "cosine":  # T_max = max_epochs = 100, η_min = 0
        return ETA0 * (1 + math.cos(math.pi * t / T)) / 2
    if name == "warmup_cosine":  # W = 10, s = 0.1, T_max = 100, η_min = 0
        if t < 10:
            return ETA0 * (0.1 + 0.9 * t / 10)
        return ETA0 * (1 + math.cos(math.pi * (t - 10) / (T - 10))) / 2
    if name == "robbins_monro":  # τ = 100, κ = 1
        return ETA0 / (1 + t / 100)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["constant", "step", "exponential", "cosine", "warmup_cosine", "robbins_monro"]
)
def test_schedule_follows_its_formula_for_100_steps(quiet_config, name):
    """One full-batch step per epoch, so the epoch's logged lr is η_t, t = epoch − 1, for either interval."""
    cfg = quiet_config(
        f"schedule={name}",
        *(["schedule.step_size=10"] if name == "step" else []),
        "optimizer=gd",
        f"optimizer.lr={ETA0}",
        "data.n=20",
        f"trainer.max_epochs={T}",
        "trainer.patience=100000",
        "trainer.stopping_threshold=null",
    )
    result = train(cfg)
    assert len(result.history) == T
    for t, metrics in enumerate(result.history):
        assert metrics.lr == pytest.approx(formula(name, t), rel=1e-9, abs=1e-15), t


@pytest.mark.parametrize("name", ["step", "exponential", "cosine", "warmup_cosine", "robbins_monro"])
def test_each_schedule_converges_on_the_default_problem(quiet_config, name):
    result = train(quiet_config(f"schedule={name}"))
    assert result.param_error is not None and result.param_error <= 1e-3


@pytest.mark.parametrize(
    ("overrides", "satisfied", "because"),
    [
        (["schedule=constant"], False, "Σ η_t² = ∞"),
        (["schedule=step"], False, "Σ η_t < ∞"),
        (["schedule=step", "schedule.gamma=1"], False, "Σ η_t² = ∞"),
        (["schedule=exponential"], False, "Σ η_t < ∞"),
        (["schedule=cosine"], False, "does not → 0"),
        (["schedule=warmup_cosine"], False, "does not → 0"),
        (["schedule=robbins_monro"], True, "Σ η_t = ∞ (κ ≤ 1) and Σ η_t² < ∞ (2κ > 1)"),
        (["schedule=robbins_monro", "schedule.kappa=0.75"], True, "κ = 0.75 ∈ (0.5, 1]"),
        (["schedule=robbins_monro", "schedule.kappa=0.5"], False, "Σ η_t² = ∞ (2κ ≤ 1)"),
        (["schedule=robbins_monro", "schedule.kappa=0.4"], False, "Σ η_t² = ∞ (2κ ≤ 1)"),
        (["schedule=robbins_monro", "schedule.kappa=1.5"], False, "Σ η_t < ∞"),
    ],
)
def test_robbins_monro_verdict(quiet_config, overrides, satisfied, because):
    verdict, reason = robbins_monro_verdict(build(quiet_config(*overrides)).scheduler)
    assert verdict is satisfied
    assert because in reason


def test_robbins_monro_verdict_agrees_with_the_partial_sums():
    """A numerical sanity check of the analytic verdicts: over 10⁶ steps, Σ η_t² of κ = 1 settles
    (its tail beyond t is ≈ η₀²τ²/t) while κ = 0.4's keeps growing like t^0.2."""

    def sums(kappa: float, t: int) -> tuple[float, float]:
        etas = [(1 + s / 100) ** -kappa for s in range(t)]
        return sum(etas), sum(e * e for e in etas)

    s1, q1 = sums(1.0, 10**5)
    s2, q2 = sums(1.0, 10**6)
    assert s2 - s1 > 200 and q2 - q1 < 0.1 * q1  # Σ η grows like τ ln t; Σ η² has converged
    _, q1 = sums(0.4, 10**5)
    _, q2 = sums(0.4, 10**6)
    assert q2 - q1 > 0.3 * q1


@pytest.mark.slow
def test_kappa_outside_the_conditions_runs_and_reports_the_verdict(cli, tmp_path):
    proc = cli("schedule=robbins_monro", "schedule.kappa=0.4", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in (proc.stdout + proc.stderr).splitlines() if "Robbins-Monro" in line]
    assert "[INFO]" in line  # information, not an alarm
    assert "conditions (Σ η_t = ∞, Σ η_t² < ∞) do not hold: η₀/(1 + t/τ)^κ with κ = 0.4 ≤ 0.5" in line
    (run,) = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.data.tags["robbins_monro"] == "false"
    assert "2κ ≤ 1" in run.data.tags["robbins_monro.reason"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["schedule=robbins_monro", "schedule.kappa=0"], "schedule.kappa=0.0 is not allowed: must be > 0"),
        (
            ["schedule=exponential", "schedule.gamma=1.5"],
            "schedule.gamma=1.5 is not allowed: must be in (0, 1]",
        ),
        (
            ["schedule=warmup_cosine", "schedule.warmup=300"],
            "schedule.warmup=300 is not allowed: must be in [1, T_max=300)",
        ),
        (["schedule=cosine", "schedule.eta_min=-1"], "schedule.eta_min=-1.0 is not allowed: must be >= 0"),
    ],
)
def test_schedule_values_are_checked(quiet_config, overrides, message):
    with pytest.raises(ConfigError) as error:
        build(quiet_config(*overrides))
    assert str(error.value) == message
