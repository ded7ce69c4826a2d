"""The Optuna sweeper (hydra/sweeper=descentlab_optuna): real studies on tiny budgets, real
`--multirun` subprocesses, real journal / PostgreSQL storages and a real MLflow store."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hydra_plugins.descentlab_sweeper import _space
from tests.helpers import CONF, all_runs, cli_env, run_cli

SWEEP = ("--multirun", "hydra/sweeper=descentlab_optuna")
QUICK = ("trainer.patience=1000", "trainer.stopping_threshold=null")  # run every epoch asked for


def journal(tmp_path: Path, study_name: str) -> optuna.Study:
    """The study a sweep left in the default storage under tmp_path (the launch directory)."""
    backend = JournalFileBackend(str(tmp_path / "multirun" / "optuna.journal"))
    return optuna.load_study(study_name=study_name, storage=JournalStorage(backend))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))


def sweep_process(cwd: Path, *args: str, sweep_dir: str = "multirun") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", *args, f"hydra.sweep.dir={cwd / sweep_dir}"],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so that a kill reaches its launcher's jobs too
    )


# --------------------------------------------------------------------------------- search space
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("x=interval(0.5, 2)", FloatDistribution(0.5, 2.0)),
        ("x=int(interval(1, 10))", IntDistribution(1, 10)),
        ("x=tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("x=tag(log, int(interval(2, 128)))", IntDistribution(2, 128, log=True)),
        ("x=range(1, 10, 3)", IntDistribution(1, 7, step=3)),  # 1, 4, 7: the stop is exclusive
        ("x=range(0, 5)", IntDistribution(0, 4)),
        ("x=range(10, 0, -5)", IntDistribution(5, 10, step=5)),  # 10, 5
        ("x=range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
        ("x=choice(sgd, adam)", CategoricalDistribution(["sgd", "adam"])),
        ("x=2,4,8", CategoricalDistribution([2, 4, 8])),
        ("x=choice(true, 0.5, 'a b')", CategoricalDistribution([True, 0.5, "a b"])),
    ],
)
def test_sweep_syntax_maps_to_the_optuna_distribution(override, expected):
    space = _space.parse([override], range_stop_included=False)
    assert space.distributions == {"x": expected}
    assert space.fixed == {}


# hydra-optuna-sweeper's own test cases (tests/test_optuna_sweeper_plugin.py), in optuna 4's classes
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=range(1,3)", IntDistribution(1, 3)),  # the stop included
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ],
)
def test_under_the_optuna_name_parameters_mean_what_they_mean_upstream(override, expected):
    assert _space.parse([override], range_stop_included=True).distributions == {"key": expected}


def test_upstream_shuffle_is_a_categorical_and_the_grid_walks_hydras_values():
    space = _space.parse(["a=shuffle(range(1,3))", "y=range(-1.0, 1.0, step=1)"], range_stop_included=True)
    shuffled = space.distributions["a"]
    assert isinstance(shuffled, CategoricalDistribution) and set(shuffled.choices) == {1, 2}
    # upstream's grid of range(-1.0, 1.0, step=1) is [-1.0, 0.0] (its test asserts best y in {-1, 0})
    assert space.grid() == {"a": list(shuffled.choices), "y": [-1.0, 0.0]}
    with pytest.raises(_space.SearchSpaceError, match="needs start <= stop and a step > 0"):
        _space.parse(["x=range(5, 1, -1)"], range_stop_included=True)


def test_fixed_overrides_pass_through_and_the_last_word_wins():
    space = _space.parse(["+seed_extra=1", "a=interval(0, 1)", "a=3", "b=choice(x, y)", "~z"], False)
    assert space.fixed == {"+seed_extra": "+seed_extra=1", "a": "a=3", "~z": "~z"}
    assert set(space.distributions) == {"b"}


def test_unsupported_sweeps_and_grids_are_refused_with_the_key():
    with pytest.raises(_space.SearchSpaceError, match="x: the grid sampler needs choice or range"):
        _space.parse(["x=interval(0, 1)"], False).grid()
    assert _space.parse(["x=range(1, 10, 3)", "y=choice(a, b)"], False).grid() == {
        "x": [1, 4, 7],
        "y": ["a", "b"],
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-05, "1e-05"),
        ("adam", "adam"),
        ("a b", "'a b'"),
        (True, "true"),
        (None, "null"),
        ("étude-α", "'étude-α'"),  # a Unicode letter is no token of Hydra's grammar
        ("/data/ü.csv", "'/data/ü.csv'"),
        ("true", "'true'"),  # a string that unquoted would read back as a bool, a number or null
        ("1", "'1'"),
        ("null", "'null'"),
        ("it's", "'it\\'s'"),
        ("C:\\dir\\", "'C:\\dir\\\\'"),  # a backslash before the closing quote is doubled
    ],
)
def test_sampled_values_become_overrides_hydra_reads_back(value, text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert _space.override_value(value) == text
    (parsed,) = OverridesParser.create().parse_overrides([f"k={text}"])
    assert parsed.value() == value


@pytest.mark.parametrize(
    ("group", "name", "expected"),
    [
        ("sampler", "tpe", optuna.samplers.TPESampler),
        ("sampler", "random", optuna.samplers.RandomSampler),
        ("sampler", "cmaes", optuna.samplers.CmaEsSampler),
        ("sampler", "qmc", optuna.samplers.QMCSampler),
        ("sampler", "gp", optuna.samplers.GPSampler),
        ("sampler", "nsga2", optuna.samplers.NSGAIISampler),
        ("pruner", "none", optuna.pruners.NopPruner),
        ("pruner", "median", optuna.pruners.MedianPruner),
        ("pruner", "hyperband", optuna.pruners.HyperbandPruner),
        ("pruner", "successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ],
)
def test_each_sampler_and_pruner_choice_builds_its_optuna_class(group, name, expected):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        overrides = ["hydra/sweeper=descentlab_optuna", f"hydra/sweeper/{group}={name}"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    built = instantiate(cfg.hydra.sweeper[group])
    assert type(built) is expected


# ----------------------------------------------------------------------- pruning and MLflow
@pytest.mark.slow
def test_pruned_trials_stop_early_and_mlflow_nests_them_under_the_sweep(cli, tmp_path):
    epochs = 30
    proc = cli(
        *SWEEP,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=3",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.study_name=pruning",
        "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
        f"trainer.max_epochs={epochs}",
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    study = journal(tmp_path, "pruning")
    trials = finished(study)
    assert len(trials) == 5
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert pruned and complete
    for trial in pruned:
        step = max(trial.intermediate_values)
        assert step < epochs and trial.user_attrs["epochs"] == step  # it stopped where it was pruned
        # The median rule: worse than the median of the earlier finished trials at that epoch.
        earlier = [
            t.intermediate_values[step]
            for t in trials
            if t.number < trial.number and t.state is not TrialState.FAIL and step in t.intermediate_values
        ]
        assert trial.intermediate_values[step] > median(earlier)
    for trial in complete:
        assert len(trial.intermediate_values) == epochs
    out = proc.stdout + proc.stderr
    assert f"5 finished trials: {len(complete)} complete, {len(pruned)} pruned, 0 failed" in out

    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [r for r in runs if "optuna.trial" not in r.data.tags]
    children = [r for r in runs if "optuna.trial" in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sampler"] == "RandomSampler" and parent.data.params["pruner"] == "MedianPruner"
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.params["best.optimizer.lr"] == str(study.best_params["optimizer.lr"])
    states = {str(t.number): t.state.name for t in trials}
    assert {r.data.tags["optuna.trial"]: r.data.tags["optuna.state"] for r in children} == states
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["stop_reason"] for r in children if r.data.tags["optuna.state"] == "PRUNED"} == {
        "pruned"
    }
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert artifacts == {
        f"optuna/{name}.png"
        for name in (
            "optimization_history",
            "param_importances",
            "parallel_coordinate",
            "intermediate_values",
        )
    } | {"optuna/optimization_results.yaml"}
    results = (tmp_path / "multirun" / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results and "pruned: " in results


# ------------------------------------------------------------------------------ multi-objective
@pytest.mark.slow
def test_a_two_objective_sweep_reports_its_pareto_front_everywhere(cli, tmp_path):
    proc = cli(
        "--multirun",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.study_name=pareto",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.objectives=[best_val_loss,wall_time]",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
        "trainer.max_epochs=3",
    )
    assert proc.returncode == 0, proc.stderr
    study = journal(tmp_path, "pareto")
    assert study.metric_names == ["best_val_loss", "wall_time"]
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [r for r in runs if "optuna.trial" not in r.data.tags]
    children = {r.data.tags["optuna.trial"]: r for r in runs if "optuna.trial" in r.data.tags}
    for trial in study.trials:  # each value is the named result of the trial's own run
        metrics = children[str(trial.number)].data.metrics
        assert trial.values == pytest.approx([metrics["best_val_loss"], metrics["wall_time"]], rel=1e-6)
    results = OmegaConf.load(tmp_path / "multirun" / "optimization_results.yaml")
    front = [tuple(s["values"]) for s in results.solutions]
    assert results.objectives == ["best_val_loss", "wall_time"]
    assert sorted(front) == sorted(tuple(t.values) for t in study.best_trials)
    for trial in study.trials:  # nothing outside the front dominates a point on it
        assert not any(
            all(a <= b for a, b in zip(trial.values, p, strict=True)) and trial.values != list(p)
            for p in front
        )
    for p in front:
        assert f"best_val_loss={p[0]:.6g}, wall_time={p[1]:.6g}" in proc.stdout
    assert parent.data.metrics["pareto_trials"] == len(front)
    assert parent.data.params["objectives"] == "best_val_loss/wall_time"
    from mlflow.tracking import MlflowClient

    artifacts = {
        a.path
        for a in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(
            parent.info.run_id, "optuna"
        )
    }
    assert artifacts == {"optuna/pareto_front.png", "optuna/optimization_results.yaml"}


# -------------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_failing_trials_end_fail_with_their_reason_and_the_sweep_finishes(cli, tmp_path):
    proc = cli(
        *SWEEP,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.study_name=failures",
        "optimizer.lr=choice(0.1, 50, -1)",  # fine; diverges; refused by the config check
        "trainer.max_epochs=20",
        "tracking=none",
    )
    assert proc.returncode == 0, proc.stderr
    trials = {t.params["optimizer.lr"]: t for t in finished(journal(tmp_path, "failures"))}
    assert trials[0.1].state is TrialState.COMPLETE
    assert trials[50].state is TrialState.FAIL
    assert re.fullmatch(r"(diverged|non_finite) at epoch \d+", trials[50].user_attrs["fail_reason"])
    assert trials[-1].state is TrialState.FAIL
    assert trials[-1].user_attrs["fail_reason"].startswith("ConfigError: optimizer.lr=-1.0 is not allowed")
    assert "3 finished trials: 1 complete, 0 pruned, 2 failed; best value" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_max_failure_rate_stops_the_sweep_with_one_error_line(cli, tmp_path):
    proc = cli(
        *SWEEP,
        "hydra.sweeper.max_failure_rate=0",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.study_name=strict",
        "optimizer.lr=tag(log, interval(50, 100))",
        "trainer.max_epochs=5",
        "tracking=none",
    )
    assert proc.returncode == 1
    assert re.fullmatch(
        r"error: SweepFailed: 1 of 1 trials failed, more than hydra.sweeper.max_failure_rate=0.0 allows; "
        r"the last: (diverged|non_finite) at epoch \d+",
        proc.stderr.strip().splitlines()[-1],
    )
    assert len(finished(journal(tmp_path, "strict"))) == 1


LR_SPACE = "optimizer.lr=interval(0.01, 0.1)"  # a sweep override: the test puts it where Hydra would


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 is not allowed: must be >= 1"),
        (["optimizer.lr=glob(*)"], "optimizer.lr=glob(*) is not supported; use interval"),
        (
            ["hydra.sweeper.direction=[minimize,up]"],
            "hydra.sweeper.direction=[minimize, up] is not allowed: minimize, maximize or a list of them",
        ),
        (
            ["hydra.sweeper.direction=[minimize,minimize]"],
            "hydra.sweeper.direction has 2 entries: name as many objectives, "
            "e.g. hydra.sweeper.objectives=[best_val_loss,wall_time]",
        ),
        (
            ["hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.objectives=[best_val_loss]"],
            "hydra.sweeper.objectives=[best_val_loss] is not allowed: one distinct name per direction",
        ),
        (
            ["hydra.sweeper.direction=[minimize,minimize]", "hydra.sweeper.objectives=[best_val_loss,speed]"],
            "hydra.sweeper.objectives: speed is not an objective; available: best_val_loss, test_loss",
        ),
        (
            [
                "hydra.sweeper.direction=[minimize,minimize]",
                "hydra.sweeper.objectives=[best_val_loss,wall_time]",
                "hydra/sweeper/pruner=median",
            ],
            "hydra/sweeper/pruner=MedianPruner is not allowed with 2 objectives",
        ),
        (
            [LR_SPACE, "hydra.sweeper.enqueue=[{optimizer.lr:0.5}]"],
            "hydra.sweeper.enqueue[0]: optimizer.lr=0.5 is outside optimizer.lr's space",
        ),
        (
            [LR_SPACE, "hydra.sweeper.enqueue=[{seed:1}]"],
            "hydra.sweeper.enqueue[0]: seed is not a parameter of this sweep; its parameters: optimizer.lr",
        ),
        (
            ["hydra.sweeper.warm_start_from=/no/such/old.journal"],
            "hydra.sweeper.warm_start_from=/no/such/old.journal: no study storage at /no/such/old.journal",
        ),
        (
            ["hydra/sweeper/sampler=grid", LR_SPACE],
            "optimizer.lr: the grid sampler needs choice or range",
        ),
    ],
)
def test_bad_sweep_configs_are_one_line_errors(args, line):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from src.sweep.trial import check_sweep

    sweeps = [a for a in args if a.startswith("optimizer.lr=")]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        overrides = ["hydra/sweeper=optuna", *(a for a in args if a not in sweeps)]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    cfg.hydra.overrides.task.extend(sweeps)  # compose refuses sweeps; --multirun passes them on
    with pytest.raises(HydraException) as error:
        check_sweep(cfg)
    assert str(error.value).startswith(line)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["hydra.sweeper.n_trials=0"], ["hydra.sweeper.direction=[minimize,minimize]"]],
)
def test_a_bad_sweep_config_leaves_no_mlflow_run(tmp_path, args):
    """Checked before the sweep's MLflow parent run exists: none is left FAILED."""
    proc = run_cli(tmp_path, *SWEEP, *args)
    assert proc.returncode == 2
    (error,) = proc.stderr.strip().splitlines()
    assert error.startswith("error: hydra.sweeper.")
    assert all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") == []


def test_a_recipe_may_name_groups_as_hydras_docs_do():
    """`override hydra/sweeper: optuna` inside experiments/*.yaml means the top-level group."""
    from hydra import compose as compose_hydra
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore

    from src.config import recipe_node

    defaults = [{"override hydra/sweeper": "optuna"}, {"override hydra/sweeper/sampler": "random"}]
    recipe = OmegaConf.create({"defaults": [*defaults, {"override optimizer": "adam"}, "_self_"]})
    node = recipe_node(recipe)
    ConfigStore.instance().store(group="experiment", name="docs_style", node=node, package="_global_")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose_hydra("config", overrides=["+experiment=docs_style"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith(".OptunaSweeper")
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.RandomSampler"
    assert "Adam" in cfg.optimizer._target_


# -------------------------------------------------------------------------------- resuming
@pytest.mark.slow
def test_kill_9_mid_sweep_then_the_same_command_ends_with_exactly_n_trials(tmp_path):
    n_trials = 4
    args = (
        *SWEEP,
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.heartbeat_interval=0.5",
        "hydra.sweeper.grace_period=2",
        "hydra.sweeper.sampler.seed=0",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
        "trainer.max_epochs=150",
        *QUICK,
    )
    first = sweep_process(tmp_path, *args)
    journal_file = tmp_path / "multirun" / "optuna.journal"
    deadline = time.monotonic() + 120
    while True:  # kill it once a trial is done and the next one is running (its job, not study.ask)
        assert time.monotonic() < deadline and first.poll() is None, "the sweep ended before the kill"
        if journal_file.exists():
            trials = JournalStorage(JournalFileBackend(str(journal_file))).get_all_trials(0)
            states = [t.state for t in trials]
            if TrialState.COMPLETE in states and states[-1] is TrialState.RUNNING and trials[-1].params:
                break
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (study_name,) = optuna.get_all_study_names(JournalStorage(JournalFileBackend(str(journal_file))))

    second = run_cli(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    trials = journal(tmp_path, study_name).trials
    assert [t.number for t in trials] == list(range(n_trials))  # none twice, none RUNNING
    assert all(t.state.is_finished() for t in trials)
    killed = [t for t in trials if t.state is TrialState.FAIL]
    assert len(killed) == 1 and "no heartbeat" in second.stdout + second.stderr
    assert len({t.params["optimizer.lr"] for t in trials}) == n_trials  # the resumed sampler did not replay
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    dead = [r for r in runs if r.data.tags.get("stop_reason") == "process_died"]
    assert {r.info.status for r in dead} == {"KILLED"}
    assert sum("descentlab.sweep_dir" in r.data.tags for r in dead) == 1  # the killed sweep's parent


# ------------------------------------------------------------------------ parallel workers
def overlapping(trials: list[optuna.trial.FrozenTrial]) -> bool:
    spans = sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in trials)  # type: ignore[union-attr]
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


@pytest.mark.slow
def test_joblib_runs_n_jobs_trials_at_once(cli, tmp_path):
    proc = cli(
        *SWEEP,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.study_name=parallel",
        "hydra/sweeper/pruner=median",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
        "trainer.max_epochs=40",
        "tracking=none",
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    trials = finished(journal(tmp_path, "parallel"))
    assert len(trials) == 4
    assert overlapping(trials)  # two trials RUNNING at the same time
    assert all(len(t.intermediate_values) == t.user_attrs["epochs"] for t in trials)  # reported from workers


@pytest.mark.slow
def test_submitit_local_runs_trials_and_the_slurm_config_composes(cli, tmp_path):
    proc = cli(
        *SWEEP,
        "hydra/launcher=submitit_local",
        # Not submitit's default .submitit/%j: its local controller may start before the %j
        # folder exists, a race that two submissions at once make likely.
        "hydra.launcher.submitit_folder=${hydra.sweep.dir}/.submitit",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.study_name=submitit",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
        "trainer.max_epochs=10",
        "tracking=none",
    )
    assert proc.returncode == 0, proc.stderr
    trials = finished(journal(tmp_path, "submitit"))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(len(t.intermediate_values) == 10 for t in trials)
    proc = cli("--cfg", "hydra", "--package", "hydra.launcher", *SWEEP[1:], "hydra/launcher=slurm")
    assert proc.returncode == 0, proc.stderr
    assert "_target_: hydra_plugins.descentlab_slurm.launcher.Launcher" in proc.stdout


# --------------------------------------------------------------------------- PostgreSQL
PG_CLUSTER = ("15", "main")


def psql(sql: str) -> None:
    subprocess.run(["su", "postgres", "-c", f'psql -q -v ON_ERROR_STOP=1 -c "{sql}"'], check=True)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway role and database on the local PostgreSQL 15, started if needed."""
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("PostgreSQL is not installed here (no pg_ctlcluster)")
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL and creating its roles needs root (su postgres)")
    start = ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "start"]
    subprocess.run(start, capture_output=True)  # exit status 2: already running
    for _ in range(50):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("PostgreSQL did not start: " + " ".join(start))
    name, password = f"descentlab_{secrets.token_hex(4)}", secrets.token_hex(12)
    psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql(f"CREATE DATABASE {name} OWNER {name}")
    try:
        yield f"postgresql://{name}:{password}@127.0.0.1:5432/{name}"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.slow
def test_two_processes_on_one_postgresql_study_share_its_budget(tmp_path, postgres_url):
    n_trials = 6
    args = (
        *SWEEP,
        f"hydra.sweeper.storage={postgres_url}",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.n_trials={n_trials}",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
        "trainer.max_epochs=60",
        "tracking=none",
        *QUICK,
    )
    workers = [sweep_process(tmp_path, *args, sweep_dir=f"worker{i}") for i in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [{int(n) for n in re.findall(r"trial (\d+) (?:COMPLETE|PRUNED|FAIL)", out)} for out in outputs]
    assert all(ran), f"each process ran trials: {ran}"
    assert not ran[0] & ran[1] and ran[0] | ran[1] == set(range(n_trials))  # each trial run once
    study = optuna.load_study(
        study_name="shared", storage=postgres_url.replace("postgresql:", "postgresql+psycopg2:")
    )
    assert len(finished(study)) == len(study.trials) == n_trials
    assert postgres_url.split(":")[2].split("@")[0] not in "".join(outputs)  # the password is not printed


# ---------------------------------------------------------------------------- experiments
@pytest.mark.slow
def test_the_lecture_sweep_searches_the_w_and_b_space_with_hyperband(cli, tmp_path):
    proc = cli(
        "--multirun",
        "+experiment=lecture_sweep",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.max_resource=6",
        "trainer.max_epochs=6",
        "tracking=none",
    )
    assert proc.returncode == 0, proc.stderr
    study = journal(tmp_path, "lecture_sweep")
    trial = finished(study)[0]
    assert trial.distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "schedule.step_size": IntDistribution(10, 200),
        "trainer.batch_size": CategoricalDistribution([2, 4, 8, 16, 32, 64, 128]),
    }
    assert "TPESampler, HyperbandPruner" in proc.stdout + proc.stderr
    config = (tmp_path / "multirun" / str(trial.number) / ".hydra" / "config.yaml").read_text()
    assert "_target_: torch.optim.Adam" in config and "_target_: torch.optim.lr_scheduler.StepLR" in config


@pytest.mark.slow
def test_the_optimizer_choice_sweep_gives_each_optimizer_its_own_lr_range(cli, tmp_path):
    from src.sweep.spaces import LR_RANGES

    proc = cli(
        "--multirun", "+experiment=optimizer_sweep", "hydra.sweeper.n_trials=4", "trainer.max_epochs=3"
    )
    assert proc.returncode == 0, proc.stderr
    for trial in finished(journal(tmp_path, "optimizer_sweep")):
        low, high = LR_RANGES[trial.params["optimizer"]]
        assert low <= trial.params["optimizer.lr"] <= high
        assert trial.distributions["optimizer.lr"] == FloatDistribution(low, high, log=True)
    runs = {
        r.data.tags["optuna.trial"]: r
        for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
        if "optuna.trial" in r.data.tags
    }
    for trial in finished(journal(tmp_path, "optimizer_sweep")):
        params = runs[str(trial.number)].data.params  # what the job really ran
        assert params["optimizer"] == trial.params["optimizer"]
        assert float(params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])


# ------------------------------------------------------------------------------ plots
def decades_study() -> optuna.Study:
    """30 trials whose objective spans 1e-6 to 1e-4 over a log-sampled lr, with reported values."""
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["best_val_loss"])

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
        trial.suggest_int("schedule.step_size", 10, 200)
        final = 1e-6 * (1e-2 / lr)  # 1e-6 at the largest lr, 1e-4 at the smallest
        for epoch in range(1, 11):
            trial.report(final * (1 + 100 / epoch), epoch)
        return final

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=30)
    return study


def test_optunas_plots_name_the_objective_and_keep_every_trial_visible():
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgb

    from hydra_plugins.descentlab_sweeper._report import plot

    study = decades_study()
    history = plot(study, "optimization_history")
    assert history.get_ylabel() == "best_val_loss" and history.get_yscale() == "log"
    coordinates = plot(study, "parallel_coordinate")
    collections = [c for a in coordinates.figure.axes for c in a.collections]
    (lines,) = [c for c in collections if isinstance(c, LineCollection) and c.get_array() is not None]
    palest = max(sum(to_rgb(lines.get_cmap()(x))) / 3 for x in (0.0, 1.0))
    assert palest < 0.85  # the worst trial's line shows on white
    assert "log10 best_val_loss" in {t.get_text() for t in coordinates.get_xticklabels()}
    importances = plot(study, "param_importances")
    legend = importances.get_legend().get_window_extent()
    assert legend.x0 >= importances.get_window_extent().x1  # beside the bars, over none of them
    reported = plot(study, "intermediate_values")
    assert reported.get_xlabel() == "epoch" and reported.get_legend() is None  # 30 trials: no legend
