"""The training loop: steps, epochs, validation, early stopping, best-val restore, one test.

It knows nothing of MLflow or Optuna: after each epoch it hands an `EpochMetrics` to its callbacks,
and a callback that wants training to end (a pruner, say) raises `StopTraining(reason)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch
from torch import Tensor
from tqdm import tqdm

from src.config import Sampling, TrainerConf
from src.config.schemas import Interval
from src.data import Data, Split
from src.loop.fast_step import fast_step
from src.loop.gradients import (
    closure,
    evaluate,
    gradient_function,
    gradient_norm,
    gradient_variance,
    param_error,
)
from src.loop.training import Model, Training

FAILED_STOPS = ("diverged", "non_finite")  # stop reasons of a run that failed, not converged


class StopTraining(Exception):
    """Raised by a callback to end training after this epoch; the message is the stop reason."""


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based; the MLflow step
    train_loss: float  # mean of the epoch's batch objectives (data loss + L2 penalty), by batch size
    val_loss: float  # data loss on the whole validation split after the epoch (train if there is none)
    lr: float  # the learning rate the epoch started with
    grad_norm: float  # ‖∇L_train(θ)‖ on the whole training split after the epoch
    grad_variance: float | None  # E‖g_B − ∇L_train(θ)‖² after the epoch, if trainer.grad_variance
    param_error: float | None  # ‖θ − θ̂‖ where the true θ is known
    epoch_time: float  # seconds
    opt_gap: float | None = None  # L_train(θ) − L_train(θ*) where the exact minimizer θ* is known
    ref_error: float | None = None  # ‖θ − θ*‖, all parameters
    newton_decrement: float | None = None  # Newton's last step's λ² = ∇L·[∇²L]⁻¹∇L, at the θ it left
    # Scale-free, for MLflow's charts and table (no exponent): digits of L* and of θ* reached
    objective_digits: float | None = None  # −log10((L_train(θ) − L*)/|L*|), 0 to 16
    theta_digits: float | None = None  # −log10(‖θ − θ*‖/‖θ*‖), 0 to 16


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
    wall_time: float  # training seconds: every epoch's steps and evaluation (Σ epoch_time), and the test
    reference_loss: float | None = None  # L_train(θ*), what opt_gap is measured from
    reference_val_loss: float | None = None  # the validation loss at θ* (train without a val split)
    reference_test_loss: float | None = None  # the test loss at θ* (nan without a test split)
    history: list[EpochMetrics] = field(default_factory=list)
    setup_time: float = math.nan  # seconds before the first step: imports, data, MLflow (src.train sets it)


@dataclass
class Progress:
    """Where training stands. With the model, optimizer, scheduler and RNG states it makes a
    snapshot from which training continues bitwise-identically (src/loop/checkpoint.py)."""

    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Tensor] = field(default_factory=dict)
    stale_epochs: int = 0
    start_loss: float = math.nan  # the monitored loss at θ₀, the scale divergence is judged against
    start_grad_norm: float = math.nan  # ‖∇L_train(θ₀)‖, what a first-order method's gradient is judged by
    elapsed: float = 0.0  # seconds since training began, across resumes (max_time counts them all)
    train_time: float = 0.0  # of which in steps and evaluations (Σ epoch_time): the run's wall_time
    history: list[EpochMetrics] = field(default_factory=list)
    # Inside an epoch: the learning rate it started with, its row order (None: stored order),
    # and the batches done so far.
    lr: float = 0.0
    rows: Tensor | None = None
    losses: list[Tensor] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def epoch_order(n: int, size: int, sampling: Sampling, generator: torch.Generator) -> Tensor | None:
    """The rows one epoch visits, in order; None for the stored order. Batches are chunks of `size`.

    ⌈n / size⌉ batches: shuffle and sequential visit each row once (the last batch may be short);
    replacement draws every batch independently with replacement. A full batch needs no shuffle.
    """
    if sampling is Sampling.sequential or (sampling is Sampling.shuffle and size >= n):
        return None
    if sampling is Sampling.shuffle:
        return torch.randperm(n, generator=generator)
    return torch.randint(n, (math.ceil(n / size) * size,), generator=generator)


def batches(split: Split, size: int, rows: Tensor | None) -> list[tuple[Tensor, Tensor]]:
    """(X_B, y_B) views of one gathered copy of the split: one gather per epoch, none per step."""
    X, y = (
        (split.X, split.y)
        if rows is None
        else (split.X[rows.to(split.X.device)], split.y[rows.to(split.X.device)])
    )
    return list(zip(X.split(size), y.split(size), strict=True))


def should_stop(
    metrics: EpochMetrics, p: Progress, trainer: TrainerConf, reference_loss: float | None = None
) -> str | None:
    """The reason to stop after this epoch, if any, checked in the order of Lightning's EarlyStopping.

    Its thresholds are relative, so that the same defaults mean the same on data in any units:
    converged once L − L* < stopping_threshold × |L*| where the exact minimum L* is known (× the
    starting loss if L* = 0; without L*, once the monitored loss is below stopping_threshold × the
    starting loss) and the estimator's own evidence agrees (`settled`); diverged once the monitored
    loss exceeds divergence_threshold × the starting loss. Convergence is checked first: a run that
    lands on θ* is never diverged.
    """
    monitored = metrics.val_loss
    if not (math.isfinite(monitored) and math.isfinite(metrics.train_loss)):
        return "non_finite"
    if trainer.stopping_threshold is not None:
        if metrics.opt_gap is not None and reference_loss is not None:
            # |L*| below the loss's rounding (an exact fit): judged against the starting loss's rounding
            eps = torch.finfo(getattr(torch, trainer.dtype.value)).eps
            gap, scale = metrics.opt_gap, max(abs(reference_loss), eps * p.start_loss) or p.start_loss
        else:
            gap, scale = monitored, p.start_loss
        threshold = trainer.stopping_threshold * scale
        if gap < threshold and settled(metrics, p, trainer, threshold):
            return "converged"
    if trainer.grad_tol is not None and metrics.grad_norm < trainer.grad_tol:
        return "converged"
    if trainer.divergence_threshold is not None and monitored > trainer.divergence_threshold * p.start_loss:
        return "diverged"
    if p.stale_epochs >= trainer.patience:
        return "early_stopped"
    if trainer.max_time is not None and p.elapsed >= trainer.max_time:
        return "max_time"
    return None


def settled(metrics: EpochMetrics, p: Progress, trainer: TrainerConf, threshold: float) -> bool:
    """The estimator's own evidence that θ has converged, beside the loss gap. Newton: the decrement
    of its last step, λ²/2 ≈ L(θ) − L* at the θ that step left, is below the gap's threshold, so a
    step has verified the point before it (one step never certifies itself). A first-order method:
    ‖∇L(θ)‖ ≤ trainer.grad_rtol × ‖∇L(θ₀)‖."""
    if metrics.newton_decrement is not None:
        return abs(metrics.newton_decrement) / 2 <= threshold
    if trainer.grad_rtol is None or not math.isfinite(p.start_grad_norm):
        return True
    return metrics.grad_norm <= trainer.grad_rtol * p.start_grad_norm


class Steps:
    """How the optimizer steps, the same for every epoch of a run."""

    def __init__(self, run: Training) -> None:
        self.run = run
        # L-BFGS and line searches re-evaluate the loss within a step, so they need it as a closure.
        self.needs_closure = isinstance(run.optimizer, torch.optim.LBFGS) or getattr(
            run.optimizer, "needs_closure", False
        )
        # Full-batch steps reuse the gradient the epoch's end computed for grad_norm at the same θ.
        self.reuse_gradient = not run.stochastic and not self.needs_closure
        self.current_loss: Tensor | None = None  # L(θ) whose ∇L(θ) sits in .grad, when reusable
        self.optimizer_step = fast_step(run.optimizer)  # optimizer.step(), bitwise, minus its overhead
        self.loss_and_grad = gradient_function(run.learner, run.l2)  # the hot path, bound once

    def step(self, X: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on the batch (X, y); returns the batch objective at the θ it left."""
        if self.needs_closure:
            run = self.run
            loss = cast(Tensor, run.optimizer.step(closure(run.learner, X, y, run.l2)))  # type: ignore[arg-type]
        else:
            loss = self.current_loss if self.current_loss is not None else self.loss_and_grad(X, y)
            self.optimizer_step()
        self.current_loss = None
        return loss


def train_epoch(run: Training, p: Progress, steps: Steps, halt_if_requested: Callable[[], None]) -> None:
    """θ_{t+1} = θ_t − η_t g_t over the epoch's batches B_t, from where `p` left off."""
    run.learner.train()
    train = run.data.train
    if not p.sizes:  # a fresh epoch, not one resumed from a snapshot taken inside it
        p.rows = epoch_order(len(train), run.batch_size, run.trainer.sampling, run.generator)
        p.lr = run.optimizer.param_groups[0]["lr"]
    for xb, yb in batches(train, run.batch_size, p.rows)[len(p.sizes) :]:
        p.losses.append(steps.step(xb, yb))
        p.sizes.append(yb.shape[0])
        if run.interval is Interval.step:
            run.scheduler.step()
        halt_if_requested()
    if run.interval is Interval.epoch:
        run.scheduler.step()


def epoch_metrics(run: Training, p: Progress, steps: Steps, epoch: int, started: float) -> EpochMetrics:
    """The epoch's metrics at the θ it ended with; leaves ∇L_train(θ) in .grad for the next step."""
    model, train, ref = run.learner, run.data.train, run.reference
    model.eval()
    end_loss, grad_norm = gradient_norm(model, train, run.l2)
    steps.current_loss = end_loss if steps.reuse_gradient else None
    weights = torch.tensor(p.sizes, dtype=train.X.dtype, device=train.X.device)
    opt_gap = None if ref is None else float(end_loss) - ref.loss
    ref_error = None if ref is None else ref.error(model.parameters())
    return EpochMetrics(
        epoch=epoch,
        train_loss=float(torch.stack(p.losses) @ weights) / sum(p.sizes),  # size-weighted mean
        val_loss=evaluate(model, monitored(run.data)),
        lr=p.lr,
        grad_norm=grad_norm,
        grad_variance=gradient_variance(model, train, run.batch_size, run.trainer.sampling)
        if run.trainer.grad_variance
        else None,
        param_error=param_error(model, run.data.theta),
        epoch_time=time.perf_counter() - started,
        opt_gap=opt_gap,
        ref_error=ref_error,
        newton_decrement=getattr(run.optimizer, "decrement", None),
        objective_digits=None if ref is None or opt_gap is None else ref.objective_digits(opt_gap),
        theta_digits=None if ref is None or ref_error is None else ref.theta_digits(ref_error),
    )


def copied_state(model: Model) -> dict[str, Tensor]:
    """The parameters as they are now, which later steps must not touch. A clone per tensor: the
    same values as `copy.deepcopy(model.state_dict())` at a tenth of its cost, paid every epoch."""
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def update_best(p: Progress, metrics: EpochMetrics, model: Model, trainer: TrainerConf) -> None:
    """Close the epoch in `p`, and keep early stopping's books: the best-so-far θ and its loss."""
    p.epoch, p.rows, p.losses, p.sizes = metrics.epoch, None, [], []
    p.history.append(metrics)
    failed = should_stop(metrics, p, trainer) in FAILED_STOPS  # a diverged epoch is never the best
    if not failed and metrics.val_loss < p.best_val - trainer.min_delta:
        p.best_val, p.best_epoch, p.stale_epochs = metrics.val_loss, metrics.epoch, 0
        p.best_state = copied_state(model)
    else:
        p.stale_epochs += 1


def ask_callbacks(callbacks: Sequence[Callback], metrics: EpochMetrics) -> str | None:
    """Hand the metrics to each callback (the tracker buffers them: a snapshot flushes them); the
    reason of one that asks to stop."""
    try:
        for callback in callbacks:
            callback.on_epoch_end(metrics)
    except StopTraining as asked:
        return str(asked)
    return None


def monitored(data: Data) -> Split:
    """The split early stopping watches: validation, or the training split when there is none."""
    return data.val if len(data.val) else data.train


def result(run: Training, p: Progress, stop_reason: str) -> FitResult:
    """Restore the best-val θ, then the one evaluation on the test split."""
    model, data, ref = run.learner, run.data, run.reference
    start = time.perf_counter()
    model.load_state_dict(p.best_state)
    test_loss = evaluate(model, data.test) if len(data.test) else math.nan  # nan: no test split
    wall_time = p.train_time + time.perf_counter() - start
    at_reference = reference_losses(run)  # after wall_time: a record for comparison, not training
    return FitResult(
        stop_reason=stop_reason,
        epochs=p.epoch,
        best_epoch=p.best_epoch,
        best_val_loss=p.best_val,
        test_loss=test_loss,
        param_error=param_error(model, data.theta),
        wall_time=wall_time,
        reference_loss=None if ref is None else ref.loss,
        reference_val_loss=at_reference[0],
        reference_test_loss=at_reference[1],
        history=p.history,
    )


def reference_losses(run: Training) -> tuple[float | None, float | None]:
    """The validation (or monitored) and test losses at θ*, what the best run could reach on them;
    the model's own parameters are left as they were."""
    if run.reference is None:
        return None, None
    model, data = run.learner, run.data
    restored = copied_state(model)
    parameters = list(model.parameters())
    with torch.no_grad():  # copied in: vector_to_parameters would make the parameters views of θ*
        chunks = run.reference.theta.split([p.numel() for p in parameters])
        for parameter, chunk in zip(parameters, chunks, strict=True):
            parameter.copy_(chunk.view_as(parameter))
    val_loss = evaluate(model, monitored(data))
    test_loss = evaluate(model, data.test) if len(data.test) else math.nan
    model.load_state_dict(restored)
    return val_loss, test_loss


def safe_point(
    run: Training, p: Progress, snapshot: Callable[[Progress], None] | None, start: float
) -> Callable[[], None]:
    """A check for `run.stop`, called where training could resume from exactly here: if a stop
    was requested, snapshot the progress and raise `Stopped`."""

    def halt_if_requested() -> None:
        if run.stop.reason is not None:
            p.elapsed = time.perf_counter() - start
            if snapshot is not None:
                snapshot(p)
            run.stop.check()

    return halt_if_requested


def fit(
    run: Training,
    callbacks: Sequence[Callback] = (),
    progress: Progress | None = None,
    snapshot: Callable[[Progress], None] | None = None,
) -> FitResult:
    """Train until a stop reason; `progress` resumes a snapshot, `snapshot` is handed the progress
    every `trainer.checkpoint_every` epochs and when `run.stop` is requested (a signal,
    src/signals.py): the loop then finishes its step or evaluation, snapshots and raises `Stopped`."""
    model, trainer, steps = run.learner, run.trainer, Steps(run)
    p = progress or Progress(best_state=copied_state(model))
    stop_reason, start = "max_epochs", time.perf_counter() - p.elapsed
    if p.epoch == 0 and not p.sizes:
        p.start_loss = evaluate(model, monitored(run.data))
        p.start_grad_norm = gradient_norm(model, run.data.train, run.l2)[1]
    halt_if_requested = safe_point(run, p, snapshot, start)
    epochs = range(p.epoch + 1, trainer.max_epochs + 1)
    bar = tqdm(epochs, initial=p.epoch, total=trainer.max_epochs, disable=None if trainer.progress else True)
    for epoch in bar:  # (disable=None: a bar only on a terminal, so logs and CI stay clean)
        epoch_start = time.perf_counter()
        train_epoch(run, p, steps, halt_if_requested)
        metrics = epoch_metrics(run, p, steps, epoch, epoch_start)
        p.train_time += metrics.epoch_time
        update_best(p, metrics, model, trainer)
        bar.set_postfix(train=f"{metrics.train_loss:.3g}", val=f"{metrics.val_loss:.3g}", lr=f"{p.lr:.3g}")
        p.elapsed = time.perf_counter() - start
        if reason := ask_callbacks(callbacks, metrics):
            stop_reason = reason
            break
        halt_if_requested()  # a request made during the evaluation: stop at the epoch's end
        if snapshot is not None and trainer.checkpoint_every and epoch % trainer.checkpoint_every == 0:
            snapshot(p)
        if reason := should_stop(metrics, p, trainer, None if run.reference is None else run.reference.loss):
            stop_reason = reason
            break
    bar.close()
    if snapshot is not None:
        snapshot(p)  # the end state, from which a resume can refine further
    run.stop.check()  # a request made during the last callbacks or snapshot: still an interruption
    return result(run, p, stop_reason)
