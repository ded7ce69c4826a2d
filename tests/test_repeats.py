"""Repeats as groups in MLflow, a sweep's honest best, and the paired comparison of configurations.
Numbers are checked against scipy (`ttest_rel`, Student's t interval); stores and sweeps are real."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from src import compare, repeats
from src.sweep import groups
from src.sweep.parent import STUDY_TAG, BestTrial, MultirunParent, best_child, record_study
from src.tracking.store import REPEATS_TAG, child_runs
from tests.helpers import artifact_paths, run_cli
from tests.test_comparison import make_sweep

PAIRS = [
    ([1.03, 1.05, 0.99, 1.10, 1.02], [1.00, 1.04, 0.97, 1.06, 1.01]),
    ([2.0e-6, 2.2e-6, 1.9e-6], [1.0e-6, 1.1e-6, 1.2e-6]),
    ([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.7]),
]


@pytest.mark.parametrize(("values", "best"), PAIRS)
def test_the_paired_comparison_is_scipys_paired_t_test(values, best):
    seeds = [str(s) for s in range(len(values))]
    mine = dict(zip(seeds, values, strict=True)) | {"99": 5.0}  # a seed the best did not run
    theirs = dict(reversed(list(zip(seeds, best, strict=True))))  # paired by seed, not by position
    result = repeats.paired("b", "a", "best_val_loss", mine, theirs)
    expected = stats.ttest_rel(values, best)
    low, high = expected.confidence_interval(0.95)
    scale = np.mean(best)  # differences are relative to the best's mean on the paired seeds
    assert result.n == len(values)
    assert result.p == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.relative == pytest.approx(np.mean(np.subtract(values, best)) / scale, rel=1e-9)
    assert (result.low, result.high) == pytest.approx((low / scale, high / scale), rel=1e-9)


def test_a_verdict_is_one_line_with_the_difference_its_interval_and_p():
    seeds = [str(s) for s in range(5)]
    best = dict(zip(seeds, PAIRS[0][1], strict=True))
    worse = repeats.paired(
        "sgd", "nesterov", "best_val_loss", dict(zip(seeds, PAIRS[0][0], strict=True)), best
    )
    assert worse.verdict() == (  # ttest_rel: p = 0.01955; its interval over mean(best) = 1.016
        "sgd vs nesterov: +2.2% [+0.6%, +3.8%], p = 0.02 over 5 paired seeds: best_val_loss detectably higher"
    )
    close = dict(zip(seeds, [1.03, 1.01, 0.99, 1.04, 1.02], strict=True))
    assert repeats.paired("sgd", "nesterov", "best_val_loss", close, best).verdict() == (
        "sgd vs nesterov: +0.2% [-3.0%, +3.4%], p = 0.87 over 5 paired seeds: no detectable difference"
    )
    one = repeats.paired("sgd", "nesterov", "best_val_loss", {"1": 1.0}, {"1": 2.0})
    assert one.verdict() == "sgd vs nesterov: -50% on 1 paired seed: too few to test"
    same = repeats.paired("sgd", "nesterov", "best_val_loss", {"1": 1.0, "2": 2.0}, {"1": 1.0, "2": 2.0})
    assert same.verdict() == "sgd vs nesterov: equal on every one of 2 paired seeds"


def test_the_sweeps_objective_is_the_studys_else_best_val_loss():
    def sweeper(**values: object) -> DictConfig:
        return OmegaConf.create({"hydra": {"sweeper": values}})

    assert groups.objective(sweeper()) == ("best_val_loss", False)  # the basic sweeper
    assert groups.objective(sweeper(direction="minimize", objectives=None)) == ("best_val_loss", False)
    assert groups.objective(sweeper(direction="minimize", objectives=["test_loss"])) == ("test_loss", False)
    assert groups.objective(sweeper(direction="maximize", objectives="epochs")) == ("epochs", True)
    assert (
        groups.objective(sweeper(direction=["minimize", "minimize"], objectives=["test_loss", "wall_time"]))
        is None
    )


def seed_sweep(client: MlflowClient) -> tuple[str, dict[str, list[list[float]]]]:
    rng = np.random.default_rng(1)
    base = [list(np.geomspace(1, 1e-3, 4) * (1 + 0.2 * rng.random(4))) for _ in range(5)]
    curves = {"sgd": [[1.02 * v for v in c] for c in base], "nesterov": base}
    return make_sweep(client, "repeats", curves), curves


def test_runs_that_differ_in_seed_become_one_group_run_per_configuration(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, curves = seed_sweep(client)
    metrics = groups.summarized(["best_val_loss"])
    assert groups.make_groups(client, parent, child_runs(client, parent), metrics)
    by_name = {r.info.run_name: r for r in child_runs(client, parent)}
    assert set(by_name) == {"sgd · 5 seeds", "nesterov · 5 seeds"}
    for name, run in by_name.items():
        optimizer = name.split()[0]
        assert run.data.tags[REPEATS_TAG] == "5" and run.info.status == "FINISHED"
        assert run.data.params == {"optimizer": optimizer, "optimizer.lr": "0.1"}  # no seed
        seeds = child_runs(client, run.info.run_id)
        assert sorted(r.info.run_name for r in seeds) == [f"{optimizer} seed={s}" for s in range(5)]
        best = [min(c) for c in curves[optimizer]]
        low, high = stats.t.interval(0.95, 4, loc=np.mean(best), scale=stats.sem(best))
        assert run.data.metrics["best_val_loss_n"] == 5
        assert run.data.metrics["best_val_loss_mean"] == pytest.approx(np.mean(best), rel=1e-12)
        assert (run.data.metrics["best_val_loss_ci_low"], run.data.metrics["best_val_loss_ci_high"]) == (
            pytest.approx((low, high), rel=1e-9)
        )
        assert run.data.metrics["epochs_mean"] == 4 and "test_loss_ci_high" in run.data.metrics
    # The comparison reads the seeds through their groups.
    assert len(compare.sweep_runs(client, parent)) == 10
    # The parent's best is the best configuration by mean, with its n and interval.
    owner = MultirunParent()
    owner.client, owner.run_id = client, parent
    line = owner._log_best("best_val_loss", maximize=False)
    record = client.get_run(parent).data
    assert record.tags["best_run"] == "nesterov · 5 seeds" and line and line.startswith("nesterov · 5 seeds")
    group_record = by_name["nesterov · 5 seeds"].data.metrics
    for stat in ("n", "mean", "ci_low", "ci_high"):
        assert record.metrics[f"best_val_loss_{stat}"] == group_record[f"best_val_loss_{stat}"]
    # Paired by seed: sgd is 2% worse on every seed, which the paired test finds.
    runs = compare.sweep_runs(client, parent)
    owner._log_paired(runs, "best_val_loss", False, tmp_path / "paired.csv")
    table = pd.read_csv(tmp_path / "paired.csv")
    expected = stats.ttest_rel([min(c) for c in curves["sgd"]], [min(c) for c in curves["nesterov"]])
    assert table.loc[0, "p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert table.loc[0, "diff_pct"] == pytest.approx(2.0, rel=1e-9)
    sgd = client.get_run(by_name["sgd · 5 seeds"].info.run_id).data
    assert sgd.tags["paired"] == table.loc[0, "verdict"] == client.get_run(parent).data.tags["paired"]
    assert sgd.tags["paired"] == (
        "sgd vs nesterov: +2.0% [+1.9%, +2.1%], p < 0.001 over 5 paired seeds: "
        "best_val_loss detectably higher"
    )
    assert sgd.metrics["vs_best_p"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert "paired.csv" in artifact_paths(client, parent)


def test_a_single_seed_sweep_keeps_its_runs_and_its_best_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = make_sweep(
        client, "single", {"sgd": [[1.0, 0.5]], "nesterov": [[1.0, 0.2]], "adam": [[1.0, 0.3]]}
    )
    children = child_runs(client, parent)
    assert not groups.make_groups(client, parent, children, ["best_val_loss"])
    assert len(child_runs(client, parent)) == 3
    best = best_child(children, "best_val_loss", maximize=False)
    assert best is not None and best.info.run_name == "nesterov seed=0"
    assert compare.paired_comparison(compare.sweep_runs(client, parent)) == []


def test_the_parents_best_follows_the_objective_not_best_val_loss(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = make_sweep(client, "objective", {"a": [[1.0, 0.1]], "b": [[1.0, 0.2]]})
    runs = {r.info.run_name: r for r in child_runs(client, parent)}
    client.log_batch(runs["a seed=0"].info.run_id, [Metric("test_loss", 3.0, 0, 0)])
    client.log_batch(runs["b seed=0"].info.run_id, [Metric("test_loss", 1.0, 0, 0)])
    children = child_runs(client, parent)

    def best(objective: str, maximize: bool) -> str:
        found = best_child(children, objective, maximize)
        return found.info.run_name if found else "none"

    assert best("best_val_loss", False) == "a seed=0"
    assert best("test_loss", False) == "b seed=0" and best("test_loss", True) == "a seed=0"
    # A study's best is its best trial's run, whatever the runs' best_val_loss says.
    client.set_tag(parent, STUDY_TAG, "s")
    b = runs["b seed=0"].info.run_id
    record_study(
        client, parent, settings={}, counts={}, best=BestTrial(1, 1.0, {}, b), pareto_trials=None, files=[]
    )
    owner = MultirunParent()
    owner.client, owner.run_id = client, parent
    owner._log_best("test_loss", maximize=False)
    tags = client.get_run(parent).data.tags
    assert tags["best_run_id"] == b and tags["best_run"] == "b seed=0"
    assert client.get_run(parent).data.metrics["test_loss"] == 1.0


@pytest.mark.slow
def test_a_seed_sweep_records_groups_an_honest_best_and_paired_verdicts(cli, tmp_path):
    """The real `--multirun 'seed=range(0,5)' optimizer=sgd,nesterov`, on a sqlite store."""
    proc = cli("--multirun", "seed=range(0,5)", "optimizer=sgd,nesterov", "trainer.max_epochs=5")
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    (parent,) = client.search_runs(["1"], "tags.`descentlab.sweep_dir` != ''")
    grouped = {r.info.run_name: r for r in child_runs(client, parent.info.run_id)}
    assert set(grouped) == {"sgd lr=0.1 · 5 seeds", "nesterov lr=0.05 · 5 seeds"}  # each optimizer's lr
    best_val = {}
    for name, run in grouped.items():
        seeds = {r.data.params["seed"]: r for r in child_runs(client, run.info.run_id)}
        assert sorted(seeds) == ["0", "1", "2", "3", "4"]
        assert "seed" not in run.data.params and run.data.params["optimizer"] == name.split()[0]
        assert run.data.tags["mlflow.source.name"] == "src.train"  # the Source column, as its seeds'
        for metric in ("best_val_loss", "test_loss", "epochs", "wall_time"):
            values = [seeds[s].data.metrics[metric] for s in sorted(seeds)]
            assert run.data.metrics[f"{metric}_mean"] == pytest.approx(np.mean(values), rel=1e-9)
            if np.std(values) > 0:  # epochs: 5 for every seed
                interval = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
                shown = (run.data.metrics[f"{metric}_ci_low"], run.data.metrics[f"{metric}_ci_high"])
                assert shown == pytest.approx(interval, rel=1e-9)
        best_val[name] = [seeds[s].data.metrics["best_val_loss"] for s in sorted(seeds)]
    best = min(grouped, key=lambda n: np.mean(best_val[n]))
    other = next(n for n in grouped if n != best)
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["best_run_id"] == grouped[best].info.run_id
    assert parent.data.metrics["best_val_loss_mean"] == pytest.approx(np.mean(best_val[best]), rel=1e-12)
    assert parent.data.metrics["best_val_loss_n"] == 5
    rows = [line for line in proc.stdout.splitlines() if re.match(r"(sgd lr=0.1|nesterov lr=0.05) +5 ", line)]
    assert len(rows) == 2  # the table: n, then mean [lo, hi] of best_val_loss, test_loss and epochs
    assert all(len(re.findall(r"\S+ \[\S+, \S+\]", row)) == 3 for row in rows)
    assert (tmp_path / "multirun" / "compare.png").stat().st_size > 0
    # The paired test, as scipy computes it, in the printed verdict, paired.csv and tags.
    expected = stats.ttest_rel(best_val[other], best_val[best])
    verdict = parent.data.tags["paired"]
    assert verdict.startswith(f"{other.split(' · ')[0]} vs {best.split(' · ')[0]}: ")
    assert verdict in proc.stdout and f"best:        {best}: best_val_loss " in proc.stdout
    assert re.search(r"p (= [0-9.e-]+|< 0\.001) over 5 paired seeds: ", verdict)
    printed = re.search(r"p = ([0-9.e-]+)", verdict)
    assert float(printed.group(1) if printed else 0) == pytest.approx(expected.pvalue, rel=0.05, abs=1e-3)
    table = pd.read_csv(tmp_path / "multirun" / "paired.csv")
    assert table.loc[0, "p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    low, high = expected.confidence_interval(0.95)
    scale = np.mean(best_val[best]) / 100
    assert (table.loc[0, "ci_low_pct"], table.loc[0, "ci_high_pct"]) == pytest.approx(
        (low / scale, high / scale)
    )
    assert client.get_run(grouped[other].info.run_id).data.tags["paired"] == verdict
    # `python -m src.compare` reads the sweep through its groups and says the same.
    again = run_cli(tmp_path, "--uri", uri, "--out", "c.png", module="src.compare")
    assert again.returncode == 0, again.stderr
    assert f"  {verdict}" in again.stdout.splitlines()
    assert not math.isnan(table.loc[0, "diff_pct"])
