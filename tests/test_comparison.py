"""Reading a comparison at a glance: run names, repeats with t-intervals, the overlay, --diff, and the
Optuna sweeper's repeats. Numbers are checked against scipy; stores, studies and sweeps are real."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from matplotlib.collections import PolyCollection
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from src import compare
from src.tracking.names import (
    distinct_names,
    params,
    relative_to_best,
    run_name,
    separating_digits,
    short_number,
    sweep_name,
)
from src.train import train
from tests.helpers import all_runs, make_config, run_cli


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0068241, "6.82e-3"), (1e4, "1e4"), (10000.0, "1e4"), (0.1, "0.1"), (32, "32"), (0.05, "0.05"),
     (1234.5, "1230"), (1.0, "1"), (2.5e-7, "2.5e-7"), (-0.00123, "-1.23e-3")],
)  # fmt: skip
def test_numbers_in_names_keep_three_significant_digits(value, shown):
    assert short_number(value) == shown


def test_a_run_is_named_by_what_varies_in_its_sweep():
    assert run_name("sgd", {"trainer.batch_size": 1}) == "sgd bs=1"
    assert run_name("sgd", {"trainer.batch_size": None}) == "sgd bs=full"
    assert run_name("lbfgs", {"data.condition_number": 1e4, "optimizer": "lbfgs"}) == "lbfgs κ=1e4"
    assert (
        run_name("adam", {"optimizer.lr": 0.0068, "trainer.batch_size": 16}, trial=4)
        == "adam lr=6.8e-3 bs=16 #4"
    )
    assert run_name("sgd", {"seed": 3, "schedule": "robbins_monro"}, trial=2) == "sgd robbins_monro #2 seed=3"


@pytest.mark.parametrize("values", [[1.0, 2.0, 4.0], [1e-6, 1.1e-6, 0.9e-6, 1.3e-6, 1.05e-6], [5.0, 5.0]])
def test_the_interval_is_students_t_at_95_percent(values):
    mean, lo, hi = compare.interval(values)
    assert mean == pytest.approx(np.mean(values), rel=1e-12)
    if np.std(values) == 0:
        assert lo == hi == mean
    else:
        expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert (lo, hi) == pytest.approx(expected, rel=1e-9)
    assert math.isnan(compare.interval([3.0])[1])  # one run: no interval


def make_sweep(client: MlflowClient, experiment: str, curves: dict[str, list[list[float]]]) -> str:
    """A sweep parent whose children are `name seed=i` runs with the given val_loss curves (and as
    test_loss the curve's last value), with the params `optimizer`, `optimizer.lr` and `seed`."""
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name="sweep", tags={compare.SWEEP_TAG: "x"}).info.run_id
    for name, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            tags = {"mlflow.parentRunId": parent, "overrides": f"optimizer={name} seed={seed}"}
            run_id = client.create_run(experiment_id, run_name=f"{name} seed={seed}", tags=tags).info.run_id
            metrics = [Metric("val_loss", v, 0, step) for step, v in enumerate(curve, start=1)]
            metrics += [Metric("best_val_loss", min(curve), 0, 0), Metric("epochs", len(curve), 0, 0)]
            metrics.append(Metric("test_loss", curve[-1], 0, 0))
            params = [Param("optimizer", name), Param("optimizer.lr", "0.1"), Param("seed", str(seed))]
            client.log_batch(run_id, metrics=metrics, params=params)
            client.set_terminated(run_id)
    client.set_terminated(parent)
    return parent


def test_repeats_are_grouped_with_n_mean_and_interval_and_drawn_as_bands(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rng = np.random.default_rng(0)
    curves = {
        opt: [list(scale * np.geomspace(1, 1e-3, 6) * (1 + 0.1 * rng.random(6))) for _ in range(5)]
        for opt, scale in (("sgd", 2.0), ("nesterov", 1.0))
    }
    parent = make_sweep(client, "repeats", curves)
    runs = compare.sweep_runs(client, parent)
    lines = compare.table(runs).splitlines()
    assert lines[0].split()[:3] == ["run", "n", "best_val_loss"]
    assert [line.split()[:2] for line in lines[1:]] == [["nesterov", "5"], ["sgd", "5"]]
    best = [min(c) for c in curves["nesterov"]]
    mean, lo, hi = compare.interval(best)
    assert f"{short_number(mean)} [{short_number(lo)}, {short_number(hi)}]" in lines[1]
    fig = compare.overlay_figure(client, runs)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert sorted(str(line.get_label()) for line in ax.lines) == ["nesterov (n=5)", "sgd (n=5)"]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2  # one band each
    # On a log axis the line is the geometric mean over seeds at each epoch.
    (line,) = [line for line in ax.lines if line.get_label() == "sgd (n=5)"]
    expected = stats.gmean(np.array(curves["sgd"]), axis=0)
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), expected, rtol=1e-9)
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1


@pytest.mark.slow
def test_compare_without_arguments_shows_the_latest_sweep_of_any_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    make_sweep(client, "descentlab", {"old": [[1.0, 0.5]]})
    make_sweep(client, "lesson-x", {"new": [[1.0, 0.1]], "newer": [[1.0, 0.2]]})
    proc = run_cli(tmp_path, "--uri", uri, "--out", "c.png", module="src.compare")
    assert proc.returncode == 0, proc.stderr
    assert "in experiment 'lesson-x'" in proc.stdout
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:4]] == ["new", "newer"]
    assert "workflowType=machine_learning" in proc.stdout
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.slow
def test_diff_prints_the_config_keys_that_differ(sqlite_uri, tmp_path):
    train(make_config("trainer.progress=false", "trainer.max_epochs=2"))
    train(make_config("trainer.progress=false", "trainer.max_epochs=2", "optimizer=nesterov"))
    first, second = sorted(all_runs(sqlite_uri), key=lambda r: r.info.start_time)
    proc = run_cli(
        tmp_path, "--uri", sqlite_uri, "--diff", first.info.run_id, second.info.run_id, module="src.compare"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "optimizer.lr: 0.1 -> 0.05",
        "optimizer.momentum: 0.0 -> 0.9",
        "optimizer.nesterov: False -> True",
    ]
    proc = run_cli(tmp_path, "--uri", sqlite_uri, "--diff", first.info.run_id, "0" * 32, module="src.compare")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --diff")


@pytest.mark.slow
def test_optuna_repeats_average_over_seeds_and_prune_on_the_first(cli, tmp_path):
    proc = cli(
        "--multirun", "hydra/sweeper=descentlab_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.repeats=3", "hydra.sweeper.sampler.seed=0", "hydra/sweeper/pruner=median",
        "hydra.sweeper.study_name=rep", "hydra.sweeper.objectives=best_val_loss",
        "optimizer.lr=tag(log, interval(0.01, 0.1))", "trainer.max_epochs=4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "multirun" / "optuna.journal")))
    study = optuna.load_study(study_name="rep", storage=storage)
    assert study.metric_names == ["best_val_loss"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        trial_run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert trial_run.data.tags[compare.REPEATS_TAG] == "3"
        assert (
            trial_run.info.run_name == f"sgd lr={short_number(trial.params['optimizer.lr'])} #{trial.number}"
        )
        seeds = sorted(compare.child_runs(client, trial_run.info.run_id), key=lambda r: r.info.run_name)
        assert [r.info.run_name.rsplit(" ", 1)[1] for r in seeds] == ["seed=0", "seed=1", "seed=2"]
        best = [r.data.metrics["best_val_loss"] for r in seeds]
        assert trial.value == pytest.approx(np.mean(best), rel=1e-6)
        assert trial.user_attrs["best_val_loss_se"] == pytest.approx(stats.sem(best), rel=1e-6)
        # The trial's run: its params (what its seeds share), n, mean and 95% t-interval over them.
        assert trial_run.data.params["optimizer.lr"] == seeds[0].data.params["optimizer.lr"]
        assert float(trial_run.data.params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert (
            "seed" not in trial_run.data.params
            and len(trial_run.data.params) == len(seeds[0].data.params) - 1
        )
        low, high = stats.t.interval(0.95, 2, loc=np.mean(best), scale=stats.sem(best))
        assert trial_run.data.metrics["best_val_loss_n"] == 3
        assert trial_run.data.metrics["best_val_loss_mean"] == pytest.approx(np.mean(best), rel=1e-9)
        assert trial_run.data.metrics["best_val_loss_ci_low"] == pytest.approx(low, rel=1e-9)
        assert trial_run.data.metrics["best_val_loss_ci_high"] == pytest.approx(high, rel=1e-9)
        assert "wall_time_ci_high" in trial_run.data.metrics
        # The pruner saw the first seed's curve only: the same seed in every trial.
        history = client.get_metric_history(seeds[0].info.run_id, "val_loss")
        assert trial.intermediate_values == {m.step: pytest.approx(m.value) for m in history}
    # The sweep's best is the study's best trial, its run the trial's, with n and interval.
    (parent,) = client.search_runs(["1"], "tags.`descentlab.sweep_dir` != ''")
    assert parent.data.tags["best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_val_loss_mean"] == pytest.approx(study.best_value, rel=1e-9)
    assert parent.data.metrics["best_val_loss_n"] == 3
    # The trials ran on the same seeds: the other one is compared with the best, seed by seed.
    assert parent.data.tags["paired"].endswith(("no detectable difference", "detectably higher"))


@pytest.mark.slow
def test_runs_whose_values_agree_to_three_digits_still_get_distinct_names(cli, tmp_path):
    proc = cli("--multirun", "optimizer.lr=0.10001,0.10002", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr
    runs = [r for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if "mlflow.parentRunId" in r.data.tags]
    by_name = {r.info.run_name: r.data.params["optimizer.lr"] for r in runs}
    assert by_name == {"sgd lr=0.10001": "0.10001", "sgd lr=0.10002": "0.10002"}  # the digits that differ
    parent = next(
        r for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if "mlflow.parentRunId" not in r.data.tags
    )
    assert parent.info.run_name == "sweep lr×2 max_epochs=2"  # ≤ 40 characters
    assert "optimizer.lr=0.10001,0.10002 trainer.max_epochs=2" in parent.data.tags["mlflow.note.content"]


METHODS = ("sgd", "momentum", "nesterov", "adam")


def test_the_methods_sweeps_runs_are_named_by_each_optimizers_lr():
    """Each optimizer brings its own lr: the names say so, though only `optimizer` was swept."""
    runs = [params(make_config(f"optimizer={m}"), {"optimizer": m}, ["optimizer"]) for m in METHODS]
    assert distinct_names(runs, [None] * 4) == [
        "sgd lr=0.1",
        "momentum lr=0.05",
        "nesterov lr=0.05",
        "adam lr=0.01",
    ]
    trials = [
        {"optimizer": "adam", "optimizer.lr": lr, "seed": seed}
        for lr in ("0.00123", "0.004")
        for seed in "01"
    ]
    assert distinct_names(trials, [4, 4, 5, 5]) == [
        "adam lr=1.23e-3 #4 seed=0", "adam lr=1.23e-3 #4 seed=1",
        "adam lr=4e-3 #5 seed=0", "adam lr=4e-3 #5 seed=1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [["+experiment=lecture_sweep"], *([f"optimizer={o}"] for o in ("sgd", "adam", "lbfgs", "newton", "adamw",
                                                                    "preconditioned", "rmsprop"))],
)  # fmt: skip
def test_every_run_logs_at_most_25_params_the_swept_ones_first(overrides):
    cfg = make_config(*overrides, "schedule=step")
    logged = list(params(cfg, {}, ["trainer.batch_size", "optimizer.lr"]))
    assert len(logged) <= 25
    assert logged[:7] == [
        "data",
        "model",
        "optimizer",
        "schedule",
        "seed",
        "trainer.batch_size",
        "optimizer.lr",
    ]


@pytest.mark.parametrize(
    ("overrides", "name"),
    [(["optimizer=sgd,nesterov,adam"], "sweep optimizer=sgd,nesterov,adam"),
     (["optimizer=sgd,momentum,nesterov,adam"], "sweep optimizer×4"),
     (["seed=range(0,5)", "optimizer=sgd,nesterov", "trainer.max_epochs=20"],
      "sweep seed×5 optimizer×2 max_epochs=20"),
     (["+experiment=batch_size", "tracking.uri=sqlite:///x.db"], "sweep +experiment=batch_size"),
     (["+experiment=batch_size", "trainer.batch_size=1,32,null", "seed=range(5)"],
      "sweep batch_size bs×3 seed×5")],
)  # fmt: skip
def test_a_sweeps_parent_name_fits_in_40_characters(overrides, name):
    assert sweep_name(overrides) == name and len(name) <= 40


def test_compare_prints_the_digits_that_separate_the_rows_and_each_rows_distance_to_the_best():
    assert separating_digits([1.0296e-6, 1.0306e-6, 1.0303e-6]) == 5  # 1.0296e-6, 1.0306e-6, 1.0303e-6
    assert separating_digits([1.0296e-6, 1.0296e-6, 2e-6]) == 3  # equal values need no more
    assert [relative_to_best(v, 1.0) for v in (1.0, 1.001, 1.0000312, 1.2, 1.999, 2.5, 18836.6)] == [
        "best",
        "+0.10%",
        "+0.0031%",
        "+20.00%",
        "+99.90%",
        "×2.5",
        "×1.88e4",
    ]
    assert relative_to_best(-1.0, -2.0) == "+50.00%"  # a negative best (a log-likelihood): percent only
