"""The training loop: steps, epochs, validation, early stopping, best-val restore, one test.

It knows nothing of MLflow or Optuna: after each epoch it hands an `EpochMetrics` to its callbacks,
and a callback that wants training to end (a pruner, say) raises `StopTraining(reason)`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from src.config import Interval, Sampling, TrainerConf
from src.data import Data, Split


class StopTraining(Exception):
    """Raised by a callback to end training after this epoch; the message is the stop reason."""


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based; the MLflow step
    train_loss: float  # mean of the epoch's batch objectives (data loss + L2 penalty), by batch size
    val_loss: float  # data loss on the whole validation split after the epoch (train if there is none)
    lr: float  # the learning rate the epoch started with
    grad_norm: float  # ‖∇L_train(θ)‖ on the whole training split after the epoch
    grad_variance: float  # E‖g_B − ∇L_train(θ)‖² of a batch gradient after the epoch; 0 for full batch
    param_error: float | None  # ‖θ − θ̂‖ where the true θ is known
    epoch_time: float  # seconds


class Callback(Protocol):
    def on_epoch_end(self, metrics: EpochMetrics) -> None: ...


@dataclass
class FitResult:
    stop_reason: str  # converged, early_stopped, diverged, non_finite, max_epochs, max_time, ...
    epochs: int
    best_epoch: int
    best_val_loss: float
    test_loss: float  # once, with the best-val parameters restored
    param_error: float | None  # of the restored parameters
    wall_time: float
    history: list[EpochMetrics] = field(default_factory=list)


class Model(Protocol):
    """What the loop needs of a model: an nn.Module that owns its loss (optionally .coefficients())."""

    def loss(self, X: Tensor, y: Tensor) -> Tensor: ...
    def parameters(self) -> Iterator[nn.Parameter]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...


def batches(
    n: int, batch_size: int | None, sampling: Sampling, generator: torch.Generator
) -> Iterator[Tensor]:
    """Row indices for one epoch's batches: ⌈n / |B|⌉ of them, the last one possibly short."""
    size = n if batch_size is None else min(batch_size, n)
    if sampling is Sampling.shuffle:
        rows = torch.randperm(n, generator=generator)
    elif sampling is Sampling.replacement:
        rows = torch.randint(n, (math.ceil(n / size) * size,), generator=generator)
    else:
        rows = torch.arange(n)
    return iter(rows.split(size))


def evaluate(model: Model, split: Split) -> float:
    """The data loss (no penalty): what validation and test report."""
    with torch.no_grad():
        return float(model.loss(split.X, split.y))


def objective(model: Model, X: Tensor, y: Tensor, l2: float) -> Tensor:
    """The training objective: the data loss plus the lecture's ridge penalty (α/2)‖θ‖², α = l2."""
    loss = model.loss(X, y)
    if l2:
        loss = loss + l2 / 2 * sum(p.pow(2).sum() for p in model.parameters())
    return loss


def gradient_norm(model: Model, split: Split, l2: float = 0.0) -> float:
    """‖∇L(θ)‖ of the training objective over the whole split, leaving the optimizer's .grad as it was."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(objective(model, split.X, split.y, l2), params)
    return float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads])))


class _Loss(nn.Module):
    """A model's loss as a module's forward, so torch.func.functional_call evaluates it at any θ."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, X: Tensor, y: Tensor) -> Tensor:
        return self.model.loss(X, y)


def gradient_variance(model: Model, split: Split, batch_size: int | None, sampling: Sampling) -> float:
    """E‖g_B − ∇L(θ)‖²: how far a batch's mean gradient g_B strays from the full one (the penalty cancels).

    With the per-example gradients ∇ℓ_n (vmap of grad) and the lecture's per-example variance
    S² = (1/N) Σ‖∇ℓ_n − ∇L‖², it is S²/|B| for rows drawn with replacement and
    S²/|B| · (N − |B|)/(N − 1) without (shuffle, sequential): 0 for the full batch. It takes the
    model's loss to be the mean of per-row losses, as least squares is.
    """
    n = len(split)
    size = n if batch_size is None else min(batch_size, n)
    if size == n and sampling is not Sampling.replacement:
        return 0.0
    loss = _Loss(model)
    params = {name: p.detach() for name, p in loss.named_parameters()}

    def row_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return torch.func.functional_call(loss, params, (x[None], y[None]))

    per_row = torch.func.vmap(torch.func.grad(row_loss), in_dims=(None, 0, 0))(params, split.X, split.y)
    G = torch.cat([g.reshape(n, -1) for g in per_row.values()], dim=1)  # (N, parameters)
    S2 = float((G - G.mean(0)).pow(2).sum(1).mean())
    without_replacement = 1.0 if sampling is Sampling.replacement else (n - size) / max(n - 1, 1)
    return S2 / size * without_replacement


def param_error(model: Model, theta: Tensor | None) -> float | None:
    coefficients: Callable[[], Tensor] | None = getattr(model, "coefficients", None)
    if theta is None or coefficients is None:
        return None
    return float(torch.linalg.vector_norm(coefficients() - theta))


def fit(
    model: Model,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    interval: Interval,
    data: Data,
    trainer: TrainerConf,
    generator: torch.Generator,
    l2: float = 0.0,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    train, val = data.train, data.val if len(data.val) else data.train
    X, y = train.X, train.y
    best_val, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    stale_epochs, stop_reason = 0, "max_epochs"
    history: list[EpochMetrics] = []
    start = time.perf_counter()
    # disable=None: a bar only on a terminal, so logs and CI output stay clean.
    bar = tqdm(range(1, trainer.max_epochs + 1), disable=None if trainer.progress else True, unit="epoch")
    for epoch in bar:
        epoch_start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum, rows = torch.zeros((), dtype=X.dtype, device=X.device), 0
        for idx in batches(len(train), trainer.batch_size, trainer.sampling, generator):
            idx = idx.to(X.device)
            xb, yb = X[idx], y[idx]

            # closure(backward=False) hands back the batch loss with its graph, for methods that
            # differentiate it twice (Newton, preconditioned): they keep torch's step(closure), and
            # nothing here has to rebuild the loss as a function of θ for torch.func.hessian.
            def closure(backward: bool = True) -> Tensor:
                optimizer.zero_grad()
                loss = objective(model, xb, yb, l2)  # noqa: B023 (called within this step)
                if backward:
                    loss.backward()
                return loss

            loss = cast(Tensor, optimizer.step(closure))  # type: ignore[arg-type]  # the closure's loss
            loss_sum += loss.detach() * len(idx)  # stays on the device: no sync per step
            rows += len(idx)
            if interval is Interval.step:
                scheduler.step()
        if interval is Interval.epoch:
            scheduler.step()

        model.eval()
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=float(loss_sum) / rows,
            val_loss=evaluate(model, val),
            lr=lr,
            grad_norm=gradient_norm(model, train, l2),
            grad_variance=gradient_variance(model, train, trainer.batch_size, trainer.sampling),
            param_error=param_error(model, data.theta),
            epoch_time=time.perf_counter() - epoch_start,
        )
        history.append(metrics)
        bar.set_postfix(train=f"{metrics.train_loss:.3g}", val=f"{metrics.val_loss:.3g}", lr=f"{lr:.3g}")

        # Early stopping, in the order Lightning's EarlyStopping checks.
        monitored = metrics.val_loss
        if monitored < best_val - trainer.min_delta:
            best_val, best_epoch, stale_epochs = monitored, epoch, 0
            best_state = copy.deepcopy(model.state_dict())  # a copy: later steps must not touch it
        else:
            stale_epochs += 1
        try:
            for callback in callbacks:
                callback.on_epoch_end(metrics)
        except StopTraining as stop:
            stop_reason = str(stop)
            break
        if not (math.isfinite(monitored) and math.isfinite(metrics.train_loss)):
            stop_reason = "non_finite"
            break
        if trainer.stopping_threshold is not None and monitored < trainer.stopping_threshold:
            stop_reason = "converged"
            break
        if trainer.grad_tol is not None and metrics.grad_norm < trainer.grad_tol:
            stop_reason = "converged"
            break
        if trainer.divergence_threshold is not None and monitored > trainer.divergence_threshold:
            stop_reason = "diverged"
            break
        if stale_epochs >= trainer.patience:
            stop_reason = "early_stopped"
            break
        if trainer.max_time is not None and time.perf_counter() - start >= trainer.max_time:
            stop_reason = "max_time"
            break
    bar.close()

    model.load_state_dict(best_state)
    return FitResult(
        stop_reason=stop_reason,
        epochs=len(history),
        best_epoch=best_epoch,
        best_val_loss=best_val,
        test_loss=evaluate(model, data.test),
        param_error=param_error(model, data.theta),
        wall_time=time.perf_counter() - start,
        history=history,
    )
