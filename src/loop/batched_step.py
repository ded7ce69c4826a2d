"""The lecture's update rules on parameters stacked along a leading run axis (one row per run).

Each rule is torch.optim's CPU single-tensor update (src/loop/fast_step.py) written with per-row
hyper-parameters as (R, 1, ...) tensors: the same operations in the same order, so a row's float64
trajectory is the single run's to rounding (a fused multiply-add here or there: ~1e-16 per step).
A row that has stopped keeps its parameters and state: each update is committed by a mask.

Also the closed-form loss and gradient of the linear and logistic models (src/models.py) on
stacked data, as `LinearRegression.loss_and_grad` computes them for one run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from src.loop.fast_step import _new_adam_state
from src.loop.training import Training


def stacked(tensors: Sequence[Tensor]) -> Tensor:
    return torch.stack([t.detach() for t in tensors])


def saved(runs: Sequence[Training], key: str) -> list[Tensor] | None:
    """Each parameter's `key` in every row's own torch.optim state, stacked parameter by parameter
    (zeros for a row that has none); None when no row has one: a fresh start, not a resumed one."""
    params = [list(run.model.parameters()) for run in runs]
    found = [[run.optimizer.state[p].get(key) for p in ps] for run, ps in zip(runs, params, strict=True)]
    if all(t is None for row in found for t in row):
        return None
    return [
        stacked(
            [
                row[k] if row[k] is not None else torch.zeros_like(ps[k])
                for row, ps in zip(found, params, strict=True)
            ]
        )
        for k in range(len(params[0]))
    ]


def per_row(values: Sequence[float], like: Tensor) -> Tensor:
    """One hyper-parameter of every row as an (R,) float64 tensor: what torch computes from it in
    Python floats (1 − β, lr / (1 − β₁ᵗ), ...) is computed here in float64, the same arithmetic,
    and cast to the parameters' dtype only when applied (`rows`), as torch casts a Python scalar."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=like.device)


def rows(t: Tensor, like: Tensor) -> Tensor:
    """An (R,) tensor (a number: in `like`'s dtype) viewed to broadcast against `like`, (R, ...)."""
    t = t.to(like.dtype) if t.is_floating_point() else t
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def commit(active: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """`new` on the rows still training, `old` on the rows that have stopped."""
    return torch.where(rows(active, new), new, old)


class Constants:
    """The rows' fixed hyper-parameters, each viewed once per parameter shape and dtype (`rows`)
    rather than cast and reshaped at every step, which was a third of a small batch's time."""

    def __init__(self, **values: Tensor) -> None:
        self.values = values
        self.views: dict[tuple[str, int, torch.dtype], Tensor] = {}

    def __call__(self, name: str, like: Tensor) -> Tensor:
        key = (name, like.dim(), like.dtype)
        if (view := self.views.get(key)) is None:
            view = self.views[key] = rows(self.values[name], like)
        return view


@dataclass
class StackedModel:
    """x·w (+ b) for every row: `weight` (R, d), `bias` (R,) or None; least squares or the logit."""

    logit: bool
    bias: bool

    def outputs(self, params: Sequence[Tensor], X: Tensor) -> Tensor:
        out = torch.bmm(X, params[0].unsqueeze(-1)).squeeze(-1)
        return out + params[1].unsqueeze(-1) if self.bias else out

    def loss(self, params: Sequence[Tensor], X: Tensor, y: Tensor) -> Tensor:
        """The data loss of each row on its own (X, y): (R,)."""
        out = self.outputs(params, X)
        if self.logit:
            return F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(1)
        return ((y - out) ** 2).mean(1)

    def loss_and_grad(
        self, params: Sequence[Tensor], X: Tensor, y: Tensor, l2: Tensor | None, exact: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Each row's objective on its batch and its gradient, in the closed forms of src/models.py;
        with the penalty α (R,): + (α/2)‖θ‖² and + αθ, as src/loop/gradients.py adds them. `exact`:
        each row's data loss by the single run's own reduction (a loop over rows, bitwise the same;
        otherwise a sum in another order, ~1e-16 relative), for L − L*, which cancels digits."""
        n = y.shape[1]
        if self.logit:
            out = self.outputs(params, X)
            r = torch.sigmoid(out) - y
            if exact:
                pairs = zip(out, y, strict=True)
                loss = torch.stack([F.binary_cross_entropy_with_logits(o, t) for o, t in pairs])
            else:
                loss = F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(1)
        else:  # r = Xw − y, then + b, in LinearRegression.loss_and_grad's order
            r = torch.bmm(X, params[0].unsqueeze(-1)).squeeze(-1) - y
            r = r + params[1].unsqueeze(-1) if self.bias else r
            loss = torch.stack([torch.dot(e, e) for e in r]) / n if exact else (r * r).sum(1) / n
        grads = [torch.bmm(X.transpose(1, 2), r.unsqueeze(-1)).squeeze(-1)]
        if self.bias:
            grads.append(r.sum(1))
        # the logit's gradient is divided by N, least squares' multiplied by 2/N: as src/models.py does
        grads = [g / n if self.logit else g * (2 / n) for g in grads]
        if l2 is not None:
            grads = [torch.addcmul(g, p, rows(l2, p)) for g, p in zip(grads, params, strict=True)]
            squares = sum(p.pow(2).reshape(len(p), -1).sum(1) for p in params)
            loss = loss + rows(l2 / 2, loss) * squares
        return loss, grads


class StackedSGD:
    """torch.optim.SGD (plain, momentum, Nesterov, dampening, weight decay) row by row."""

    def __init__(self, runs: Sequence[Training], like: Tensor) -> None:
        groups = [run.optimizer.param_groups[0] for run in runs]
        self.momentum = per_row([g["momentum"] for g in groups], like)
        self.dampening = per_row([g["dampening"] for g in groups], like)
        self.weight_decay = per_row([g["weight_decay"] for g in groups], like)
        self.nesterov = torch.tensor([bool(g["nesterov"]) for g in groups])
        self.uses_momentum = self.momentum != 0
        self.decays = bool((self.weight_decay != 0).any())  # else grad + 0·p: skipped, as torch skips it
        self.fixed = Constants(
            momentum=self.momentum,
            keep=1 - self.dampening,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
            uses_momentum=self.uses_momentum,
        )
        self.buffers: list[Tensor] | None = saved(runs, "momentum_buffer")  # resumed: the rows' own
        # The rows with a momentum buffer: torch's first step sets it to the gradient itself.
        first = [next(iter(run.model.parameters())) for run in runs]
        self.started = torch.tensor(
            [
                run.optimizer.state[p].get("momentum_buffer") is not None
                for run, p in zip(runs, first, strict=True)
            ]
        )

    def store(self, runs: Sequence[Training], i: int) -> None:
        """Row i's state into its own torch.optim.SGD, as torch keeps it (no buffer without momentum)."""
        if self.buffers is None or not bool(self.uses_momentum[i]):
            return
        for p, buf in zip(runs[i].model.parameters(), self.buffers, strict=True):
            runs[i].optimizer.state[p]["momentum_buffer"] = buf[i].clone()

    def step(self, params: list[Tensor], grads: list[Tensor], lr: Tensor, active: Tensor) -> None:
        buffers, fixed = [], self.fixed
        for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
            training = rows(active, p)
            if self.decays:
                grad = torch.addcmul(grad, p, fixed("weight_decay", p))  # grad.add(p, alpha=wd)
            if self.buffers is None:
                buf = grad.clone()
            else:  # buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                old = self.buffers[i]
                buf = torch.addcmul(old * fixed("momentum", p), grad, fixed("keep", p))
                buf = torch.where(training, torch.where(rows(self.started, p), buf, grad), old)
            buffers.append(buf)
            nesterov = torch.addcmul(grad, buf, fixed("momentum", p))  # grad.add(buf, alpha=momentum)
            direction = torch.where(fixed("nesterov", p), nesterov, buf)
            direction = torch.where(fixed("uses_momentum", p), direction, grad)
            stepped = torch.addcmul(p, direction, rows(-lr, p))  # p.add_(d, alpha=-lr)
            params[i] = torch.where(training, stepped, p)
        self.buffers = buffers
        self.started |= active


class StackedAdam:
    """torch.optim.Adam and AdamW (L2 or decoupled weight decay) row by row."""

    def __init__(self, runs: Sequence[Training], like: Tensor) -> None:
        groups = [run.optimizer.param_groups[0] for run in runs]
        self.beta1 = per_row([g["betas"][0] for g in groups], like)
        self.beta2 = per_row([g["betas"][1] for g in groups], like)
        self.betas = ([float(g["betas"][0]) for g in groups], [float(g["betas"][1]) for g in groups])
        self.eps = per_row([g["eps"] for g in groups], like)
        self.weight_decay = per_row([g["weight_decay"] for g in groups], like)
        self.decoupled = torch.tensor([bool(g["decoupled_weight_decay"]) for g in groups])
        self.decays = bool((self.weight_decay != 0).any())  # else both decays are identities: skipped
        self.fixed = Constants(
            weight_decay=self.weight_decay,
            decoupled=self.decoupled,
            new_share=1 - self.beta1,
            beta2=self.beta2,
            new_square_share=1 - self.beta2,
            eps=self.eps,
        )
        # Every row still training has taken the same number of steps; a stopped row, fewer.
        self.row_steps = torch.zeros(len(runs), dtype=torch.int64)
        self.moments: list[tuple[Tensor, Tensor]] = []
        averages, squares, steps = (saved(runs, key) for key in ("exp_avg", "exp_avg_sq", "step"))
        if averages is not None and squares is not None and steps is not None:  # resumed: the rows' own
            self.moments = list(zip(averages, squares, strict=True))
            self.row_steps = steps[0].to(torch.int64)

    def store(self, runs: Sequence[Training], i: int) -> None:
        """Row i's state into its own torch.optim.Adam, as torch keeps it (src/loop/fast_step.py)."""
        if not self.moments:
            return
        for p, (exp_avg, exp_avg_sq) in zip(runs[i].model.parameters(), self.moments, strict=True):
            state = runs[i].optimizer.state[p]
            state.update(_new_adam_state(p))
            state["step"] += int(self.row_steps[i])
            state["exp_avg"], state["exp_avg_sq"] = exp_avg[i].clone(), exp_avg_sq[i].clone()

    def step(self, params: list[Tensor], grads: list[Tensor], lr: Tensor, active: Tensor) -> None:
        if not self.moments:
            self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.row_steps += active
        steps = [max(1, n) for n in self.row_steps.tolist()]  # (a row that never stepped: not applied)
        # Python's float powers, as torch's single-tensor Adam takes them (torch's pow differs in ulps)
        bias_correction1 = per_row([1 - b**n for b, n in zip(self.betas[0], steps, strict=True)], lr)
        bias_correction2_sqrt = per_row(
            [(1 - b**n) ** 0.5 for b, n in zip(self.betas[1], steps, strict=True)], lr
        )
        fixed, step_size = self.fixed, -(lr / bias_correction1)
        for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
            exp_avg, exp_avg_sq = self.moments[i]
            training = rows(active, p)
            shrunk = p
            if self.decays:
                decoupled, kept = fixed("decoupled", p), rows(1 - lr * self.weight_decay, p)
                coupled = torch.addcmul(grad, p, fixed("weight_decay", p))  # grad.add(p, alpha=wd)
                shrunk = torch.where(decoupled, p * kept, p)  # p.mul_(1 - lr * wd)
                grad = torch.where(decoupled, grad, coupled)
            new_avg = exp_avg.lerp(grad, fixed("new_share", p))
            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            new_sq = torch.addcmul(exp_avg_sq * fixed("beta2", p), fixed("new_square_share", p) * grad, grad)
            denom = new_sq.sqrt() / rows(bias_correction2_sqrt, p) + fixed("eps", p)
            # p.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))
            stepped = torch.addcdiv(shrunk, rows(step_size, p) * new_avg, denom)
            params[i] = torch.where(training, stepped, p)
            self.moments[i] = (
                torch.where(training, new_avg, exp_avg),
                torch.where(training, new_sq, exp_avg_sq),
            )


StackedOptimizer = StackedSGD | StackedAdam


def stacked_optimizer(runs: Sequence[Training], like: Tensor) -> StackedOptimizer:
    if type(runs[0].optimizer) is torch.optim.SGD:
        return StackedSGD(runs, like)
    return StackedAdam(runs, like)
