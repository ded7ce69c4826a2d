"""A kept study is one sweep's: it records its search space, objectives and directions, and a command
that reuses its name for another sweep stops in one line (exit 2) before any MLflow run; a study
that holds its n_trials says so in one line, exits 0 and makes no MLflow run; `python -m
src.compare` then still shows the sweep that ran. Real journal storages, real `--multirun`
processes, a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from hydra_plugins.descentlab_sweeper._identity import written
from src.sweep.trial import check_sweep
from tests.helpers import CONF, all_runs, run_cli

LR = "optimizer.lr=tag(log, interval(0.01, 0.5))"


@pytest.mark.parametrize(
    ("dist", "text"),
    [
        (FloatDistribution(0.01, 0.5, log=True), "tag(log, interval(0.01, 0.5))"),
        (IntDistribution(1, 5), "int(interval(1, 5))"),
        (IntDistribution(0, 10, step=2), "range(0, 10, step=2)"),
        (FloatDistribution(-5.5, 5.5, step=0.5), "range(-5.5, 5.5, step=0.5)"),
        (CategoricalDistribution([8, "a", None]), "choice(8, 'a', None)"),
    ],
)
def test_a_distribution_reads_as_its_sweep_syntax(dist, text):
    assert written(dist) == text


def composed(tmp_path: Path, *args: str):
    """A sweep's composed config, launched from tmp_path, with its sweep overrides where Hydra puts them."""
    sweeps = [a for a in args if "(" in a]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        overrides = ["hydra/sweeper=optuna", *(a for a in args if a not in sweeps)]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    cfg.hydra.overrides.task.extend(sweeps)  # compose refuses sweeps; --multirun passes them on
    cfg.hydra.runtime.cwd = str(tmp_path)
    cfg.hydra.job.name = "train"
    return cfg


def made(tmp_path: Path, name: str, attrs: dict, directions: list[str]) -> optuna.Study:
    """A study in the default journal, as an earlier sweep would have left it."""
    (tmp_path / "multirun").mkdir(exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "multirun" / "optuna.journal")))
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)  # type: ignore[arg-type]
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


SPACE = {"optimizer.lr": "tag(log, interval(0.01, 0.5))"}


@pytest.mark.parametrize(
    ("args", "attrs", "directions", "named"),
    [
        (["optimizer.lr=tag(log, interval(0.001, 0.5))"], {"search_space": SPACE}, ["minimize"],
         "optimizer.lr was tag(log, interval(0.01, 0.5)), now tag(log, interval(0.001, 0.5))"),
        ([LR, "trainer.batch_size=choice(8, 32)"], {"search_space": SPACE}, ["minimize"],
         "trainer.batch_size=choice(8, 32) is new"),
        ([LR, "hydra.sweeper.direction=maximize"], {"search_space": SPACE}, ["minimize"],
         "directions were minimize, now maximize"),
        ([LR, "hydra.sweeper.objectives=test_loss"], {"search_space": SPACE, "objectives": ["best_val_loss"]},
         ["minimize"], "objectives were best_val_loss, now test_loss"),
        (["optimizer.lr=0.1"], {"search_space": SPACE}, ["minimize"],
         "optimizer.lr=tag(log, interval(0.01, 0.5)) is not in this command"),
    ],
)  # fmt: skip
def test_reusing_a_study_name_for_another_sweep_is_one_line_naming_the_difference(
    tmp_path, args, attrs, directions, named
):
    made(tmp_path, "lr", attrs, directions)
    cfg = composed(tmp_path, "hydra.sweeper.study_name=lr", *args)
    with pytest.raises(HydraException) as error:
        check_sweep(cfg)
    line = str(error.value)
    assert "\n" not in line and line.startswith("study lr in ") and named in line
    assert "hydra.sweeper.study_name=<new name>" in line and "hydra.sweeper.storage=null" in line
    assert check_sweep(composed(tmp_path, "hydra.sweeper.study_name=lr2", *args))  # a new name: fine
    assert check_sweep(composed(tmp_path, "hydra.sweeper.study_name=lr", "hydra.sweeper.storage=null", *args))


def test_the_same_sweep_resumes_its_study_and_a_full_one_runs_nothing(tmp_path):
    attrs = {"search_space": SPACE, "objectives": ["value"], "directions": ["minimize"]}
    study = made(tmp_path, "lr", attrs, ["minimize"])
    assert check_sweep(composed(tmp_path, "hydra.sweeper.study_name=lr", "hydra.sweeper.n_trials=1", LR))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    assert not check_sweep(composed(tmp_path, "hydra.sweeper.study_name=lr", "hydra.sweeper.n_trials=1", LR))
    assert check_sweep(composed(tmp_path, "hydra.sweeper.study_name=lr", "hydra.sweeper.n_trials=2", LR))


EXAMPLE = (
    "--multirun", "hydra/sweeper=optuna", "hydra.sweeper.study_name=lr", "hydra.sweeper.n_trials=3",
    "trainer.max_epochs=3", "optimizer.momentum=interval(0, 0.9)", "optimizer=momentum",
)  # fmt: skip


@pytest.mark.slow
def test_run_twice_then_change_the_space_full_then_refused_and_mlflow_untouched(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run_cli(tmp_path, *EXAMPLE, LR)
    assert first.returncode == 0, first.stderr
    assert "Best value:" in first.stdout + first.stderr
    runs = all_runs(uri)
    assert len(runs) == 4  # the sweep's parent and its three trials

    second = run_cli(tmp_path, *EXAMPLE, LR)
    assert second.returncode == 0, second.stderr
    (line,) = [x for x in (second.stdout + second.stderr).splitlines() if "is full" in x]
    assert "study lr in " in line and "3 finished trials of n_trials=3" in line
    assert "hydra.sweeper.n_trials" in line and "Launching" not in second.stdout + second.stderr
    assert len(all_runs(uri)) == 4  # no empty parent run

    changed = run_cli(tmp_path, *EXAMPLE, "optimizer.lr=tag(log, interval(0.001, 0.5))")
    assert changed.returncode == 2
    (error,) = changed.stderr.strip().splitlines()
    assert error.startswith("error: study lr in ")
    assert "optimizer.lr was tag(log, interval(0.01, 0.5)), now tag(log, interval(0.001, 0.5))" in error
    assert len(all_runs(uri)) == 4

    compared = run_cli(tmp_path, module="src.compare")
    assert compared.returncode == 0, compared.stderr
    assert "optimizer.momentum" in compared.stdout or "momentum" in compared.stdout


def test_compare_on_a_sweep_without_runs_says_what_happened(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from src import compare
    from src.tracking.store import STUDY_TAG, SWEEP_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("descentlab")
    tags = {SWEEP_TAG: "multirun/x", STUDY_TAG: "lr"}
    empty = client.create_run(experiment, run_name="sweep lr", tags=tags)
    client.set_terminated(empty.info.run_id)
    compare.main(["--uri", uri, "--out", str(tmp_path / "c.png")])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"sweep {empty.info.run_id} (sweep lr) has no runs: its Optuna study lr ran no")
