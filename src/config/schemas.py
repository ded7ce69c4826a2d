"""What each choice of a config group accepts: optimizer, schedule, data, model and tracking.

Each choice's schema is a dataclass declared with `@schema(group, name)`, which src/config/__init__.py's
`register` stores in ConfigStore group `schema/<group>`; the YAML for a choice pulls it in with
`defaults: [/schema/<group>/<name>@_here_, _self_]`, so Hydra refuses a misspelt key or a wrong type
at compose time, naming the key. Value rules sit next to each field (`checked(default, rule, ...)`),
rules between fields in the schema's `relations` (src/config/rules.py); config.validate checks them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar, dataclass_transform

from omegaconf import MISSING

from src.config.rules import Checked, Rule, bound, checked, one_of

T = TypeVar("T")


SCHEMAS: dict[str, dict[str, type]] = {}  # config group → choice → its schema (register stores them)


PRECONDITIONERS = ("identity", "jacobi", "inverse_hessian", "diagonal")  # optimizer=preconditioned's C


@dataclass_transform(field_specifiers=(field,))
def schema(group: str, name: str) -> Callable[[type[T]], type[T]]:
    """A dataclass that is the schema of choice `name` in config group `group`."""

    def declare(cls: type[T]) -> type[T]:
        SCHEMAS.setdefault(group, {})[name] = dataclass(cls)
        return cls

    return declare


# ------------------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConf(Checked):
    """An optimizer's constructor arguments; `_partial_` because parameters come later."""

    _target_: str = MISSING
    _partial_: bool = True
    _convert_: str = "all"
    lr: float = checked(MISSING, bound("> 0"))


@dataclass
class WeightDecayConf(OptimizerConf):
    """torch.optim's first-order methods, which all take a weight_decay (L-BFGS does not)."""

    weight_decay: float = checked(0.0, bound(">= 0"))


@schema("optimizer", "sgd")
class SGDConf(WeightDecayConf):
    _target_: str = "torch.optim.SGD"
    momentum: float = checked(0.0, bound("in [0, 1)"))
    dampening: float = 0.0
    nesterov: bool = False

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield self.dampening == 0 or not self.nesterov, "dampening", "must be 0 with nesterov"
        yield self.momentum > 0 or not self.nesterov, "momentum", "must be > 0 with nesterov"


@schema("optimizer", "adam")
class AdamConf(WeightDecayConf):
    _target_: str = "torch.optim.Adam"
    betas: tuple[float, float] = checked(
        (0.9, 0.999),
        Rule(lambda b: len(b) == 2, "must be two numbers [β₁, β₂]"),
        bound("in [0, 1)", each=True),
    )
    eps: float = checked(1e-8, bound("> 0"))
    amsgrad: bool = False


@schema("optimizer", "adamw")
class AdamWConf(AdamConf):
    """Adam with decoupled weight decay: θ ← θ − ηλθ apart from the gradient step (not an L2 loss)."""

    _target_: str = "torch.optim.AdamW"
    weight_decay: float = checked(0.01, bound(">= 0"))


@schema("optimizer", "rmsprop")
class RMSpropConf(WeightDecayConf):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = checked(0.99, bound("in [0, 1)"))
    eps: float = checked(1e-8, bound("> 0"))
    momentum: float = checked(0.0, bound("in [0, 1)"))
    centered: bool = False


@schema("optimizer", "adagrad")
class AdagradConf(WeightDecayConf):
    _target_: str = "torch.optim.Adagrad"
    lr_decay: float = checked(0.0, bound(">= 0"))
    initial_accumulator_value: float = checked(0.0, bound(">= 0"))
    eps: float = checked(1e-10, bound("> 0"))


@schema("optimizer", "lbfgs")
class LBFGSConf(OptimizerConf):
    """torch.optim.LBFGS; each optimizer step runs up to `max_iter` quasi-Newton iterations."""

    _target_: str = "torch.optim.LBFGS"
    max_iter: int = checked(20, bound(">= 1"))
    max_eval: int | None = checked(None, bound(">= 1"))
    tolerance_grad: float = checked(1e-7, bound(">= 0"))
    tolerance_change: float = checked(1e-9, bound(">= 0"))
    history_size: int = checked(100, bound(">= 1"))
    # null: fixed steps of size lr; "strong_wolfe": a line search
    line_search_fn: str | None = checked(None, one_of(None, "strong_wolfe"))


@schema("optimizer", "newton")
class NewtonConf(OptimizerConf):
    """src.optim.Newton: θ ← θ − η [∇²L(θ) + λI]⁻¹ ∇L(θ), optionally with backtracking (Armijo)."""

    _target_: str = "src.optim.Newton"
    damping: float = checked(0.0, bound(">= 0"))
    # null: the step η; "armijo": backtrack from η until L decreases
    line_search: str | None = checked(None, one_of(None, "armijo"))
    armijo_c: float = checked(1e-4, bound("in (0, 1)"))
    backtrack: float = checked(0.5, bound("in (0, 1)"))
    max_backtracks: int = checked(30, bound(">= 1"))


@schema("optimizer", "preconditioned")
class PreconditionedConf(OptimizerConf):
    """src.optim.Preconditioned: θ ← θ − η C ∇L(θ) with C chosen by `preconditioner`."""

    _target_: str = "src.optim.Preconditioned"
    preconditioner: str = checked("jacobi", one_of(*PRECONDITIONERS))
    # C's diagonal, for preconditioner=diagonal
    diagonal: list[float] | None = checked(
        None, Rule(lambda d: all(c > 0 for c in d or []), "every entry must be > 0")
    )
    damping: float = checked(0.0, bound(">= 0"))

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield (
            (self.diagonal is not None) == (self.preconditioner == "diagonal"),
            "diagonal",
            "must be a list of positive numbers exactly when preconditioner=diagonal",
        )


# -------------------------------------------------------------------------------------- schedule
class Interval(Enum):
    step = "step"  # t counts optimizer steps (the lecture's η_t)
    epoch = "epoch"  # t counts epochs (Lightning's default for StepLR)


@dataclass
class ScheduleConf(Checked):
    """A torch.optim.lr_scheduler constructor; `interval` says what t counts."""

    _target_: str = MISSING
    _partial_: bool = True
    interval: Interval = Interval.epoch


@schema("schedule", "constant")
class ConstantConf(ScheduleConf):
    """η_t = η₀: nothing to set (so nothing to log as a param)."""

    _target_: str = "src.schedules.constant"


@schema("schedule", "step")
class StepConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = checked(100, bound(">= 1"))
    gamma: float = checked(0.5, bound("in (0, 1]"))


@schema("schedule", "exponential")
class ExponentialConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.ExponentialLR"
    gamma: float = checked(0.99, bound("in (0, 1]"))


@schema("schedule", "cosine")
class CosineConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    # t at which η reaches eta_min; the YAML ties it to trainer.max_epochs
    T_max: int = checked(MISSING, bound(">= 1"))
    eta_min: float = checked(0.0, bound(">= 0"))


@schema("schedule", "warmup_cosine")
class WarmupCosineConf(CosineConf):
    _target_: str = "src.schedules.warmup_cosine"
    warmup: int = 10  # linear warm-up from start_factor·η₀ to η₀ over this many t
    start_factor: float = checked(0.1, bound("in (0, 1]"))

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield 1 <= self.warmup < self.T_max, "warmup", f"must be in [1, T_max={self.T_max})"


@schema("schedule", "robbins_monro")
class RobbinsMonroConf(ScheduleConf):
    _target_: str = "src.schedules.RobbinsMonroLR"
    interval: Interval = Interval.step
    tau: float = checked(100.0, bound("> 0"))
    # Any κ > 0 is a decaying schedule; whether it meets the Robbins–Monro conditions (exactly for
    # κ ∈ (0.5, 1]) is the check's verdict, logged at the start of a run, not a config error: a
    # student should be able to run κ = 0.4 and watch it fail.
    kappa: float = checked(1.0, bound("> 0"))


# ------------------------------------------------------------------------------------------ data
@dataclass
class DataConf(Checked):
    """Where the data comes from, and how it is split into train / validation / test."""

    _target_: str = MISSING
    # train_prop=1, val_prop=0 is full-sample estimation: no validation or test split at all.
    train_prop: float = checked(0.70, bound("in (0, 1]"))
    val_prop: float = checked(0.15, bound("in [0, 1)"))  # the rest is the test split

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        total = self.train_prop + self.val_prop
        yield (
            total <= 1 + 1e-12,
            "train_prop",
            f"train_prop + val_prop = {total:g} must be <= 1 (the rest is the test split)",
        )


@schema("data", "linear")
class LinearDataConf(DataConf):
    """The lecture's y = x·θ + σε with x, θ, ε ~ N(0, I)."""

    _target_: str = "src.data.simulate_linear"
    n: int = checked(1000, bound(">= 3"))
    dim: int = checked(2, bound(">= 1"))
    noise_std: float = checked(0.001, bound(">= 0"))


@schema("data", "ill_conditioned")
class IllConditionedConf(LinearDataConf):
    """y = x·θ + σε on a training design whose X'X has condition number `condition_number` exactly."""

    _target_: str = "src.data.simulate_ill_conditioned"
    dim: int = checked(10, bound(">= 1"))
    condition_number: float = checked(
        100.0, bound(">= 1", " (the ratio of X'X's largest to smallest eigenvalue)")
    )
    rotate: bool = False  # false: badly scaled columns; true: a random rotation of them (collinearity)

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield from super().relations()
        yield self.dim >= 2 or self.condition_number == 1, "condition_number", "must be 1 when dim = 1"
        n_train = round(self.n * self.train_prop)
        yield (
            n_train >= self.dim,
            "n",
            f"must give at least dim={self.dim} training rows (it gives {n_train})",
        )


@schema("data", "polynomial")
class PolynomialConf(DataConf):
    """y = Σ_{k≤true_degree} θ_k x^k + σε, x ~ U(−1, 1), fitted on the features 1, x, …, x^degree."""

    _target_: str = "src.data.simulate_polynomial"
    n: int = checked(40, bound(">= 3"))
    degree: int = checked(12, bound(">= 1"))
    true_degree: int = 3
    noise_std: float = checked(0.3, bound(">= 0"))

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield from super().relations()
        yield 0 <= self.true_degree <= self.degree, "true_degree", f"must be in [0, degree={self.degree}]"


@schema("data", "logistic")
class LogisticDataConf(DataConf):
    """Simulated binary choice: y ~ Bernoulli(σ(x·θ)) with x, θ ~ N(0, I)."""

    _target_: str = "src.data.simulate_logistic"
    n: int = checked(1000, bound(">= 3"))
    dim: int = checked(2, bound(">= 1"))


@schema("data", "nonlinear")
class NonlinearDataConf(LinearDataConf):
    """y = sin(x·θ) + σε with x, θ, ε ~ N(0, I): a single-index curve a linear model cannot fit."""

    _target_: str = "src.data.simulate_nonlinear"
    noise_std: float = checked(0.1, bound(">= 0"))


@dataclass
class TableDataConf(DataConf):
    """A table of observations: one numeric target column and numeric feature columns."""

    target: str | None = None
    features: list[str] | None = None  # null: every numeric column but the target
    # 'y ~ np.log(x) + C(g) + x1:x2' (formulaic, patsy's syntax): the design instead of target/features
    formula: str | None = None
    # null: true, or the formula's own (`- 1` drops it); true: a column of ones, `const` (`Intercept`)
    intercept: bool | None = None
    standardize: bool = True  # by training-split mean and std (no intercept: scale only, not centre)
    drop_missing: bool = False  # drop rows with NaN / ±inf in the used columns instead of refusing
    weights: str | None = None  # a column of weights >= 0: WLS (model=linear), freq_weights (logistic)
    absorb: str | None = None  # a column whose fixed effects OLS absorbs (within transformation)

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield from super().relations()
        both = "data.features and data.formula both choose the regressors: give one (the formula names them)"
        yield self.formula is None or self.features is None, "features", both


@schema("data", "csv")
class CsvDataConf(TableDataConf):
    """A CSV or Parquet file (by extension); a relative path is relative to where you launch from."""

    _target_: str = "src.data.load_file"
    path: str | None = None  # required; null so that its absence gets a clear line from validate

    def relations(self) -> Iterator[tuple[bool, str, str]]:
        yield from super().relations()
        yield self.path is not None, "path", "give the file, data.path=<file.csv>"  # first: the file
        to_predict = "name the column to predict, or give data.formula='y ~ x1 + x2'"
        yield self.target is not None or self.formula is not None, "target", to_predict


@schema("data", "statsmodels")
class StatsmodelsDataConf(TableDataConf):
    """A data set shipped inside statsmodels (`statsmodels.datasets.<name>`): nothing is downloaded."""

    _target_: str = "src.data.load_statsmodels"
    name: str = MISSING  # null target: the data set's own dependent variable


# ----------------------------------------------------------------------------------------- model
@dataclass
class ModelConf(Checked):
    """A hypothesis class; it owns its loss. Input size comes from the data."""

    _target_: str = MISSING
    _partial_: bool = True


@schema("model", "linear")
class LinearModelConf(ModelConf):
    _target_: str = "src.models.LinearRegression"
    bias: bool = False


@schema("model", "logistic")
class LogisticModelConf(LinearModelConf):
    _target_: str = "src.models.LogisticRegression"


class Activation(Enum):  # the MLP's a(·): each value names the torch.nn module that computes it
    tanh = "Tanh"
    relu = "ReLU"
    gelu = "GELU"
    sigmoid = "Sigmoid"
    silu = "SiLU"


@schema("model", "mlp")
class MLPModelConf(ModelConf):
    _target_: str = "src.models.MLP"
    _convert_: str = "all"
    hidden: list[int] = checked([32, 32], bound(">= 1", each=True))
    activation: Activation = Activation.tanh


# -------------------------------------------------------------------------------------- tracking
@schema("tracking", "none")
class TrackingConf:
    """Where a run is recorded (a loop callback and a context manager); `tracking=none` keeps the keys,
    so a recipe that names its experiment still runs untracked."""

    _target_: str = "src.tracking.NullTracker"
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    experiment: str = "descentlab"
    # a --multirun's comparison: the epoch metric compare.png overlays, the run metric its table sorts by
    plot_metric: str = "val_loss"
    sort_by: str = "best_val_loss"


@schema("tracking", "mlflow")
class MlflowConf(TrackingConf):
    _target_: str = "src.tracking.MlflowTracker"
    # MLflow writes in a process of its own (src/tracking/sidecar.py); false: in the training process
    sidecar: bool = True
