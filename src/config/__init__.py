"""The run's config: its top-level keys and settings (trainer, regularization, inference), the checks
of a composed config, and its registration with Hydra.

Hydra merges conf/config.yaml onto `Config` and each group's YAML onto its schema (src/config/schemas.py),
so a misspelt key or a wrong type fails at compose time, naming the key. Value rules (lr > 0,
proportions that leave a test split, ...) sit next to each field (`checked(default, rule, ...)`,
src/config/rules.py); `validate` checks them all before anything is built or logged.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from src.config.formulas import check_absorb, parsed, quick_read
from src.config.rules import Checked, Rule, bound, check, checked, numbers, require
from src.config.schemas import SCHEMAS, TableDataConf


# --------------------------------------------------------------------------------------- trainer
class Sampling(Enum):
    shuffle = "shuffle"  # a fresh permutation each epoch, batches without replacement
    replacement = "replacement"  # each batch drawn with replacement, independent of the others
    sequential = "sequential"  # the split in its stored order


class DType(Enum):
    float32 = "float32"
    float64 = "float64"


def cuda_available() -> bool:
    import torch  # only when a CUDA device is asked for: checking a config imports no torch

    return torch.cuda.is_available()


def is_device(name: str) -> bool:
    return name == "cpu" or re.fullmatch(r"cuda(:\d+)?", name) is not None


@dataclass
class TrainerConf(Checked):
    max_epochs: int = checked(300, bound(">= 1"))
    # null: the whole training split is one batch (gradient descent)
    batch_size: int | None = checked(32, bound(">= 1", ", or null for the full training split"))
    sampling: Sampling = Sampling.shuffle
    # Early stopping on val_loss, with the lecture's Lightning defaults, made scale-free (src/loop/loop.py:
    # should_stop): the thresholds are relative, so data in dollars behave as standardized data do.
    patience: int = checked(50, bound(">= 1"))
    min_delta: float = checked(0.0, bound(">= 0"))
    # converged: L − L* below it × |L*| (src/loop/loop.py)
    stopping_threshold: float | None = checked(1e-8, bound(">= 0", " or null"))
    # diverged: monitored loss above it × the starting loss
    divergence_threshold: float | None = checked(1e5, bound("> 0", " or null"))
    grad_tol: float | None = checked(None, bound("> 0", " or null"))  # "converged" once ‖∇L_train(θ)‖ < it
    # a first-order method's evidence for "converged", beside the gap: ‖∇L(θ)‖ ≤ it × ‖∇L(θ₀)‖
    grad_rtol: float | None = checked(1e-4, bound("> 0", " or null"))
    grad_variance: bool = False  # log E‖g_B − ∇L‖² each epoch: a per-example gradient pass, so opt-in
    max_time: float | None = checked(None, bound("> 0", " seconds or null"))  # seconds of training
    # epochs between snapshots (null: only on interrupt)
    checkpoint_every: int | None = checked(
        50, bound(">= 1", " epochs, or null for snapshots only on interrupt")
    )
    dtype: DType = DType.float32
    device: str = checked(
        "cpu",
        Rule(is_device, "must be 'cpu' or 'cuda[:N]'"),
        Rule(lambda d: d == "cpu" or cuda_available(), "no CUDA device here; use 'cpu'"),
    )
    progress: bool = True  # tqdm bar; always off inside --multirun


# ------------------------------------------------------------------------------------- inference
class Cov(Enum):
    """The covariance behind the standard errors, as statsmodels names them (src/estimation/inference.py)."""

    classical = "classical"  # OLS: s²(X'X)⁻¹, s² = e'e / (n − k); logit: inverse observed information
    HC0 = "HC0"  # White's sandwich
    HC1 = "HC1"  # HC0 × n / (n − k)
    HC2 = "HC2"  # residuals scaled by 1 / (1 − h_ii)
    HC3 = "HC3"  # residuals scaled by 1 / (1 − h_ii)²
    cluster = "cluster"  # sums of scores within the groups of `inference.cluster`


@dataclass
class InferenceConf(Checked):
    """Standard errors for the table of estimates printed after a linear or logistic fit."""

    cov: Cov | None = None  # null: classical where the model has standard errors, none elsewhere
    cluster: str | None = None  # the data's column holding the groups, for cov=cluster
    # the `converged` tag needs at least these digits of agreement with θ* (where θ* exists)
    min_digits: float = checked(7.0, bound("in [0, 16]"))

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        clustered = self.cov is Cov.cluster
        yield clustered or self.cluster is None, "cluster", "is only used with inference.cov=cluster"
        yield (
            not clustered or bool(self.cluster),
            "cluster",
            "inference.cov=cluster needs the column that holds the groups, inference.cluster=<column>",
        )


# ----------------------------------------------------------------------------------------- top
@dataclass
class RegularizationConf(Checked):
    """The lecture's explicit penalty: the training objective is L(θ) + (α/2)‖θ‖², α = `l2`.

    Unlike decoupled weight decay (AdamW's `weight_decay`), the penalty is part of the loss, so every
    optimizer, Newton's Hessian and the logged `grad_norm` see it. Validation and test losses are the
    data loss alone.
    """

    l2: float = checked(0.0, bound(">= 0"))


@dataclass
class Config:
    defaults: list[Any] = field(default_factory=list)
    seed: int = 0
    resume: str | None = None  # a run dir or MLflow run id: continue that run from its snapshot
    warm_start: str | None = None  # a run dir or MLflow run id: start from that run's parameters
    optimizer: Any = MISSING
    schedule: Any = MISSING
    data: Any = MISSING
    model: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    regularization: RegularizationConf = field(default_factory=RegularizationConf)
    inference: InferenceConf = field(default_factory=InferenceConf)
    tracking: Any = MISSING


EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
# The config groups whose choice (conf/<group>/<choice>.yaml) says what a run computes: a run is
# compared and named by each one's choice (src/tracking/names.py). `tracking` is a group too, about
# where a run is recorded.
GROUPS = ("data", "model", "optimizer", "schedule")
SETTINGS = ("trainer", "regularization", "inference")  # the other top-level keys with a schema


SEEDS = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def validate(cfg: DictConfig) -> None:
    """Check every value rule before anything is built; raises ConfigError naming the key."""
    known = {f.name for f in dataclasses.fields(Config)}
    keys = ", ".join(sorted(known - {"defaults"}))
    for key in cfg:
        close = difflib.get_close_matches(str(key), sorted(known - {"defaults"}), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        require(key in known, str(key), cfg[key], f"not a config key; the keys are {keys}{hint}")
    for key, value in numbers(OmegaConf.to_container(cfg, resolve=True)):
        require(math.isfinite(value), key, value, "must be a finite number (null where there is none)")
    require(
        SEEDS[0] <= cfg.seed <= SEEDS[1],
        "seed",
        cfg.seed,
        f"must be in [{SEEDS[0]}, {SEEDS[1]}] (torch's range)",
    )
    for group in (*GROUPS, *SETTINGS):
        node = cfg[group]
        if OmegaConf.get_type(node) is dict:
            continue  # a group without a schema (a user's own YAML) is checked by its target
        check(OmegaConf.to_object(node), group)  # type: ignore[arg-type]
    cluster = cfg.inference.cluster
    table = OmegaConf.get_type(cfg.data)
    require(
        cluster is None or (isinstance(table, type) and issubclass(table, TableDataConf)),
        "inference.cluster",
        cluster,
        "needs a table of data (data=csv, or a statsmodels data set such as data=fair); "
        "simulated data have no columns",
    )
    if cfg.data.get("formula") is not None:
        quick_read(cfg.data.formula)  # the common mistakes, without formulaic (most of a second)
        parsed(cfg.data.formula)  # its syntax; its columns are checked on the data
    check_absorb(cfg.data, str(cfg.model.get("_target_")), cfg.inference.cov and Cov(cfg.inference.cov).value)
    require(
        not (cfg.data.get("formula") and cfg.model.get("bias")),
        "model.bias",
        True,
        "data.formula decides the intercept (write `- 1` in it for none); leave model.bias=false",
    )


def retyped(cfg: DictConfig) -> DictConfig:
    """A config read back from YAML (a logged run's) with each group typed by its choice's schema
    again, found by the group's `_target_`: what Hydra's composition had given it, so that `validate`
    judges it as it judged the run (a CSV's `inference.cluster` included). A group with no schema of
    that target (a user's own YAML), or that no longer fits it, stays as it is."""
    for group, schemas in SCHEMAS.items():
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or OmegaConf.get_type(node) is not dict:
            continue
        target = node.get("_target_")
        for schema in schemas.values():
            if getattr(schema, "_target_", None) != target:
                continue
            try:
                cfg[group] = OmegaConf.merge(OmegaConf.structured(schema), node)
            except Exception:  # omegaconf's validation errors: another schema of the target may fit
                continue
            break
    return cfg


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    # experiments/<name>.yaml become `+experiment=<name>`: recipes live at the top of the repo.
    for recipe in sorted(EXPERIMENTS.glob("*.yaml")):
        node = recipe_node(OmegaConf.load(recipe))
        cs.store(group="experiment", name=recipe.stem, node=node, package="_global_")


def recipe_node(node: Any) -> Any:
    """A recipe's defaults with each group path made absolute (`override hydra/sweeper: optuna` →
    `override /hydra/sweeper: optuna`): Hydra reads a relative path from inside the `experiment`
    group as `experiment/hydra/sweeper`, which never exists, while Hydra's docs write recipes
    without the slash."""
    if not isinstance(node, DictConfig) or not isinstance(node.get("defaults"), ListConfig):
        return node
    defaults: list[Any] = []
    for entry in node.defaults:
        if isinstance(entry, DictConfig) and len(entry) == 1:
            ((key, value),) = entry.items()
            *keywords, group = str(key).split()
            if group != "_self_" and not group.startswith("/"):
                key = " ".join([*keywords, "/" + group])
            entry = OmegaConf.create({key: value})
        defaults.append(entry)
    node.defaults = defaults
    return node
