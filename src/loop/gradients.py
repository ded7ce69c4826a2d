"""What the loop differentiates and measures: the training objective (the model's loss plus the
L2 penalty), its gradient (closed form where the model has one, else autograd), the loss on a split,
the gradient's norm and its variance over minibatches, and the distance to the true θ."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

import torch
from torch import Tensor, nn

from src.config import Sampling
from src.data import Split
from src.loop.training import Model
from src.optim.qr import augmented


def objective(model: Model, X: Tensor, y: Tensor, l2: float = 0.0) -> Tensor:
    """The training objective, with its graph: the data loss plus the lecture's (α/2)‖θ‖², α = l2."""
    loss = model.loss(X, y)
    if l2:
        loss = loss + l2 / 2 * sum(p.pow(2).sum() for p in model.parameters())
    return loss


def loss_and_grad(model: Model, X: Tensor, y: Tensor, l2: float = 0.0) -> Tensor:
    """The objective on (X, y), leaving its gradient in each parameter's .grad; no graph is kept."""
    return gradient_function(model, l2)(X, y)


def gradient_function(model: Model, l2: float = 0.0) -> Callable[[Tensor, Tensor], Tensor]:
    """`loss_and_grad` for this model and penalty as a function of (X, y), chosen once per run.

    A model may give its loss and gradient in closed form (`model.loss_and_grad`), which skips
    autograd's overhead; the penalty then adds (α/2)‖θ‖² and αθ. Otherwise autograd computes both.
    """
    closed_form: Callable[[Tensor, Tensor], Tensor] | None = getattr(model, "loss_and_grad", None)
    if closed_form is not None and not l2:  # the hot path: nothing else to do
        return closed_form
    return partial(_penalized_or_autograd, model, closed_form, l2)


def _penalized_or_autograd(
    model: Model, closed_form: Callable[[Tensor, Tensor], Tensor] | None, l2: float, X: Tensor, y: Tensor
) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    if closed_form is None:
        loss = objective(model, X, y, l2)
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        return loss.detach()
    loss = closed_form(X, y)
    with torch.no_grad():
        for p in params:
            cast(Tensor, p.grad).add_(p, alpha=l2)
        return loss + l2 / 2 * sum(p.pow(2).sum() for p in params)


class BatchObjective:
    """optimizer.step's closure for (X, y): called, the objective with its gradient in .grad; called
    with backward=False, the objective with its graph, for methods that differentiate it twice
    (Newton, preconditioned): they keep torch's step(closure) without the loop rebuilding the loss
    as a function of θ for torch.func.hessian. `newton_system` gives Newton the least-squares form
    of its step where the model has one."""

    def __init__(self, model: Model, X: Tensor, y: Tensor, l2: float) -> None:
        self.model, self.X, self.y, self.l2 = model, X, y, l2

    def __call__(self, backward: bool = True) -> Tensor:
        model, X, y, l2 = self.model, self.X, self.y, self.l2
        return loss_and_grad(model, X, y, l2) if backward else objective(model, X, y, l2)

    def newton_system(self) -> tuple[Tensor, Tensor, float] | None:
        """(A, c, s) with ∇L = s Aᵀ(Aθ − c) and ∇²L = s AᵀA for the penalized objective (src.models'
        `newton_system`, the penalty's αθ and αI as rows √(α/s) I against 0), or None for a model
        without one."""
        system: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, float]] | None = getattr(
            self.model, "newton_system", None
        )
        if system is None:
            return None
        A, c, s = system(self.X, self.y)
        A, c = augmented(A, c, self.l2 / s)
        return A, c, s


def closure(model: Model, X: Tensor, y: Tensor, l2: float) -> BatchObjective:
    """optimizer.step's closure for (X, y) (see BatchObjective)."""
    return BatchObjective(model, X, y, l2)


def evaluate(model: Model, split: Split) -> float:
    """The data loss (no penalty): what validation and test report."""
    with torch.no_grad():
        return float(model.loss(split.X, split.y))


def gradient_norm(model: Model, split: Split, l2: float = 0.0) -> tuple[Tensor, float]:
    """The objective L(θ) and ‖∇L(θ)‖ over the whole split, leaving ∇L(θ) in .grad."""
    loss = loss_and_grad(model, split.X, split.y, l2)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = grads[0] if len(grads) == 1 else torch.cat([g.reshape(-1) for g in grads])  # one: no copy
    return loss, float(torch.linalg.vector_norm(flat))


class _Loss(nn.Module):
    """A model's loss as a module's forward, so torch.func.functional_call evaluates it at any θ."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, X: Tensor, y: Tensor) -> Tensor:
        return self.model.loss(X, y)


def gradient_variance(model: Model, split: Split, size: int, sampling: Sampling) -> float:
    """E‖g_B − ∇L(θ)‖²: how far a batch's mean gradient g_B strays from the full one (a penalty cancels).

    With the per-example gradients ∇ℓ_n (vmap of grad) and the lecture's per-example variance
    S² = (1/N) Σ‖∇ℓ_n − ∇L‖², it is S²/|B| for rows drawn with replacement and
    S²/|B| · (N − |B|)/(N − 1) without (shuffle, sequential): 0 for the full batch. It takes the
    model's loss to be the mean of per-row losses, as least squares is.
    """
    n = len(split)
    if size >= n and sampling is not Sampling.replacement:
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
