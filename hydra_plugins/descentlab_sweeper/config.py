"""The sweeper's config: `hydra/sweeper=optuna` (or `descentlab_optuna`), with `hydra/sweeper/sampler` and
`hydra/sweeper/pruner` groups whose nodes are `_target_` configs of optuna classes.

The shape follows the official hydra-optuna-sweeper (direction, study_name, storage, n_trials, n_jobs,
max_failure_rate, params, custom_search_space, sampler), so its YAML works here; this plugin adds a
pruner, a study-wide budget, a timeout, named objectives, warm starts and the heartbeat that finds
trials of a killed process.
Hydra imports this module at every start-up, so it imports nothing heavy. (No `from __future__ import
annotations`: Hydra runs it before it is in sys.modules, where dataclasses would look the strings up.)
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import MISSING


# ------------------------------------------------------------------------------------- samplers
@dataclass
class SamplerConf:
    _target_: str = MISSING
    seed: int | None = None  # null: a fresh random seed; a resumed study offsets a given one


@dataclass
class TPESamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.TPESampler"
    # null: Optuna's own default (upstream 1.3 declares these null too; Optuna 4 deprecates some)
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True  # parallel workers do not all sample next to one running trial
    warn_independent_sampling: bool | None = None
    constraints_func: Any = None  # a dotted path to fn(FrozenTrial) -> constraint values (<= 0: feasible)


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GridSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the grid comes from `params` at sweep time


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    independent_sampler: Any = None  # a sampler config (`_target_: optuna.samplers...`) or null
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1  # Optuna's default; upstream 1.2 wrote 2, which Optuna 4 deprecates
    source_trials: Any = None  # warm starts: see hydra.sweeper.warm_start_from
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    consider_pruned_trials: bool = False
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Any = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any = None
    warn_independent_sampling: bool = True


@dataclass
class NSGAIISamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    mutation: Any = None  # an optuna.samplers.nsgaii mutation config, or null
    crossover: Any = None  # e.g. {_target_: optuna.samplers.nsgaii.BLXAlphaCrossover}; null: uniform
    constraints_func: Any = None


@dataclass
class NSGAIIISamplerConf(NSGAIISamplerConf):
    _target_: str = "optuna.samplers.NSGAIIISampler"
    reference_points: Any = None  # a list of points (lists of floats); null: Das-Dennis points
    dividing_parameter: int = 3


@dataclass
class MOTPESamplerConf(SamplerConf):
    """`sampler=motpe`: gone from Optuna 4; the sweep stops with upstream's message (_plan.check).
    Its old options are declared so that an old config reaches that message."""

    _target_: str = "optuna.samplers.MOTPESampler"
    consider_prior: bool = True
    prior_weight: float = 1.0
    consider_magic_clip: bool = True
    consider_endpoints: bool = False
    n_startup_trials: int = 10
    n_ehvi_candidates: int = 24


# -------------------------------------------------------------------------------------- pruners
@dataclass
class NopPrunerConf:
    """`pruner: none`: every trial runs its full budget."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf(MedianPrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # keep trials in the best quarter at each step


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # "auto" or an int: the epochs of an unpruned trial
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


# -------------------------------------------------------------------------------------- sweeper
@dataclass
class DescentlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.descentlab_sweeper.sweeper.DescentlabOptunaSweeper"
    _recursive_: bool = False  # sampler and pruner are built at sweep time (seed offset, grid)
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])

    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "minimize"  # or a list of directions: a multi-objective study
    # the names of what the job returns, one per direction; null: the job's best_val_loss
    # (descentlab's job), or whatever number(s) another app returns
    objectives: Any = None
    # a journal file (relative to the launch dir: the same command resumes its study), or an RDB URL
    # such as sqlite:///abs/path.db or postgresql://user@host/db (a password: ~/.pgpass or
    # ${oc.env:...}); null, as upstream: a fresh study for this command only, in <sweep dir>
    storage: str | None = "multirun/optuna.journal"
    # null: derived from the job name and the search space, so the same command resumes its study
    study_name: str | None = None
    n_trials: int = 20  # finished trials (complete, pruned or failed) the *study* ends with
    n_jobs: int = 1  # trials in flight at once (needs a launcher that runs jobs elsewhere)
    timeout: float | None = None  # seconds after which this process starts no new trial
    max_failure_rate: float = 1.0  # stop the sweep once failed / finished exceeds it; 1: never
    heartbeat_interval: float = 10.0  # seconds between "still running" marks on in-flight trials
    grace_period: float = 60.0  # a running trial with no mark for this long belongs to a dead process
    params: dict[str, str] | None = None  # key: Hydra sweep syntax, e.g. tag(log, interval(1e-4, 1e-2))
    custom_search_space: str | None = None  # dotted path of fn(cfg, trial) adding conditional params
    repeats: int = 1  # seeds per trial (seed, seed + 1, ...): the objective is their mean
    # points evaluated first, once per study: [{optimizer.lr: 0.1, trainer.batch_size: 32}, ...]
    enqueue: Any = None
    # a finished study (name in this storage, or a storage path/URL) whose trials seed this one
    warm_start_from: str | None = None
    search_space: Any = None  # hydra-optuna-sweeper 1.1's form, declared so that it is refused in one line


@dataclass
class OptunaSweeperConf(DescentlabOptunaSweeperConf):
    """`hydra/sweeper=optuna`: parameters mean what they mean to hydra-optuna-sweeper."""

    _target_: str = "hydra_plugins.descentlab_sweeper.sweeper.OptunaSweeper"


UPSTREAM = "hydra_plugins.hydra_optuna_sweeper"
UPSTREAM_NAME = "hydra_optuna_sweeper"  # where the upstream plugin stays selectable when installed


def upstream_installed() -> bool:
    from importlib.util import find_spec

    return find_spec(UPSTREAM) is not None


def register() -> None:
    cs = ConfigStore.instance()
    if upstream_installed():
        # Both plugins store `hydra/sweeper/optuna` (and samplers); keep upstream's sweeper under
        # another name, and store ours over it (again in ClaimTheOptunaName, once Hydra has run
        # every plugin module, so that `optuna` means this sweeper whatever the import order).
        from importlib import import_module

        upstream = import_module(f"{UPSTREAM}.config")
        cs.store(group="hydra/sweeper", name=UPSTREAM_NAME, node=upstream.OptunaSweeperConf)
    cs.store(group="hydra/sweeper", name="descentlab_optuna", node=DescentlabOptunaSweeperConf)
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)
    samplers = {
        "tpe": TPESamplerConf,
        "random": RandomSamplerConf,
        "grid": GridSamplerConf,
        "cmaes": CmaEsSamplerConf,
        "qmc": QMCSamplerConf,
        "gp": GPSamplerConf,
        "nsga2": NSGAIISamplerConf,
        "nsgaii": NSGAIISamplerConf,  # the official plugin's name for it
        "nsgaiii": NSGAIIISamplerConf,
        "motpe": MOTPESamplerConf,
    }
    for name, node in samplers.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node)
    pruners = {
        "none": NopPrunerConf,
        "median": MedianPrunerConf,
        "percentile": PercentilePrunerConf,
        "hyperband": HyperbandPrunerConf,
        "successive_halving": SuccessiveHalvingPrunerConf,
    }
    for name, node in pruners.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node)


class ClaimTheOptunaName(SearchPathPlugin):
    """Hydra runs search-path plugins after it has imported every plugin module, and before it
    composes a config: the last word on `hydra/sweeper/optuna` when hydra-optuna-sweeper is installed."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if upstream_installed():
            register()


register()
