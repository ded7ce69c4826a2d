"""Structured-config schemas: what each config group accepts, with types and allowed values.

Hydra merges each YAML under `conf/` onto its schema here, so a misspelt key or a wrong type fails
at compose time, naming the key. Value rules (lr > 0, proportions that leave a test split, ...) are
checked by `validate` before anything is built or logged. Each group's schemas live in ConfigStore
group `schema/<group>`; the YAML for a choice pulls its schema in with
`defaults: [/schema/<group>/<name>@_here_, _self_]`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed; the message is one line naming key and rule."""


class CallbackConfigError(BaseException):
    """A ConfigError found in a Hydra callback, which would turn an Exception into a warning and go
    on; the CLI reports it as any ConfigError."""


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {rule}")


# --------------------------------------------------------------------------------------- trainer
class Sampling(Enum):
    shuffle = "shuffle"  # a fresh permutation each epoch, batches without replacement
    replacement = "replacement"  # each batch drawn with replacement, independent of the others
    sequential = "sequential"  # the split in its stored order


class DType(Enum):
    float32 = "float32"
    float64 = "float64"


@dataclass
class TrainerConf:
    max_epochs: int = 300
    batch_size: int | None = 32  # null: the whole training split is one batch (gradient descent)
    sampling: Sampling = Sampling.shuffle
    # Early stopping on val_loss, with the lecture's Lightning defaults, made scale-free (src/loop.py:
    # should_stop): the thresholds are relative, so data in dollars behave as standardized data do.
    patience: int = 50
    min_delta: float = 0.0
    stopping_threshold: float | None = 1e-8  # converged: L − L* below it × |L*| (src/loop.py)
    divergence_threshold: float | None = 1e5  # diverged: monitored loss above it × the starting loss
    grad_tol: float | None = None  # stop ("converged") once ‖∇L_train(θ)‖ < grad_tol
    grad_variance: bool = False  # log E‖g_B − ∇L‖² each epoch: a per-example gradient pass, so opt-in
    max_time: float | None = None  # seconds of training before stopping
    checkpoint_every: int | None = 50  # epochs between snapshots (null: only on interrupt)
    dtype: DType = DType.float32
    device: str = "cpu"
    progress: bool = True  # tqdm bar; always off inside --multirun

    def validate(self, key: str) -> None:
        require(self.max_epochs >= 1, f"{key}.max_epochs", self.max_epochs, "must be >= 1")
        require(
            self.batch_size is None or self.batch_size >= 1,
            f"{key}.batch_size",
            self.batch_size,
            "must be >= 1, or null for the full training split",
        )
        require(self.patience >= 1, f"{key}.patience", self.patience, "must be >= 1")
        require(self.min_delta >= 0, f"{key}.min_delta", self.min_delta, "must be >= 0")
        require(
            self.stopping_threshold is None or self.stopping_threshold >= 0,
            f"{key}.stopping_threshold",
            self.stopping_threshold,
            "must be >= 0 or null",
        )
        require(
            self.divergence_threshold is None or self.divergence_threshold > 0,
            f"{key}.divergence_threshold",
            self.divergence_threshold,
            "must be > 0 or null",
        )
        require(
            self.grad_tol is None or self.grad_tol > 0,
            f"{key}.grad_tol",
            self.grad_tol,
            "must be > 0 or null",
        )
        require(
            self.max_time is None or self.max_time > 0,
            f"{key}.max_time",
            self.max_time,
            "must be > 0 seconds or null",
        )
        require(
            self.checkpoint_every is None or self.checkpoint_every >= 1,
            f"{key}.checkpoint_every",
            self.checkpoint_every,
            "must be >= 1 epochs, or null for snapshots only on interrupt",
        )
        require(
            self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
            f"{key}.device",
            self.device,
            "must be 'cpu' or 'cuda[:N]'",
        )
        require(
            self.device == "cpu" or torch.cuda.is_available(),
            f"{key}.device",
            self.device,
            "no CUDA device here; use 'cpu'",
        )


# ------------------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConf:
    """An optimizer's constructor arguments; `_partial_` because parameters come later."""

    _target_: str = MISSING
    _partial_: bool = True
    _convert_: str = "all"
    lr: float = MISSING

    def validate(self, key: str) -> None:
        require(self.lr > 0, f"{key}.lr", self.lr, "must be > 0")


@dataclass
class WeightDecayConf(OptimizerConf):
    """torch.optim's first-order methods, which all take a weight_decay (L-BFGS does not)."""

    weight_decay: float = 0.0

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, "must be >= 0")


@dataclass
class SGDConf(WeightDecayConf):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def validate(self, key: str) -> None:
        super().validate(key)
        require(0 <= self.momentum < 1, f"{key}.momentum", self.momentum, "must be in [0, 1)")
        require(
            self.dampening == 0 or not self.nesterov,
            f"{key}.dampening",
            self.dampening,
            "must be 0 with nesterov",
        )
        require(
            self.momentum > 0 or not self.nesterov,
            f"{key}.momentum",
            self.momentum,
            "must be > 0 with nesterov",
        )


@dataclass
class AdamConf(WeightDecayConf):
    _target_: str = "torch.optim.Adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False

    def validate(self, key: str) -> None:
        super().validate(key)
        require(len(self.betas) == 2, f"{key}.betas", list(self.betas), "must be two numbers [β₁, β₂]")
        for i, beta in enumerate(self.betas):
            require(0 <= beta < 1, f"{key}.betas[{i}]", beta, "must be in [0, 1)")
        require(self.eps > 0, f"{key}.eps", self.eps, "must be > 0")


@dataclass
class AdamWConf(AdamConf):
    """Adam with decoupled weight decay: θ ← θ − ηλθ apart from the gradient step (not an L2 loss)."""

    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class RMSpropConf(WeightDecayConf):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def validate(self, key: str) -> None:
        super().validate(key)
        require(0 <= self.alpha < 1, f"{key}.alpha", self.alpha, "must be in [0, 1)")
        require(self.eps > 0, f"{key}.eps", self.eps, "must be > 0")
        require(0 <= self.momentum < 1, f"{key}.momentum", self.momentum, "must be in [0, 1)")


@dataclass
class AdagradConf(WeightDecayConf):
    _target_: str = "torch.optim.Adagrad"
    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.lr_decay >= 0, f"{key}.lr_decay", self.lr_decay, "must be >= 0")
        require(
            self.initial_accumulator_value >= 0,
            f"{key}.initial_accumulator_value",
            self.initial_accumulator_value,
            "must be >= 0",
        )
        require(self.eps > 0, f"{key}.eps", self.eps, "must be > 0")


@dataclass
class LBFGSConf(OptimizerConf):
    """torch.optim.LBFGS; each optimizer step runs up to `max_iter` quasi-Newton iterations."""

    _target_: str = "torch.optim.LBFGS"
    max_iter: int = 20
    max_eval: int | None = None
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100
    line_search_fn: str | None = None  # null: fixed steps of size lr; "strong_wolfe": a line search

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.max_iter >= 1, f"{key}.max_iter", self.max_iter, "must be >= 1")
        require(self.max_eval is None or self.max_eval >= 1, f"{key}.max_eval", self.max_eval, "must be >= 1")
        require(self.tolerance_grad >= 0, f"{key}.tolerance_grad", self.tolerance_grad, "must be >= 0")
        require(self.tolerance_change >= 0, f"{key}.tolerance_change", self.tolerance_change, "must be >= 0")
        require(self.history_size >= 1, f"{key}.history_size", self.history_size, "must be >= 1")
        require(
            self.line_search_fn in (None, "strong_wolfe"),
            f"{key}.line_search_fn",
            self.line_search_fn,
            "must be null or strong_wolfe",
        )


@dataclass
class NewtonConf(OptimizerConf):
    """src.optim.Newton: θ ← θ − η [∇²L(θ) + λI]⁻¹ ∇L(θ), optionally with backtracking (Armijo)."""

    _target_: str = "src.optim.Newton"
    damping: float = 0.0
    line_search: str | None = None  # null: the step η; "armijo": backtrack from η until L decreases
    armijo_c: float = 1e-4
    backtrack: float = 0.5
    max_backtracks: int = 30

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.damping >= 0, f"{key}.damping", self.damping, "must be >= 0")
        require(
            self.line_search in (None, "armijo"),
            f"{key}.line_search",
            self.line_search,
            "must be null or armijo",
        )
        require(0 < self.armijo_c < 1, f"{key}.armijo_c", self.armijo_c, "must be in (0, 1)")
        require(0 < self.backtrack < 1, f"{key}.backtrack", self.backtrack, "must be in (0, 1)")
        require(self.max_backtracks >= 1, f"{key}.max_backtracks", self.max_backtracks, "must be >= 1")


PRECONDITIONERS = ("identity", "jacobi", "inverse_hessian", "diagonal")


@dataclass
class PreconditionedConf(OptimizerConf):
    """src.optim.Preconditioned: θ ← θ − η C ∇L(θ) with C chosen by `preconditioner`."""

    _target_: str = "src.optim.Preconditioned"
    preconditioner: str = "jacobi"  # identity | jacobi | inverse_hessian | diagonal
    diagonal: list[float] | None = None  # C's diagonal, for preconditioner=diagonal
    damping: float = 0.0

    def validate(self, key: str) -> None:
        super().validate(key)
        require(
            self.preconditioner in PRECONDITIONERS,
            f"{key}.preconditioner",
            self.preconditioner,
            f"must be one of {', '.join(PRECONDITIONERS)}",
        )
        require(self.damping >= 0, f"{key}.damping", self.damping, "must be >= 0")
        given = self.preconditioner == "diagonal"
        require(
            (self.diagonal is not None) == given,
            f"{key}.diagonal",
            self.diagonal,
            "must be a list of positive numbers exactly when preconditioner=diagonal",
        )
        require(
            all(c > 0 for c in self.diagonal or []),
            f"{key}.diagonal",
            self.diagonal,
            "every entry must be > 0",
        )


# -------------------------------------------------------------------------------------- schedule
class Interval(Enum):
    step = "step"  # t counts optimizer steps (the lecture's η_t)
    epoch = "epoch"  # t counts epochs (Lightning's default for StepLR)


@dataclass
class ScheduleConf:
    """A torch.optim.lr_scheduler constructor; `interval` says what t counts."""

    _target_: str = MISSING
    _partial_: bool = True
    interval: Interval = Interval.epoch

    def validate(self, key: str) -> None:
        pass


@dataclass
class ConstantConf(ScheduleConf):
    """η_t = η₀: nothing to set (so nothing to log as a param)."""

    _target_: str = "src.schedules.constant"


@dataclass
class StepConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 100
    gamma: float = 0.5

    def validate(self, key: str) -> None:
        require(self.step_size >= 1, f"{key}.step_size", self.step_size, "must be >= 1")
        require(0 < self.gamma <= 1, f"{key}.gamma", self.gamma, "must be in (0, 1]")


@dataclass
class ExponentialConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.ExponentialLR"
    gamma: float = 0.99

    def validate(self, key: str) -> None:
        require(0 < self.gamma <= 1, f"{key}.gamma", self.gamma, "must be in (0, 1]")


@dataclass
class CosineConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = MISSING  # t at which η reaches eta_min; the YAML ties it to trainer.max_epochs
    eta_min: float = 0.0

    def validate(self, key: str) -> None:
        require(self.T_max >= 1, f"{key}.T_max", self.T_max, "must be >= 1")
        require(self.eta_min >= 0, f"{key}.eta_min", self.eta_min, "must be >= 0")


@dataclass
class WarmupCosineConf(CosineConf):
    _target_: str = "src.schedules.warmup_cosine"
    warmup: int = 10  # linear warm-up from start_factor·η₀ to η₀ over this many t
    start_factor: float = 0.1

    def validate(self, key: str) -> None:
        super().validate(key)
        require(
            1 <= self.warmup < self.T_max,
            f"{key}.warmup",
            self.warmup,
            f"must be in [1, T_max={self.T_max})",
        )
        require(0 < self.start_factor <= 1, f"{key}.start_factor", self.start_factor, "must be in (0, 1]")


@dataclass
class RobbinsMonroConf(ScheduleConf):
    _target_: str = "src.schedules.RobbinsMonroLR"
    interval: Interval = Interval.step
    tau: float = 100.0
    # Any κ > 0 is a decaying schedule; whether it meets the Robbins–Monro conditions (exactly for
    # κ ∈ (0.5, 1]) is the check's verdict, logged at the start of a run, not a config error: a
    # student should be able to run κ = 0.4 and watch it fail.
    kappa: float = 1.0

    def validate(self, key: str) -> None:
        require(self.tau > 0, f"{key}.tau", self.tau, "must be > 0")
        require(self.kappa > 0, f"{key}.kappa", self.kappa, "must be > 0")


# ------------------------------------------------------------------------------------------ data
@dataclass
class DataConf:
    """Where the data comes from, and how it is split into train / validation / test."""

    _target_: str = MISSING
    train_prop: float = 0.70
    val_prop: float = 0.15  # the rest is the test split

    def validate(self, key: str) -> None:
        # train_prop=1, val_prop=0 is full-sample estimation: no validation or test split at all.
        require(0 < self.train_prop <= 1, f"{key}.train_prop", self.train_prop, "must be in (0, 1]")
        require(0 <= self.val_prop < 1, f"{key}.val_prop", self.val_prop, "must be in [0, 1)")
        require(
            self.train_prop + self.val_prop <= 1 + 1e-12,
            f"{key}.train_prop",
            self.train_prop,
            f"train_prop + val_prop = {self.train_prop + self.val_prop:g} must be <= 1 "
            "(the rest is the test split)",
        )


@dataclass
class LinearDataConf(DataConf):
    """The lecture's y = x·θ + σε with x, θ, ε ~ N(0, I)."""

    _target_: str = "src.data.simulate_linear"
    n: int = 1000
    dim: int = 2
    noise_std: float = 0.001

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.n >= 3, f"{key}.n", self.n, "must be >= 3")
        require(self.dim >= 1, f"{key}.dim", self.dim, "must be >= 1")
        require(self.noise_std >= 0, f"{key}.noise_std", self.noise_std, "must be >= 0")


@dataclass
class IllConditionedConf(LinearDataConf):
    """y = x·θ + σε on a training design whose X'X has condition number `condition_number` exactly."""

    _target_: str = "src.data.simulate_ill_conditioned"
    dim: int = 10
    condition_number: float = 100.0
    rotate: bool = False  # false: badly scaled columns; true: a random rotation of them (collinearity)

    def validate(self, key: str) -> None:
        super().validate(key)
        require(
            self.condition_number >= 1,
            f"{key}.condition_number",
            self.condition_number,
            "must be >= 1 (the ratio of X'X's largest to smallest eigenvalue)",
        )
        require(
            self.dim >= 2 or self.condition_number == 1,
            f"{key}.condition_number",
            self.condition_number,
            "must be 1 when dim = 1",
        )
        n_train = round(self.n * self.train_prop)
        require(
            n_train >= self.dim,
            f"{key}.n",
            self.n,
            f"must give at least dim={self.dim} training rows (it gives {n_train})",
        )


@dataclass
class PolynomialConf(DataConf):
    """y = Σ_{k≤true_degree} θ_k x^k + σε, x ~ U(−1, 1), fitted on the features 1, x, …, x^degree."""

    _target_: str = "src.data.simulate_polynomial"
    n: int = 40
    degree: int = 12
    true_degree: int = 3
    noise_std: float = 0.3

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.n >= 3, f"{key}.n", self.n, "must be >= 3")
        require(self.degree >= 1, f"{key}.degree", self.degree, "must be >= 1")
        require(
            0 <= self.true_degree <= self.degree,
            f"{key}.true_degree",
            self.true_degree,
            f"must be in [0, degree={self.degree}]",
        )
        require(self.noise_std >= 0, f"{key}.noise_std", self.noise_std, "must be >= 0")


@dataclass
class LogisticDataConf(DataConf):
    """Simulated binary choice: y ~ Bernoulli(σ(x·θ)) with x, θ ~ N(0, I)."""

    _target_: str = "src.data.simulate_logistic"
    n: int = 1000
    dim: int = 2

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.n >= 3, f"{key}.n", self.n, "must be >= 3")
        require(self.dim >= 1, f"{key}.dim", self.dim, "must be >= 1")


@dataclass
class NonlinearDataConf(LinearDataConf):
    """y = sin(x·θ) + σε with x, θ, ε ~ N(0, I): a single-index curve a linear model cannot fit."""

    _target_: str = "src.data.simulate_nonlinear"
    noise_std: float = 0.1


@dataclass
class TableDataConf(DataConf):
    """A table of observations: one numeric target column and numeric feature columns."""

    target: str | None = None
    features: list[str] | None = None  # null: every numeric column but the target
    intercept: bool = True  # prepend a column of ones named `const` (statsmodels' add_constant)
    standardize: bool = True  # centre and scale each feature by its training-split mean and std
    drop_missing: bool = False  # drop rows with NaN / ±inf in the used columns instead of refusing


@dataclass
class CsvDataConf(TableDataConf):
    """A CSV or Parquet file (by extension); a relative path is relative to where you launch from."""

    _target_: str = "src.data.load_file"
    path: str | None = None  # required; null so that its absence gets a clear line from validate

    def validate(self, key: str) -> None:
        super().validate(key)
        require(self.path is not None, f"{key}.path", self.path, "give the file, data.path=<file.csv>")
        require(self.target is not None, f"{key}.target", self.target, "name the column to predict")


@dataclass
class StatsmodelsDataConf(TableDataConf):
    """A data set shipped inside statsmodels (`statsmodels.datasets.<name>`): nothing is downloaded."""

    _target_: str = "src.data.load_statsmodels"
    name: str = MISSING  # null target: the data set's own dependent variable


# ----------------------------------------------------------------------------------------- model
@dataclass
class ModelConf:
    """A hypothesis class; it owns its loss. Input size comes from the data."""

    _target_: str = MISSING
    _partial_: bool = True

    def validate(self, key: str) -> None:
        pass


@dataclass
class LinearModelConf(ModelConf):
    _target_: str = "src.models.LinearRegression"
    bias: bool = False


@dataclass
class LogisticModelConf(LinearModelConf):
    _target_: str = "src.models.LogisticRegression"


class Activation(Enum):
    tanh = "tanh"
    relu = "relu"
    gelu = "gelu"
    sigmoid = "sigmoid"
    silu = "silu"


@dataclass
class MLPModelConf(ModelConf):
    _target_: str = "src.models.MLP"
    _convert_: str = "all"
    hidden: list[int] = field(default_factory=lambda: [32, 32])
    activation: Activation = Activation.tanh

    def validate(self, key: str) -> None:
        for i, width in enumerate(self.hidden):
            require(width >= 1, f"{key}.hidden[{i}]", width, "must be >= 1")


# ------------------------------------------------------------------------------------- inference
class Cov(Enum):
    """The covariance behind the standard errors, as statsmodels names them (src/inference.py)."""

    classical = "classical"  # OLS: s²(X'X)⁻¹, s² = e'e / (n − k); logit: inverse observed information
    HC0 = "HC0"  # White's sandwich
    HC1 = "HC1"  # HC0 × n / (n − k)
    HC2 = "HC2"  # residuals scaled by 1 / (1 − h_ii)
    HC3 = "HC3"  # residuals scaled by 1 / (1 − h_ii)²
    cluster = "cluster"  # sums of scores within the groups of `inference.cluster`


@dataclass
class InferenceConf:
    """Standard errors for the table of estimates printed after a linear or logistic fit."""

    cov: Cov | None = None  # null: classical where the model has standard errors, none elsewhere
    cluster: str | None = None  # the data's column holding the groups, for cov=cluster

    def validate(self, key: str) -> None:
        clustered = self.cov is Cov.cluster
        require(
            clustered or self.cluster is None,
            f"{key}.cluster",
            self.cluster,
            "is only used with inference.cov=cluster",
        )
        require(
            not clustered or bool(self.cluster),
            f"{key}.cluster",
            self.cluster,
            "inference.cov=cluster needs the column that holds the groups, inference.cluster=<column>",
        )


# ----------------------------------------------------------------------------------------- top
@dataclass
class RegularizationConf:
    """The lecture's explicit penalty: the training objective is L(θ) + (α/2)‖θ‖², α = `l2`.

    Unlike decoupled weight decay (AdamW's `weight_decay`), the penalty is part of the loss, so every
    optimizer, Newton's Hessian and the logged `grad_norm` see it. Validation and test losses are the
    data loss alone.
    """

    l2: float = 0.0

    def validate(self, key: str) -> None:
        require(self.l2 >= 0, f"{key}.l2", self.l2, "must be >= 0")


@dataclass
class TrackingConf:
    """Where a run is recorded; the target is a loop callback and a context manager.

    `tracking=none` keeps the keys, so a recipe that names its experiment still runs untracked."""

    _target_: str = "src.tracking.NullTracker"
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    experiment: str = "descentlab"
    # What a --multirun's comparison shows: the per-epoch metric compare.png overlays, and the
    # run-level metric its table sorts by (a lesson names its own).
    plot_metric: str = "val_loss"
    sort_by: str = "best_val_loss"


@dataclass
class MlflowConf(TrackingConf):
    _target_: str = "src.tracking.MlflowTracker"


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


EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
GROUPS = ("data", "model", "optimizer", "schedule", "trainer", "regularization", "inference")


SEEDS = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def numbers(node: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """Every float in a config container, with its dotted key (list items as key[i])."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numbers(v, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node


def validate(cfg: DictConfig) -> None:
    """Check every value rule before anything is built; raises ConfigError naming the key."""
    known = {f.name for f in dataclasses.fields(Config)}
    keys = ", ".join(sorted(known - {"defaults"}))
    for key in cfg:
        require(key in known, str(key), cfg[key], f"not a config key; the keys are {keys}")
    for key, value in numbers(OmegaConf.to_container(cfg, resolve=True)):
        require(math.isfinite(value), key, value, "must be a finite number (null where there is none)")
    require(
        SEEDS[0] <= cfg.seed <= SEEDS[1],
        "seed",
        cfg.seed,
        f"must be in [{SEEDS[0]}, {SEEDS[1]}] (torch's range)",
    )
    for group in GROUPS:
        node = cfg[group]
        if OmegaConf.get_type(node) is dict:
            continue  # a group without a schema (a user's own YAML) is checked by its target
        schema: Any = OmegaConf.to_object(node)
        schema.validate(group)
    cluster = cfg.inference.cluster
    table = OmegaConf.get_type(cfg.data)
    require(
        cluster is None or (isinstance(table, type) and issubclass(table, TableDataConf)),
        "inference.cluster",
        cluster,
        "needs a table of data (data=csv, or a statsmodels data set such as data=fair); "
        "simulated data have no columns",
    )


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    schemas: dict[str, dict[str, type]] = {
        "optimizer": {
            "sgd": SGDConf,
            "adam": AdamConf,
            "adamw": AdamWConf,
            "rmsprop": RMSpropConf,
            "adagrad": AdagradConf,
            "lbfgs": LBFGSConf,
            "newton": NewtonConf,
            "preconditioned": PreconditionedConf,
        },
        "schedule": {
            "constant": ConstantConf,
            "step": StepConf,
            "exponential": ExponentialConf,
            "cosine": CosineConf,
            "warmup_cosine": WarmupCosineConf,
            "robbins_monro": RobbinsMonroConf,
        },
        "data": {
            "linear": LinearDataConf,
            "ill_conditioned": IllConditionedConf,
            "polynomial": PolynomialConf,
            "logistic": LogisticDataConf,
            "nonlinear": NonlinearDataConf,
            "csv": CsvDataConf,
            "statsmodels": StatsmodelsDataConf,
        },
        "model": {"linear": LinearModelConf, "logistic": LogisticModelConf, "mlp": MLPModelConf},
        "tracking": {"mlflow": MlflowConf, "none": TrackingConf},
    }
    for group, nodes in schemas.items():
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
