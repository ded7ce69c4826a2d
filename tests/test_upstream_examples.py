"""`hydra/sweeper=optuna` as a drop-in successor of hydra-optuna-sweeper: each case of upstream's test
module (tests/test_optuna_sweeper_plugin.py of hydra-optuna-sweeper 1.2/1.3 and its main branch),
written again from its public behaviour against our plugin, with upstream's expectations. Its
documented examples (tests/sphere/conf, copies of upstream's configs, which write `storage: null`)
run against a small objective of our own (tests/sphere/app.py) as real `--multirun` processes, each in
its own directory, and two of them back to back in one directory, as upstream's module runs them all
from one folder. Also: warm starts, and the line that says which plugin runs when the upstream one is
installed too."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hydra_plugins.descentlab_sweeper import _samplers, _space
from hydra_plugins.descentlab_sweeper.config import (
    CmaEsSamplerConf,
    GridSamplerConf,
    NSGAIISamplerConf,
    TPESamplerConf,
)
from hydra_plugins.descentlab_sweeper.sweeper import OptunaSweeper
from tests.helpers import ROOT, cli_env

APP = ROOT / "tests" / "sphere" / "app.py"
CONF = ROOT / "tests" / "sphere" / "conf"
slow = pytest.mark.slow  # these run whole sweeps in subprocesses


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


def study(cwd: Path, name: str, journal: str = "sweep/optuna.journal") -> optuna.Study:
    """A study of a sweep: by default the fresh one `storage: null` keeps in the sweep dir."""
    storage = JournalStorage(JournalFileBackend(str(cwd / journal)))
    return optuna.load_study(study_name=name, storage=storage)


def dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------- upstream's cases, in process
def test_discovery():
    assert OptunaSweeper.__name__ in [p.__name__ for p in Plugins.instance().discover(Sweeper)]


@pytest.mark.parametrize(
    ("node", "key", "expected"),
    [
        (GridSamplerConf, "seed", None),
        (TPESamplerConf, "group", False),
        (TPESamplerConf, "constraints_func", None),
        (TPESamplerConf, "consider_endpoints", None),  # null: Optuna's own default
        (CmaEsSamplerConf, "n_startup_trials", 1),
        (CmaEsSamplerConf, "popsize", None),
        (CmaEsSamplerConf, "with_margin", False),
        (CmaEsSamplerConf, "lr_adapt", False),
        (CmaEsSamplerConf, "inc_popsize", -1),
        (NSGAIISamplerConf, "crossover", None),
    ],
)
def test_sampler_config_defaults(node, key, expected):
    assert getattr(node(), key) == expected


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="grid", return_hydra_config=True, overrides=list(overrides))


@pytest.mark.parametrize(
    ("sampler", "override", "expected"),
    [
        ("grid", "seed=123", 123),
        ("tpe", "group=true", True),
        ("tpe", "constant_liar=true", True),
        ("tpe", "constraints_func=test_constraints", "test_constraints"),
        ("tpe", "consider_endpoints=true", True),  # the key the issue found missing
        ("tpe", "consider_prior=false", False),
        ("tpe", "prior_weight=2.0", 2.0),
        ("tpe", "consider_magic_clip=false", False),
        ("tpe", "warn_independent_sampling=false", False),
        ("cmaes", "n_startup_trials=7", 7),
        ("cmaes", "popsize=12", 12),
        ("cmaes", "with_margin=true", True),
        ("cmaes", "lr_adapt=true", True),
        ("cmaes", "inc_popsize=2", 2),
        ("cmaes", "independent_sampler={_target_: optuna.samplers.RandomSampler}",
         {"_target_": "optuna.samplers.RandomSampler"}),
        ("nsgaii", "crossover=test_crossover", "test_crossover"),
        ("nsgaii", "constraints_func=m.f", "m.f"),
        ("gp", "constraints_func=m.f", "m.f"),
        ("qmc", "independent_sampler=null", None),
        ("nsgaiii", "dividing_parameter=4", 4),
    ],
)  # fmt: skip
def test_sampler_normal_override(sampler, override, expected):
    key = override.split("=", 1)[0]
    cfg = composed(f"hydra/sweeper/sampler={sampler}", f"hydra.sweeper.sampler.{override}")
    value = cfg.hydra.sweeper.sampler[key]
    assert (OmegaConf.to_container(value) if OmegaConf.is_config(value) else value) == expected


def constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [trial.params["x"] - 1.0]  # feasible: x <= 1


@pytest.mark.parametrize(
    ("sampler", "options", "check"),
    [
        ("cmaes", {"independent_sampler": {"_target_": "optuna.samplers.RandomSampler"}, "inc_popsize": 2},
         lambda s: isinstance(s._independent_sampler, optuna.samplers.RandomSampler)),
        ("tpe", {"constraints_func": f"{__name__}.constraints", "consider_endpoints": True},
         lambda s: s._constraints_func is constraints and s._parzen_estimator_parameters.consider_endpoints),
        ("gp", {"independent_sampler": {"_target_": "optuna.samplers.QMCSampler"}},
         lambda s: isinstance(s._independent_sampler, optuna.samplers.QMCSampler)),
        ("nsgaiii", {"reference_points": [[0.0, 1.0], [1.0, 0.0]]},
         lambda s: isinstance(s._elite_population_selection_strategy._reference_points, np.ndarray)),
    ],
)  # fmt: skip
def test_sampler_options_reach_optuna_with_upstreams_meaning(sampler, options, check):
    cfg = composed(f"hydra/sweeper/sampler={sampler}")
    config = OmegaConf.merge(cfg.hydra.sweeper.sampler, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" samplers
        built = _samplers.build(config, None, 0)  # type: ignore[arg-type]  # no grid, no source trials
    assert check(built)


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [("median", optuna.pruners.MedianPruner), ("percentile", optuna.pruners.PercentilePruner),
     ("hyperband", optuna.pruners.HyperbandPruner), ("none", optuna.pruners.NopPruner)],
)  # fmt: skip
def test_each_pruner_choice_builds_its_optuna_class(pruner, expected):
    from hydra.utils import instantiate

    cfg = composed(f"hydra/sweeper/pruner={pruner}", "hydra.sweeper.sampler.seed=1")
    assert isinstance(instantiate(cfg.hydra.sweeper.pruner), expected)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "gp", "qmc", "nsgaii"])
def test_default_sampler_configs_raise_no_deprecation_warning(sampler):
    # upstream's test_default_cmaes_config_has_no_restart_deprecation_warning, for each sampler: the
    # defaults (null where Optuna deprecates an option) are Optuna's own
    config = composed(f"hydra/sweeper/sampler={sampler}").hydra.sweeper.sampler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _samplers.build(config, None, 0)  # type: ignore[arg-type]
    assert not [w for w in caught if issubclass(w.category, FutureWarning | DeprecationWarning)]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
        ("key=range(1,3)", IntDistribution(1, 3)),
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ],
)
def test_create_optuna_distribution_from_override(override, expected):
    (parsed,) = OverridesParser.create().parse_overrides([override])
    actual = _space.distribution(parsed, range_stop_included=True)
    if isinstance(expected, CategoricalDistribution):  # shuffle() orders its choices at random
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


@pytest.mark.parametrize(
    ("overrides", "distributions", "fixed"),
    [
        (["key=choice(1,2)"], {"key": CategoricalDistribution([1, 2])}, {}),
        (["key=5"], {}, {"key": "key=5"}),
        (["key1=choice(1,2)", "key2=5"], {"key1": CategoricalDistribution([1, 2])}, {"key2": "key2=5"}),
        (
            ["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
            {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 3)},
            {"key2": "key2=5"},
        ),
        (["~z"], {}, {"~z": "~z"}),  # upstream's deletions: passed to every job as typed
        (["~z=10"], {}, {"~z": "~z=10"}),
    ],
)
def test_create_params_from_overrides(overrides, distributions, fixed):
    space = _space.parse(overrides, range_stop_included=True)
    assert (space.distributions, space.fixed) == (distributions, fixed)


def test_launch_jobs(hydra_sweep_runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the study's journal is written under the launch dir
    sweep_ = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        config_path="configs",
        config_name="compose.yaml",
        task_function=None,
        overrides=["hydra/sweeper=optuna", "hydra/launcher=basic", "hydra.sweeper.n_trials=8",
                   "hydra.sweeper.n_jobs=3", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
    )  # fmt: skip
    with sweep_:
        assert sweep_.returns is None


def test_motpe_sampler_removed_in_one_line():
    from hydra.errors import HydraException

    from hydra_plugins.descentlab_sweeper._plan import MOTPE

    cfg = composed("hydra/sweeper/sampler=motpe")
    with pytest.raises(HydraException, match=r"sampler was removed in Optuna 4\.0"):
        OptunaSweeper.check_config(cfg)
    assert "\n" not in MOTPE and "use hydra/sweeper/sampler=tpe" in MOTPE and "nsgaii" in MOTPE


def test_upstreams_deprecated_search_space_is_refused_in_one_line():
    from hydra.errors import HydraException

    cfg = composed("hydra.sweeper.search_space={x: {type: float, low: -5.5, high: 5.5}}")
    with pytest.raises(HydraException, match=r"^hydra.sweeper.search_space is not read .*sweeper.params"):
        OptunaSweeper.check_config(cfg)


# ------------------------------------------------------------------- upstream's cases, as processes
SQLITE_CASE = ["hydra.job.chdir=True", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1",
               "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123", "~z"]  # fmt: skip


def optuna_example(cwd: Path, with_commandline: bool) -> None:
    """upstream's test_optuna_example: TPE seed 123, 20 trials, a sqlite storage in its folder."""
    storage = f"sqlite:///{cwd / 'test.db'}"
    extra = ["x=choice(0, 1, 2)", "y=0"] if with_commandline else []
    done = sweep(cwd, *SQLITE_CASE, f"hydra.sweeper.storage={storage}",
                 "hydra.sweeper.study_name=test-optuna-example", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = results(cwd)
    best = optuna.load_study(storage=storage, study_name="test-optuna-example").best_trial
    assert out["name"] == "optuna" and out["best_params"]["x"] == best.params["x"]
    if with_commandline:
        assert "y" not in out["best_params"] and "y" not in best.params  # y was fixed
    else:
        assert out["best_params"]["y"] == best.params["y"]
    assert out["best_value"] == best.value
    assert out["best_value"] <= 2.27  # upstream's 95th percentile of TPE's best over 1000 seeds
    assert f"Best value: {best.value}" in done.stdout and "Study name: test-optuna-example" in done.stdout


def grid_example(cwd: Path, n_trials: int) -> None:
    """upstream's test_example_with_grid_sampler: x in {-1, 1}, y in range(-1.0, 1.0) = {-1, 0},
    z in {foo, bar}: 8 points."""
    storage = f"sqlite:///{cwd / 'test.db'}"
    done = sweep(cwd, "--config-name=grid", "hydra.job.chdir=False", f"hydra.sweeper.n_trials={n_trials}",
                 "hydra.sweeper.n_jobs=1",
                 f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=test-grid-sampler",
                 "hydra.sweeper.sampler.seed=123")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = results(cwd)
    bv, bx, by, bz = out["best_value"], *(out["best_params"][k] for k in "xyz")
    if n_trials >= 12:
        assert bv == 1 and abs(bx) == 1 and by == 0
    else:
        assert bx in [-1, 1] and by in [-1, 0]
    assert bz in ["foo", "bar"]
    trials = optuna.load_study(storage=storage, study_name="test-grid-sampler").trials
    assert len(trials) == min(n_trials, 8) == len({tuple(t.params.values()) for t in trials})


def multi_objective_example(cwd: Path, sampler: str, with_commandline: bool) -> None:
    """upstream's test_optuna_multi_objective_example: seed 123, 20 trials."""
    extra = ["x=range(0, 5)", "y=range(0, 3)"] if with_commandline else []
    done = sweep(cwd, "--config-name=multi_objective", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
                 "hydra.sweeper.n_jobs=1",
                 f"hydra/sweeper/sampler={sampler}", "hydra.sweeper.sampler.seed=123", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = results(cwd)
    assert out["name"] == "optuna"
    steps = {0} if with_commandline else {0, 0.5}
    for a in out["solutions"]:
        assert a["params"]["x"] % 1 in steps and a["params"]["y"] % 1 in steps
        assert not any(dominates(b["values"], a["values"]) for b in out["solutions"])
    trials = study(cwd, "multi-objective").trials
    assert len(trials) == 20  # a fresh study: this command's own trials, not an earlier command's
    expected = IntDistribution(0, 5) if with_commandline else FloatDistribution(0, 5, step=0.5)
    assert trials[0].distributions["x"] == expected  # upstream's range: stop included
    assert f"Number of Pareto solutions: {len(out['solutions'])}" in done.stdout


def custom_search_space_example(cwd: Path) -> None:
    done = sweep(cwd, "--config-name=custom_search_space", "hydra.job.chdir=True",
                 "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1", "hydra/sweeper/sampler=random",
                 "hydra.sweeper.sampler.seed=123",
                 "max_z_difference_from_x=0.3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = results(cwd)
    assert out["name"] == "optuna"
    assert abs(out["best_params"]["x"] - out["best_params"]["z"]) <= 0.3
    assert 0 <= out["best_params"]["+w"] <= 1


def failure_rate_example(cwd: Path, max_failure_rate: float) -> None:
    done = sweep(cwd, "hydra.job.chdir=True", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=2",
                 "hydra/sweeper/sampler=random",
                 "hydra.sweeper.sampler.seed=123", f"hydra.sweeper.max_failure_rate={max_failure_rate}",
                 "error=true")  # fmt: skip
    if max_failure_rate < 1.0:
        assert done.returncode != 0
        assert "RuntimeError: cfg.error is True" in done.stderr  # what upstream's test looks for
        assert f"more than hydra.sweeper.max_failure_rate={max_failure_rate} allows" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert "RuntimeError: cfg.error is True" not in done.stderr
        assert [t.state for t in study(cwd, "sphere").trials] == [TrialState.FAIL] * 20


def motpe_example(cwd: Path) -> None:
    """upstream's test_example_with_removed_motpe: a config that selects the removed sampler."""
    done = sweep(
        cwd, "--config-name=multi_objective", "hydra/sweeper/sampler=motpe", "hydra.sweeper.n_trials=20"
    )
    assert done.returncode != 0
    assert "motpe" in done.stderr and "sampler was removed in Optuna 4.0" in done.stderr
    assert not (cwd / "sweep" / "optuna.journal").exists()  # stopped before any study was made


@slow
@pytest.mark.parametrize("with_commandline", [True, False])
def test_optuna_example(tmp_path, with_commandline):
    optuna_example(tmp_path, with_commandline)


@slow
@pytest.mark.parametrize("n_trials", [10, 1])
def test_example_with_grid_sampler(tmp_path, n_trials):
    grid_example(tmp_path, n_trials)


@slow
@pytest.mark.parametrize("sampler", ["random", "nsgaiii"])
@pytest.mark.parametrize("with_commandline", [True, False])
def test_optuna_multi_objective_example(tmp_path, sampler, with_commandline):
    multi_objective_example(tmp_path, sampler, with_commandline)
    if not with_commandline:  # optuna_plots/ holds Optuna's Pareto plot
        assert (tmp_path / "sweep" / "optuna_plots" / "pareto_front.png").is_file()


@slow
def test_optuna_custom_search_space_example(tmp_path):
    custom_search_space_example(tmp_path)


@slow
@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failure_rate(tmp_path, max_failure_rate):
    failure_rate_example(tmp_path, max_failure_rate)


@slow
def test_example_with_removed_motpe(tmp_path):
    motpe_example(tmp_path)


@slow
def test_upstream_cases_back_to_back_in_one_directory(tmp_path):
    """As upstream's module runs them, from one folder: each meets no study of the one before
    (`storage: null` is a fresh study), however the examples' fixed study names coincide."""
    multi_objective_example(tmp_path, "random", with_commandline=True)
    multi_objective_example(tmp_path, "random", with_commandline=False)  # another space, same name
    failure_rate_example(tmp_path, 1.0)  # study "sphere": 20 FAIL trials
    custom_search_space_example(tmp_path)
    failure_rate_example(tmp_path, 0.5)
    optuna_example(tmp_path, with_commandline=True)
    # Again on its sqlite study, which holds its 20 trials: one line says so, nothing runs, exit 0.
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    again = sweep(tmp_path, *SQLITE_CASE, f"hydra.sweeper.storage={storage}",
                  "hydra.sweeper.study_name=test-optuna-example", "x=choice(0, 1, 2)", "y=0")  # fmt: skip
    assert again.returncode == 0, again.stderr
    (line,) = [line for line in again.stdout.splitlines() if "is full" in line]
    assert "study test-optuna-example" in line and "20 finished trials of n_trials=20" in line
    assert "Launching" not in again.stdout
    assert len(optuna.load_study(storage=storage, study_name="test-optuna-example").trials) == 20


# ------------------------------------------------------------------------------------ warm starts
KEPT = "hydra.sweeper.storage=multirun/optuna.journal"  # the default the examples' `storage: null` overrides


@slow
def test_an_enqueued_point_is_trial_0_and_is_not_run_again_on_resume(tmp_path):
    args = ["~z", "hydra.sweeper.enqueue=[{x:4.5,y:5}]", "hydra/sweeper/sampler=random", KEPT]
    done = sweep(tmp_path, *args, "hydra.sweeper.n_trials=2")
    assert done.returncode == 0, done.stderr
    done = sweep(tmp_path, *args, "hydra.sweeper.n_trials=4")  # the same study, resumed and extended
    assert done.returncode == 0, done.stderr
    trials = study(tmp_path, "sphere", "multirun/optuna.journal").trials
    assert len(trials) == 4
    assert trials[0].params == {"x": 4.5, "y": 5} and trials[0].value == 4.5**2 + 25
    assert sum(t.params == {"x": 4.5, "y": 5} for t in trials) == 1


@slow
def test_a_warm_started_tpe_draws_from_the_old_trials(tmp_path):
    done = sweep(tmp_path, "~z", "hydra.sweeper.study_name=old", "hydra/sweeper/sampler=random",
                 "hydra.sweeper.n_trials=14", KEPT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    fits = sum(t.params["y"] != -5 for t in study(tmp_path, "old", "multirun/optuna.journal").trials)
    new = ["~z", "y=choice(0, 5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=7", KEPT]
    warm = sweep(tmp_path, *new, "hydra.sweeper.study_name=warm", "hydra.sweeper.warm_start_from=old")
    cold = sweep(tmp_path, *new, "hydra.sweeper.study_name=cold")
    assert warm.returncode == 0 and cold.returncode == 0, warm.stderr + cold.stderr
    warm_trials = study(tmp_path, "warm", "multirun/optuna.journal").trials
    assert len(warm_trials) == fits + 1  # the old trials with y in {0, 5}, then one of its own
    assert f"copied {fits} complete trial(s) of study old" in warm.stdout
    if fits < 14:
        assert "outside CategoricalDistribution" in warm.stdout  # y=-5: skipped, and why
    assert warm_trials[-1].params != study(tmp_path, "cold", "multirun/optuna.journal").trials[0].params


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


@slow
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
@slow
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
