"""hydra/launcher=batched (the default) with our Optuna sweeper: the n_jobs trials asked together
(hydra.launcher.trials_together=true) train as one batch, and each trial ends as when its job runs alone.

Two real --multirun processes per test, each in its own directory (its own journal storage and sqlite
MLflow store): Hydra's basic launcher (one trial at a time) and the batched launcher. The study each
leaves holds the same trials (params, every epoch's reported val_loss, state, value, why it stopped),
and each trial's MLflow run the same params, tags and metric histories."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from tests.helpers import all_runs, run_cli

STUDY = "batched"
FLOAT64 = ("trainer.dtype=float64", "trainer.patience=1000", "trainer.stopping_threshold=null")
TIMED = ("epoch_time", "wall_time", "setup_time")  # seconds (and a trial run's wall_time_mean, ...)
VOLATILE_TAGS = ("mlflow.", "descentlab.process", "overrides")
VOLATILE_ATTRS = {"heartbeat", "mlflow_run_id"}  # a time; an id in its own MLflow store


def sweep(where: Path, *args: str) -> tuple[list[FrozenTrial], str]:
    """The finished trials of the study a `--multirun` with our sweeper leaves in `where`, in
    trial order, and what it printed."""
    where.mkdir()
    proc = run_cli(where, "--multirun", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={STUDY}", *args)
    assert proc.returncode == 0, proc.stderr
    storage = JournalStorage(JournalFileBackend(str(where / "multirun" / "optuna.journal")))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sorted(trials, key=lambda t: t.number), proc.stdout + proc.stderr


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12)


def same_trials(alone: list[FrozenTrial], together: list[FrozenTrial]) -> None:
    """The same trials, each reported and told the same (float64: to 1e-12 relative)."""
    assert [t.number for t in together] == [t.number for t in alone]
    for one, row in zip(alone, together, strict=True):
        assert row.params == one.params, one.number
        assert row.state == one.state, (one.number, one.params)
        assert close(row.value, one.value), (one.number, row.value, one.value)
        assert sorted(row.intermediate_values) == sorted(one.intermediate_values), one.number
        for step, value in one.intermediate_values.items():
            assert close(row.intermediate_values[step], value), (one.number, step)
        assert set(row.user_attrs) == set(one.user_attrs), one.number
        for key in set(one.user_attrs) - VOLATILE_ATTRS:  # stop_reason, epochs, fail_reason, ...
            mine, theirs = row.user_attrs[key], one.user_attrs[key]
            if isinstance(theirs, float | list):  # repeats' *_se and values_per_seed
                pairs = zip(np.ravel(mine), np.ravel(theirs), strict=True)
                assert all(close(float(x), float(y)) for x, y in pairs), (one.number, key)
            else:
                assert mine == theirs, (one.number, key)


def trial_runs(where: Path) -> tuple[MlflowClient, dict[str, object]]:
    """The trials' runs (with repeats, each trial's run and its seeds' runs), by name."""
    uri = f"sqlite:///{where / 'mlflow.db'}"
    runs = all_runs(uri)
    assert {r.info.status for r in runs} == {"FINISHED"}
    named = {r.info.run_name: r for r in runs if "optuna.trial" in r.data.tags}
    assert len(named) == len(runs) - 1  # every run but the sweep's parent, each its own name
    return MlflowClient(uri), named


def same_runs(basic: Path, batched: Path) -> None:
    """Each trial's MLflow run: the same params, tags (optuna.study, optuna.trial, stop_reason, ...)
    and metric histories."""
    (c1, alone), (c2, together) = trial_runs(basic), trial_runs(batched)
    assert sorted(together) == sorted(alone)
    for number, one in alone.items():
        row = together[number]
        assert row.data.params == one.data.params  # type: ignore[attr-defined]
        tags = [{k: v for k, v in r.data.tags.items() if not k.startswith(VOLATILE_TAGS)} for r in (one, row)]  # type: ignore[attr-defined]
        assert tags[1] == tags[0], number
        assert set(row.data.metrics) == set(one.data.metrics)  # type: ignore[attr-defined]
        for key in [k for k in one.data.metrics if not k.startswith(TIMED)]:  # type: ignore[attr-defined]
            a = sorted((m.step, m.value) for m in c1.get_metric_history(one.info.run_id, key))  # type: ignore[attr-defined]
            b = sorted((m.step, m.value) for m in c2.get_metric_history(row.info.run_id, key))  # type: ignore[attr-defined]
            assert [s for s, _ in a] == [s for s, _ in b], (number, key)
            assert all(close(x, y) for (_, x), (_, y) in zip(a, b, strict=True)), (number, key)


@pytest.mark.slow
def test_trials_asked_together_train_as_one_batch_and_end_as_alone(tmp_path: Path) -> None:
    """n_trials=4 n_jobs=4 over optimizer.lr (a seeded TPE sampler; the first trial enqueued at a
    step size that diverges): the same trials, curves, states (COMPLETE and FAIL) and values."""
    args = (
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.sampler.seed=7",
        "optimizer.lr=tag(log, interval(1e-3, 3))",
        "hydra.sweeper.enqueue=[{optimizer.lr:2.5}]",
        "trainer.max_epochs=20",
        *FLOAT64,
    )
    alone, _ = sweep(tmp_path / "basic", *args, "hydra/launcher=basic")
    together, out = sweep(tmp_path / "batched", *args, "hydra.launcher.trials_together=true")
    assert "4 jobs train as one batch: #0, #1, #2, #3" in out
    assert len(alone) == 4 and alone[0].state is TrialState.FAIL
    assert sum(t.state is TrialState.COMPLETE for t in alone) == 3
    same_trials(alone, together)
    same_runs(tmp_path / "basic", tmp_path / "batched")


@pytest.mark.slow
def test_a_pruned_row_stops_at_the_step_its_trial_stops_alone(tmp_path: Path) -> None:
    """A percentile pruner over 8 trials, 4 at a time: the first four complete (the pruner waits for
    4 finished trials), then in the second batch three rows are pruned at different epochs while the
    last trains on to the end; each pruned at the step where its trial is pruned alone. (The
    second batch's trials compare with the same 4 finished trials either way: the pruned ones come
    first, so one at a time none of them sees another finished.)"""
    lrs = (0.01, 0.02, 0.05, 0.1, 0.08, 0.003, 0.8, 0.065)
    args = (
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=4",
        "optimizer.lr=tag(log, interval(1e-3, 3))",
        "hydra.sweeper.enqueue=[" + ",".join(f"{{optimizer.lr:{lr}}}" for lr in lrs) + "]",
        "hydra/sweeper/pruner=percentile",
        "hydra.sweeper.pruner.n_startup_trials=4",
        "trainer.max_epochs=30",
        *FLOAT64,
    )
    alone, _ = sweep(tmp_path / "basic", *args, "hydra/launcher=basic")
    together, out = sweep(tmp_path / "batched", *args, "hydra.launcher.trials_together=true")
    assert "4 jobs train as one batch: #4, #5, #6, #7" in out
    same_trials(alone, together)
    states = [t.state for t in together]
    assert states == [TrialState.COMPLETE] * 4 + [TrialState.PRUNED] * 3 + [TrialState.COMPLETE]
    pruned_at = [max(t.intermediate_values) for t in together[4:7]]
    assert len(set(pruned_at)) == 3 and max(pruned_at) < 30  # each row stopped on its own
    assert [t.user_attrs["epochs"] for t in together[4:7]] == pruned_at
    assert len(together[7].intermediate_values) == 30  # the row beside them trained on
    same_runs(tmp_path / "basic", tmp_path / "batched")


@pytest.mark.slow
def test_a_trials_further_seeds_train_as_one_batch(tmp_path: Path) -> None:
    """hydra.sweeper.repeats=3: a trial's first seed reports to the pruner alone, then its other two
    seeds train as one batch; each trial's mean, standard error and seeds' values are as alone."""
    args = (
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.repeats=3",
        "hydra.sweeper.sampler.seed=7",
        "optimizer.lr=tag(log, interval(1e-2, 1e-1))",
        "trainer.max_epochs=20",
        *FLOAT64,
    )
    alone, _ = sweep(tmp_path / "basic", *args, "hydra/launcher=basic")
    together, out = sweep(tmp_path / "batched", *args)
    assert "2 jobs train as one batch: #1, #2" in out and "2 jobs train as one batch: #4, #5" in out
    same_trials(alone, together)  # their user attributes: the standard error and each seed's value
    assert all(len(t.user_attrs["values_per_seed"]) == 3 for t in together)
    same_runs(tmp_path / "basic", tmp_path / "batched")
