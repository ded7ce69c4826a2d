"""Newton's method with the exact Hessian, damping and an optional Armijo line search."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from src.optim.hessian import assign, flat, gradient_and_hessian


class Newton(Optimizer):
    r"""Newton's method, the lecture's θ_{t+1} = θ_t − η_t [∇²L(θ_t)]⁻¹ ∇L(θ_t).

    With damping λ ≥ 0 (Levenberg's fix for an indefinite or singular Hessian):

        d_t = [∇²L(θ_t) + λI]⁻¹ ∇L(θ_t)
        θ_{t+1} = θ_t − s_t d_t

    where s_t = η_t, or, with `line_search="armijo"`, the first s in η_t, βη_t, β²η_t, … with
    Armijo's sufficient decrease L(θ_t − s d_t) ≤ L(θ_t) − c s ∇L(θ_t)·d_t. If none of
    `max_backtracks` tries is accepted, θ stays (d_t is then no descent direction: add damping).

    L is the loss of the step's batch and ∇²L its exact Hessian by autograd, so with η = 1, λ = 0
    one step solves least squares. Each step forms and solves an n×n system, n = the number of
    parameters: this is for the lecture's small models, not for networks.
    """

    needs_closure = True  # step(closure) re-evaluates the batch loss (src.loop.fit passes one)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1.0,
        damping: float = 0.0,
        line_search: str | None = None,
        armijo_c: float = 1e-4,
        backtrack: float = 0.5,
        max_backtracks: int = 30,
    ) -> None:
        if line_search not in (None, "armijo"):
            raise ValueError(f"line_search={line_search!r}: must be None or 'armijo'")
        defaults = dict(
            lr=lr,
            damping=damping,
            line_search=line_search,
            armijo_c=armijo_c,
            backtrack=backtrack,
            max_backtracks=max_backtracks,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("Newton treats all parameters as one vector: give it one parameter group")

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor]) -> Tensor:  # type: ignore[override]
        """One Newton step; `closure(backward=False)` returns the batch loss with its graph."""
        group = self.param_groups[0]
        params: list[Tensor] = group["params"]
        with torch.enable_grad():
            loss = closure(backward=False)
            g, H = gradient_and_hessian(loss, params)
        H.diagonal().add_(group["damping"])
        try:
            d = torch.linalg.solve(H, g)
        except torch.linalg.LinAlgError as exc:
            raise RuntimeError(f"the Hessian is singular ({exc}); set optimizer.damping > 0") from exc
        theta = flat(params)
        s = group["lr"]
        if group["line_search"] is None:
            assign(params, theta - s * d)
            return loss.detach()
        slope = float(g @ d)  # −slope is the directional derivative along −d
        for _ in range(group["max_backtracks"]):
            assign(params, theta - s * d)
            if float(closure(backward=False)) <= float(loss) - group["armijo_c"] * s * slope:
                return loss.detach()
            s *= group["backtrack"]
        assign(params, theta)  # no step passed the test
        return loss.detach()
