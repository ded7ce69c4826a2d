"""The training loop: epochs of steps, validation, stopping, the best state (`fit`), the closed-form
step that skips autograd where it can (`fast_step`), what a run trains (`Training`) and its snapshots
(`checkpoint`). The loop knows nothing of MLflow or Optuna: it reports through `Callback`s."""

from src.loop.gradients import evaluate, gradient_variance, loss_and_grad
from src.loop.loop import (
    Callback,
    EpochMetrics,
    FitResult,
    Progress,
    StopTraining,
    batches,
    epoch_order,
    fit,
    should_stop,
)

__all__ = [
    "Callback",
    "EpochMetrics",
    "FitResult",
    "Progress",
    "StopTraining",
    "batches",
    "epoch_order",
    "evaluate",
    "fit",
    "gradient_variance",
    "loss_and_grad",
    "should_stop",
]
