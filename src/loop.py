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
from functools import partial
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
    train_loss: float  # mean of the epoch's batch losses, weighted by batch size
    val_loss: float  # on the whole validation split after the epoch (train loss if there is none)
    lr: float  # the learning rate the epoch started with
    grad_norm: float  # ‖∇L_train(θ)‖ on the whole training split after the epoch
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


def epoch_rows(n: int, size: int, sampling: Sampling, generator: torch.Generator) -> Tensor:
    """The rows one epoch visits, in order; its batches are consecutive chunks of `size`.

    ⌈n / size⌉ batches: shuffle and sequential visit each row once (the last batch may be short);
    replacement draws every batch independently with replacement.
    """
    if sampling is Sampling.shuffle:
        return torch.randperm(n, generator=generator)
    if sampling is Sampling.replacement:
        return torch.randint(n, (math.ceil(n / size) * size,), generator=generator)
    return torch.arange(n)


def epoch_batches(
    split: Split, size: int, sampling: Sampling, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch's (X_B, y_B) batches: views of a single gathered copy, or of the split itself."""
    X, y = split.X, split.y
    if sampling is Sampling.sequential or (sampling is Sampling.shuffle and size >= len(split)):
        return zip(X.split(size), y.split(size), strict=True)  # a full batch's order changes nothing
    rows = epoch_rows(len(split), size, sampling, generator).to(X.device)
    return zip(X[rows].split(size), y[rows].split(size), strict=True)


def loss_and_grad(model: Model, X: Tensor, y: Tensor) -> Tensor:
    """The loss on (X, y), leaving ∇L in each parameter's .grad; no graph is kept.

    A model may give both in closed form (`model.loss_and_grad`), which skips autograd's overhead;
    otherwise autograd computes them.
    """
    closed_form: Callable[[Tensor, Tensor], Tensor] | None = getattr(model, "loss_and_grad", None)
    if closed_form is not None:
        return closed_form(X, y)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model.loss(X, y)
    for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
        p.grad = g
    return loss.detach()


def evaluate(model: Model, split: Split) -> float:
    with torch.no_grad():
        return float(model.loss(split.X, split.y))


def gradient_norm(model: Model, split: Split) -> tuple[Tensor, float]:
    """L(θ) and ‖∇L(θ)‖ over the whole split, leaving ∇L(θ) in .grad."""
    loss = loss_and_grad(model, split.X, split.y)
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    return loss, float(torch.linalg.vector_norm(torch.cat(grads)))


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
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    train, val = data.train, data.val if len(data.val) else data.train
    X = train.X
    size = len(train) if trainer.batch_size is None else min(trainer.batch_size, len(train))
    # L-BFGS and line searches re-evaluate the loss within a step, so they need it as a closure.
    needs_closure = isinstance(optimizer, torch.optim.LBFGS) or getattr(optimizer, "needs_closure", False)
    # Full-batch steps reuse the gradient the epoch's end computed for grad_norm at the same θ.
    reuse_gradient = size >= len(train) and trainer.sampling is not Sampling.replacement and not needs_closure
    current_loss: Tensor | None = None  # L(θ) whose ∇L(θ) sits in .grad, when it can be reused
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
        losses, sizes = [], []  # batch losses stay on the device: no sync per step
        for xb, yb in epoch_batches(train, size, trainer.sampling, generator):
            if needs_closure:
                step = partial(loss_and_grad, model, xb, yb)
                losses.append(cast(Tensor, optimizer.step(step)))  # type: ignore[arg-type]
            else:
                losses.append(current_loss if current_loss is not None else loss_and_grad(model, xb, yb))
                optimizer.step()
            current_loss = None
            sizes.append(yb.shape[0])
            if interval is Interval.step:
                scheduler.step()
        if interval is Interval.epoch:
            scheduler.step()

        model.eval()
        end_loss, grad_norm = gradient_norm(model, train)
        current_loss = end_loss if reuse_gradient else None
        weights = torch.tensor(sizes, dtype=X.dtype, device=X.device)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=float(torch.stack(losses) @ weights) / sum(sizes),  # size-weighted mean
            val_loss=evaluate(model, val),
            lr=lr,
            grad_norm=grad_norm,
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
