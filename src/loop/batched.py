"""Many runs trained as one computation: `fit_batch(runs)` is `fit(run)` for every run at once.

Runs that differ only in values that keep tensor shapes (the seed, so the data and the initial θ;
the learning rate and the optimizer's other hyper-parameters; the schedule's constants; the data's
noise) are stacked along a leading run axis: parameters (R, ...), each row's data (R, n, d), each
row's hyper-parameters as (R,) tensors (src/loop/batched_step.py). Everything random comes from the
row's own generator, in the order a single run draws it (each run is built by `src.train.build`, so
its data and θ₀ are the single run's; each epoch's row order is drawn from its generator), and every
stopping rule is the single run's (`should_stop`, per row, on its own metrics), with early stopping's
best state kept by masks. A row that stops keeps its parameters while the others go on.

What a row gets is the single run's `FitResult`: its history agrees per epoch to rounding (float64:
~1e-15 relative; the stacked products sum in another order than a single run's `mv`), the same stop
epoch and reason. Timing is shared: an epoch's seconds are split evenly between the rows it trained.

`why_not_batched(runs)` says why a set of runs cannot train this way (then train them one by one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor
from torch.optim.lr_scheduler import ConstantLR

from src.loop.batched_step import StackedModel, commit, per_row, stacked, stacked_optimizer
from src.loop.fast_step import UPDATES, _hooked, _plain
from src.loop.gradients import evaluate, gradient_norm
from src.loop.loop import (
    FAILED_STOPS,
    Callback,
    EpochMetrics,
    FitResult,
    Progress,
    ask_callbacks,
    epoch_order,
    monitored,
    result,
    should_stop,
)
from src.loop.training import Training
from src.models import LinearRegression, LogisticRegression
from src.signals import StopRequest

MODELS = (LinearRegression, LogisticRegression)  # the models with a closed-form gradient


def why_not_batched(runs: Sequence[Training]) -> str | None:
    """Why these runs cannot be trained as one batch, in a few words; None if they can."""
    first = runs[0]
    kinds = {(type(r.model), getattr(r.model, "bias", None) is not None, r.data.n_features) for r in runs}
    if type(first.model) not in MODELS or len(kinds) > 1:
        return "the runs need the same linear or logistic model (the closed-form gradient)"
    optimizers = {type(r.optimizer) for r in runs}
    if not (optimizers <= {torch.optim.SGD} or optimizers <= {torch.optim.Adam, torch.optim.AdamW}):
        return "the runs need the same first-order method (SGD, momentum, Nesterov, or Adam/AdamW)"
    plain = all(len(r.optimizer.param_groups) == 1 and _plain(r.optimizer) for r in runs)
    if not plain or any(_hooked(r.optimizer) for r in runs):
        return "an optimizer option or hook that the fast update does not cover"
    if len({(r.batch_size, r.trainer.sampling, r.trainer.dtype, str(r.trainer.device)) for r in runs}) > 1:
        return "the runs need the same batch size, sampling, dtype and device"
    if any(r.trainer.grad_variance or r.trainer.max_time is not None for r in runs):
        return "trainer.grad_variance and trainer.max_time are measured per run"
    if len({tuple(len(s) for s in r.data.splits()) for r in runs}) > 1:
        return "the runs' splits need the same numbers of rows"
    if len({(r.data.theta is None, r.reference is None) for r in runs}) > 1:
        return "either every run's data has a true θ and an exact reference, or none does"
    if any(type(r.optimizer) not in UPDATES for r in runs):
        return "an optimizer the fast update does not cover"
    return None


@dataclass
class Batch:
    """The runs' data and state, stacked: row r is runs[r]."""

    runs: Sequence[Training]
    model: StackedModel = field(init=False)
    params: list[Tensor] = field(init=False)
    best: list[Tensor] = field(init=False)
    active: Tensor = field(init=False)  # (R,) bool: the rows still training

    def __post_init__(self) -> None:
        runs = self.runs
        models = [cast(LinearRegression, r.model) for r in runs]  # or its subclass, the logit
        bias = models[0].bias is not None
        self.model = StackedModel(logit=isinstance(models[0], LogisticRegression), bias=bias)
        self.params = [stacked([m.weight for m in models])]
        if bias:
            self.params.append(stacked([cast(Tensor, m.bias) for m in models]))
        self.best = [p.clone() for p in self.params]
        self.active = torch.ones(len(runs), dtype=torch.bool)
        like = self.params[0]
        self.X, self.y = (stacked([getattr(r.data.train, k) for r in runs]) for k in ("X", "y"))
        watched = [monitored(r.data) for r in runs]
        self.val_X, self.val_y = stacked([s.X for s in watched]), stacked([s.y for s in watched])
        self.theta = None if runs[0].data.theta is None else stacked([r.data.theta for r in runs])  # type: ignore[misc]
        refs = [r.reference for r in runs]
        self.theta_star = None if refs[0] is None else stacked([ref.theta for ref in refs])  # type: ignore[union-attr]
        l2 = [r.l2 for r in runs]
        self.l2 = per_row(l2, like) if any(l2) else None
        self.optimizer = stacked_optimizer(runs, like)
        self.size = runs[0].batch_size

    def learning_rates(self) -> Tensor:
        return per_row([r.optimizer.param_groups[0]["lr"] for r in self.runs], self.params[0])

    def epoch_data(self) -> tuple[Tensor, Tensor]:
        """Each row's training rows in its epoch's order, drawn from its own generator (R, m, d)."""
        n, size, runs = len(self.runs[0].data.train), self.size, self.runs
        sampling = runs[0].trainer.sampling
        active = self.active.tolist()
        orders = [
            epoch_order(n, size, sampling, r.generator) if a else None
            for r, a in zip(runs, active, strict=True)
        ]
        if all(order is None for order in orders):
            return self.X, self.y
        m = next(len(order) for order in orders if order is not None)
        index = torch.stack([torch.arange(m) % n if o is None else o for o in orders])
        row = torch.arange(len(runs)).unsqueeze(1)
        return self.X[row, index], self.y[row, index]

    def resume(self, progress: Sequence[Progress], stops: Sequence[str | None]) -> None:
        """Each row's best-so-far θ from its progress (a fresh row's: θ₀), and the rows still training."""
        names = [name for name, _ in self.runs[0].model.named_parameters()]
        self.best = [
            stacked([p.best_state.get(name, best[i]) for i, p in enumerate(progress)])
            for name, best in zip(names, self.best, strict=True)
        ]
        self.active = torch.tensor([s is None for s in stops])

    def write_back(self, i: int, p: Progress) -> None:
        """Row i's state into its own run and progress, where a snapshot (and `result`) reads it: its
        θ into its model, its optimizer state into its torch.optim optimizer, its best θ into `p`."""
        run = self.runs[i]
        with torch.no_grad():
            for param, now in zip(run.model.parameters(), self.params, strict=True):
                param.copy_(now[i])
        self.optimizer.store(self.runs, i)
        names = [name for name, _ in run.model.named_parameters()]
        p.best_state = {name: best[i].clone() for name, best in zip(names, self.best, strict=True)}

    def keep_best(self, improved: Tensor) -> None:
        self.best = [commit(improved, p, b) for p, b in zip(self.params, self.best, strict=True)]


def steps_schedules(runs: Sequence[Training]) -> list[Training]:
    """The runs whose learning rate a scheduler changes (ConstantLR with factor 1 never does)."""
    return [r for r in runs if not (type(r.scheduler) is ConstantLR and r.scheduler.factor == 1.0)]


def step_schedulers(batch: Batch, scheduled: Sequence[Training], lr: Tensor) -> Tensor:
    """Each active row's own scheduler steps, as the single run's; the rows' learning rates after."""
    if not scheduled:
        return lr
    active = batch.active.tolist()
    for i, run in enumerate(batch.runs):
        if active[i] and run in scheduled:
            run.optimizer._opt_called = True  # type: ignore[attr-defined]  # (as fast_step records)
            run.scheduler.step()
    return batch.learning_rates()


def train_epoch(batch: Batch, scheduled: Sequence[Training], lr: Tensor) -> tuple[Tensor, Tensor, int]:
    """One epoch of steps for every active row: (each row's batch objectives weighted by the batch
    sizes and summed, the learning rates after the epoch, the rows its batches held)."""
    X, y = batch.epoch_data()
    losses, sizes = [], []
    step_interval = batch.runs[0].interval.value == "step"
    for xb, yb in zip(X.split(batch.size, 1), y.split(batch.size, 1), strict=True):
        loss, grads = batch.model.loss_and_grad(batch.params, xb, yb, batch.l2)
        batch.optimizer.step(batch.params, grads, lr, batch.active)
        losses.append(loss)
        sizes.append(yb.shape[1])
        if step_interval:
            lr = step_schedulers(batch, scheduled, lr)
    if not step_interval:
        lr = step_schedulers(batch, scheduled, lr)
    weights = torch.tensor(sizes, dtype=X.dtype, device=X.device)
    return weights @ torch.stack(losses), lr, sum(sizes)


def norms(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.reshape(len(t), -1), dim=1)


def epoch_columns(batch: Batch, summed: Tensor, total: int) -> dict[str, list[float] | None]:
    """Every row's end-of-epoch measurements, as `epoch_metrics` takes them for one run."""
    params, model = batch.params, batch.model
    end_loss, grads = model.loss_and_grad(params, batch.X, batch.y, batch.l2, exact=True)
    flat = torch.cat([g.reshape(len(g), -1) for g in grads], dim=1)
    columns: dict[str, list[float] | None] = {
        "train_loss": [value / total for value in summed.tolist()],  # in Python, as `fit` divides
        "val_loss": model.loss(params, batch.val_X, batch.val_y).tolist(),
        "grad_norm": norms(flat).tolist(),
        "end_loss": end_loss.tolist(),
        "param_error": None if batch.theta is None else norms(params[0] - batch.theta).tolist(),
        "ref_error": None,
    }
    if batch.theta_star is not None:
        theta = torch.cat([p.reshape(len(p), -1) for p in params], dim=1).to(batch.theta_star)
        columns["ref_error"] = norms(theta - batch.theta_star).tolist()
    return columns


def row_metrics(
    run: Training, columns: dict[str, list[float] | None], i: int, epoch: int, lr: float, seconds: float
) -> EpochMetrics:
    def at(key: str) -> float | None:
        column = columns[key]
        return None if column is None else column[i]

    ref = run.reference
    opt_gap = None if ref is None else columns["end_loss"][i] - ref.loss  # type: ignore[index]
    ref_error = at("ref_error")
    return EpochMetrics(
        epoch=epoch,
        train_loss=columns["train_loss"][i],  # type: ignore[index]
        val_loss=columns["val_loss"][i],  # type: ignore[index]
        lr=lr,
        grad_norm=columns["grad_norm"][i],  # type: ignore[index]
        grad_variance=None,
        param_error=at("param_error"),
        epoch_time=seconds,
        opt_gap=opt_gap,
        ref_error=ref_error,
        objective_digits=None if ref is None or opt_gap is None else ref.objective_digits(opt_gap),
        theta_digits=None if ref is None or ref_error is None else ref.theta_digits(ref_error),
    )


def close_epoch(p: Progress, run: Training, metrics: EpochMetrics) -> bool:
    """`update_best`'s books for one row; whether this epoch is its best so far."""
    p.epoch = metrics.epoch
    p.history.append(metrics)
    p.train_time += metrics.epoch_time
    failed = should_stop(metrics, p, run.trainer) in FAILED_STOPS
    if not failed and metrics.val_loss < p.best_val - run.trainer.min_delta:
        p.best_val, p.best_epoch, p.stale_epochs = metrics.val_loss, metrics.epoch, 0
        return True
    p.stale_epochs += 1
    return False


def stop_reason(
    run: Training, p: Progress, metrics: EpochMetrics, callbacks: Sequence[Callback]
) -> str | None:
    """The row's reason to stop after this epoch, checked in `fit`'s order."""
    if reason := ask_callbacks(callbacks, metrics):
        return reason
    reference_loss = None if run.reference is None else run.reference.loss
    if reason := should_stop(metrics, p, run.trainer, reference_loss):
        return reason
    return "max_epochs" if metrics.epoch >= run.trainer.max_epochs else None


def starting_progress(run: Training) -> Progress:
    """What `fit` measures at θ₀ before the first step, by the single run's own functions."""
    p = Progress()
    p.start_loss = evaluate(run.learner, monitored(run.data))
    p.start_grad_norm = gradient_norm(run.learner, run.data.train, run.l2)[1]
    return p


Snapshot = Callable[[Progress, str | None], None]  # a row's progress and its stop reason (None: on)


@dataclass
class Resumed:
    """A row continued from its snapshot: its progress, and why it had stopped (None: it trains on)."""

    progress: Progress
    stop_reason: str | None


def fit_batch(
    runs: Sequence[Training],
    callbacks: Sequence[Sequence[Callback]] | None = None,
    stop: StopRequest | None = None,
    resumed: Sequence[Resumed | None] | None = None,
    snapshots: Sequence[Snapshot] | None = None,
) -> list[FitResult]:
    """Train every run until its own stop reason; callbacks[r] are row r's (its tracker, its pruner).
    `resumed[r]` continues row r from its snapshot (its run's states already restored into it:
    src/loop/checkpoint.py); `snapshots[r]` is handed row r's progress every `checkpoint_every`
    epochs, when it stops, and when `stop` is requested (a signal): the batch then ends at that
    epoch's end, every training row's snapshot written, and `Stopped` is raised."""
    reason = why_not_batched(runs)
    if reason is not None:
        raise ValueError(f"these runs cannot train as one batch: {reason}")
    calls = callbacks or [()] * len(runs)
    starts = resumed or [None] * len(runs)
    progress = [s.progress if s else starting_progress(r) for s, r in zip(starts, runs, strict=True)]
    stops = [s.stop_reason if s else None for s in starts]
    batch = Batch(runs)
    batch.resume(progress, stops)
    scheduled, lr = steps_schedules(runs), batch.learning_rates()
    epoch = max((p.epoch for p, s in zip(progress, stops, strict=True) if s is None), default=0)
    while batch.active.any():
        epoch += 1
        started, epoch_lr = time.perf_counter(), lr.tolist()
        summed, lr, total = train_epoch(batch, scheduled, lr)
        columns = epoch_columns(batch, summed, total)
        live = [i for i, a in enumerate(batch.active.tolist()) if a]
        seconds = (time.perf_counter() - started) / len(live)
        improved = torch.zeros(len(runs), dtype=torch.bool)
        for i in live:
            metrics = row_metrics(runs[i], columns, i, epoch, epoch_lr[i], seconds)
            improved[i] = close_epoch(progress[i], runs[i], metrics)
            stops[i] = stop_reason(runs[i], progress[i], metrics, calls[i])
        batch.keep_best(improved)
        batch.active &= torch.tensor([s is None for s in stops])
        halting = stop is not None and stop.reason is not None  # once: the snapshots and the stop agree
        if snapshots is not None:
            for i in live:
                every = runs[i].trainer.checkpoint_every
                if halting or stops[i] is not None or (every and epoch % every == 0):
                    batch.write_back(i, progress[i])
                    snapshots[i](progress[i], stops[i])
        if halting:
            stop.check()  # type: ignore[union-attr]
    if stop is not None:
        stop.check()  # a request made during the last epoch's callbacks or snapshots
    return [finished(batch, i, p, stops[i] or "max_epochs") for i, p in enumerate(progress)]


def finished(batch: Batch, i: int, p: Progress, reason: str) -> FitResult:
    """Row i's result, as `fit` gives it: its best-val θ restored into its model, then its test."""
    batch.write_back(i, p)
    return result(batch.runs[i], p, reason)
