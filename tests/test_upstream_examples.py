"""`hydra/sweeper=optuna` as a drop-in successor of hydra-optuna-sweeper: its documented examples
(tests/sphere/conf, copies of upstream's configs) run unchanged against a small objective of our own
(tests/sphere/app.py), as real `--multirun` processes, and behave as upstream's tests say: a best-value
bound for TPE on the sphere, grid exhaustion, Pareto non-domination, the custom search space's
constraint, and the failure-rate abort. Also: warm starts, and the line that says which plugin runs
when the upstream one is installed too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests.helpers import ROOT, cli_env

APP = ROOT / "tests" / "sphere" / "app.py"

pytestmark = pytest.mark.slow  # each test runs whole sweeps in subprocesses


def sweep(cwd: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python tests/sphere/app.py --multirun <args>` in cwd, as upstream's tests run its examples."""
    env = cli_env(**({"PYTHONPATH": pythonpath} if pythonpath else {}))
    return subprocess.run(
        [sys.executable, str(APP), "--multirun", *args, f"hydra.sweep.dir={cwd / 'sweep'}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def results(cwd: Path) -> dict:
    loaded = OmegaConf.to_container(OmegaConf.load(cwd / "sweep" / "optimization_results.yaml"))
    assert isinstance(loaded, dict)
    return loaded


def study(cwd: Path, name: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(cwd / "multirun" / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_sphere_with_tpe_finds_a_value_within_upstreams_bound(tmp_path):
    # upstream's test_optuna_example: TPE seed 123, 20 trials, `~z`, and x, y from the command line
    done = sweep(tmp_path, "~z", "x=choice(0, 1, 2)", "y=0")
    assert done.returncode == 0, done.stderr
    out = results(tmp_path)
    best = study(tmp_path, "sphere").best_trial
    assert out["name"] == "optuna"
    assert out["best_params"] == best.params and "y" not in out["best_params"]  # y was fixed
    assert (
        best.value is not None and out["best_value"] == best.value <= 2.27
    )  # upstream's 95th percentile over 1000 seeds
    assert "hydra/sweeper=optuna: range(a, b) includes b" in done.stdout  # the first line: conventions

    done = sweep(tmp_path, "~z", "hydra.sweeper.study_name=config_space")  # the YAML's own space
    assert done.returncode == 0, done.stderr
    trials = study(tmp_path, "config_space").trials
    assert trials[0].distributions["x"] == FloatDistribution(-5.5, 5.5, step=0.5)  # stop included
    assert results(tmp_path)["best_value"] <= 2.27


def test_the_grid_example_walks_every_point_once(tmp_path):
    # upstream's test_example_with_grid_sampler: x in {-1, 1}, y in range(-1.0, 1.0) = {-1, 0},
    # z in {foo, bar}: 8 points
    done = sweep(tmp_path, "--config-name=grid", "hydra.sweeper.n_trials=10")
    assert done.returncode == 0, done.stderr
    points = {tuple(t.params.values()) for t in study(tmp_path, "sphere").trials}
    assert len(study(tmp_path, "sphere").trials) == 8 == len(points)  # n_trials cut to the grid
    out = results(tmp_path)
    assert out["best_value"] == 1 and abs(out["best_params"]["x"]) == 1 and out["best_params"]["y"] == 0
    assert out["best_params"]["z"] in ("foo", "bar")


def dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("with_commandline", [True, False])
def test_multi_objective_example_writes_a_non_dominated_front(tmp_path, with_commandline):
    # upstream's test_optuna_multi_objective_example: random sampler seed 123, 20 trials
    extra = ["x=range(0, 5)", "y=range(0, 3)"] if with_commandline else []
    done = sweep(tmp_path, "--config-name=multi_objective", "hydra/sweeper/sampler=random", *extra)
    assert done.returncode == 0, done.stderr
    out = results(tmp_path)
    solutions = out["solutions"]
    assert out["name"] == "optuna" and solutions
    steps = {0} if with_commandline else {0, 0.5}
    for a in solutions:
        assert a["params"]["x"] % 1 in steps and a["params"]["y"] % 1 in steps
        assert not any(dominates(b["values"], a["values"]) for b in solutions)
    trial = study(tmp_path, "multi-objective").trials[0]
    expected = IntDistribution(0, 5) if with_commandline else FloatDistribution(0, 5, step=0.5)
    assert trial.distributions["x"] == expected  # upstream's stop: included
    assert "Pareto trial" in done.stdout
    assert (tmp_path / "sweep" / "optuna_plots" / "pareto_front.png").is_file()


def test_custom_search_space_example_keeps_its_constraint(tmp_path):
    done = sweep(tmp_path, "--config-name=custom_search_space", "hydra/sweeper/sampler=random",
                 "max_z_difference_from_x=0.3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    best = results(tmp_path)["best_params"]
    assert abs(best["x"] - best["z"]) <= 0.3
    assert 0 <= best["+w"] <= 1


def test_failure_rate_example_aborts_with_the_jobs_error_only_when_set_below_one(tmp_path):
    common = ["hydra.sweeper.n_trials=6", "hydra/sweeper/sampler=random", "error=true"]
    done = sweep(tmp_path, *common, "hydra.sweeper.max_failure_rate=0.5", "hydra.sweeper.study_name=a")
    assert done.returncode != 0
    assert "RuntimeError: cfg.error is True" in done.stderr  # what upstream's test looks for
    assert "more than hydra.sweeper.max_failure_rate=0.5 allows" in done.stderr

    done = sweep(tmp_path, *common, "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.study_name=b")
    assert done.returncode == 0, done.stderr
    assert "RuntimeError: cfg.error is True" not in done.stderr
    assert {t.state for t in study(tmp_path, "b").trials} == {TrialState.FAIL}


# ------------------------------------------------------------------------------------ warm starts
def test_an_enqueued_point_is_trial_0_and_is_not_run_again_on_resume(tmp_path):
    args = ["~z", "hydra.sweeper.enqueue=[{x:4.5,y:5}]", "hydra/sweeper/sampler=random"]
    done = sweep(tmp_path, *args, "hydra.sweeper.n_trials=2")
    assert done.returncode == 0, done.stderr
    done = sweep(tmp_path, *args, "hydra.sweeper.n_trials=4")  # the same study, resumed and extended
    assert done.returncode == 0, done.stderr
    trials = study(tmp_path, "sphere").trials
    assert len(trials) == 4
    assert trials[0].params == {"x": 4.5, "y": 5} and trials[0].value == 4.5**2 + 25
    assert sum(t.params == {"x": 4.5, "y": 5} for t in trials) == 1


def test_a_warm_started_tpe_draws_from_the_old_trials(tmp_path):
    done = sweep(tmp_path, "~z", "hydra.sweeper.study_name=old", "hydra/sweeper/sampler=random",
                 "hydra.sweeper.n_trials=14")  # fmt: skip
    assert done.returncode == 0, done.stderr
    fits = sum(t.params["y"] != -5 for t in study(tmp_path, "old").trials)
    new = ["~z", "y=choice(0, 5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=7"]
    warm = sweep(tmp_path, *new, "hydra.sweeper.study_name=warm", "hydra.sweeper.warm_start_from=old")
    cold = sweep(tmp_path, *new, "hydra.sweeper.study_name=cold")
    assert warm.returncode == 0 and cold.returncode == 0, warm.stderr + cold.stderr
    warm_trials = study(tmp_path, "warm").trials
    assert len(warm_trials) == fits + 1  # the old trials with y in {0, 5}, then one of its own
    assert f"copied {fits} complete trial(s) of study old" in warm.stdout
    if fits < 14:
        assert "outside CategoricalDistribution" in warm.stdout  # y=-5: skipped, and why
    assert warm_trials[-1].params != study(tmp_path, "cold").trials[0].params


# ---------------------------------------------------------------------------- upstream installed
FAKE_UPSTREAM = {
    # hydra-optuna-sweeper cannot be installed here (it pins optuna<3); a stub of its shape stands
    # in: a Sweeper plugin whose config claims `hydra/sweeper/optuna`, as the real one does.
    "__init__.py": "",
    "config.py": """
from dataclasses import dataclass, field
from typing import Any, Optional
from hydra.core.config_store import ConfigStore

@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: Any = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = None
    direction: Any = "minimize"
    storage: Optional[str] = None
    study_name: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 2
    max_failure_rate: float = 0.0
    search_space: Optional[Any] = None
    params: Optional[Any] = None
    custom_search_space: Optional[str] = None

ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf,
                             provider="optuna_sweeper")
""",
    "optuna_sweeper.py": """
from hydra.plugins.sweeper import Sweeper

class OptunaSweeper(Sweeper):
    def __init__(self, **kwargs):
        pass
    def setup(self, **kwargs):
        pass
    def sweep(self, arguments):
        print("UPSTREAM SWEEPER RAN")
""",
}


@pytest.mark.parametrize("upstream_first", [True, False])
def test_with_upstream_installed_one_line_says_which_runs(tmp_path, upstream_first):
    package = tmp_path / "site" / "hydra_plugins" / "hydra_optuna_sweeper"
    package.mkdir(parents=True)
    for name, text in FAKE_UPSTREAM.items():
        (package / name).write_text(text)
    paths = [str(tmp_path / "site"), str(ROOT)]
    pythonpath = ":".join(paths if upstream_first else paths[::-1])
    ours = sweep(tmp_path, "~z", "hydra.sweeper.n_trials=1", pythonpath=pythonpath)
    assert ours.returncode == 0, ours.stderr
    assert "UPSTREAM SWEEPER RAN" not in ours.stdout
    assert "hydra-optuna-sweeper is installed too; hydra/sweeper=optuna runs descentlab's sweeper, " \
           "hydra/sweeper=hydra_optuna_sweeper runs the upstream one" in ours.stdout  # fmt: skip
    theirs = sweep(tmp_path, "hydra/sweeper=hydra_optuna_sweeper", pythonpath=pythonpath)
    assert theirs.returncode == 0, theirs.stderr
    assert "UPSTREAM SWEEPER RAN" in theirs.stdout


# -------------------------------------------------------------------------------------- quoting
def test_non_ascii_study_names_and_values_reach_the_jobs_as_typed(tmp_path):
    paths = ["/données/é.csv", "/tmp/ü b.csv", "it's"]
    choice = "+path=choice('/données/é.csv', '/tmp/ü b.csv', 'it\\'s')"
    done = sweep(tmp_path, "~z", "hydra.sweeper.study_name='étude-α'", choice, "hydra.sweeper.n_trials=4")
    assert done.returncode == 0, done.stderr
    trials = study(tmp_path, "étude-α").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        job = OmegaConf.load(tmp_path / "sweep" / str(trial.number) / ".hydra" / "config.yaml")
        assert job.path == trial.params["+path"] and job.path in paths
        assert f"trial {trial.number} COMPLETE" in done.stdout
