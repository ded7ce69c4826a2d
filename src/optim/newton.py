"""Newton's method with the exact Hessian, damping and an optional Armijo line search."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from src.optim.hessian import assign, flat, gradient_and_hessian
from src.optim.qr import augmented, lstsq


class Newton(Optimizer):
    r"""Newton's method, the lecture's θ_{t+1} = θ_t − η_t [∇²L(θ_t)]⁻¹ ∇L(θ_t).

    With damping λ ≥ 0 (Levenberg's fix for an indefinite or singular Hessian):

        d_t = [∇²L(θ_t) + λI]⁻¹ ∇L(θ_t)
        θ_{t+1} = θ_t − s_t d_t

    where s_t = η_t, or, with `line_search="armijo"`, the first s in η_t, βη_t, β²η_t, … with
    Armijo's sufficient decrease L(θ_t − s d_t) ≤ L(θ_t) − c s ∇L(θ_t)·d_t. If none of
    `max_backtracks` tries is accepted, θ stays (d_t is then no descent direction: add damping).

    L is the loss of the step's batch. Where the closure gives the step's least-squares form
    (`closure.newton_system()`: ∇L = s Aᵀ(Aθ − c), ∇²L = s AᵀA, as for least squares and the logit),
    d_t = θ_t − argmin_θ ‖A θ − c‖ by a QR of A (with rows √(λ/s) I against √(λ/s) θ_t for the
    damping): the same step in exact arithmetic, without squaring A's condition number by forming
    AᵀA nor cancelling Zθ_t against y, so on an ill-conditioned design (a degree-10 polynomial, data in
    natural units) it keeps the digits a QR least-squares fit keeps.
    Otherwise ∇²L is the exact Hessian by autograd and the n×n system is solved (n = the number of
    parameters: this is for the lecture's small models, not for networks). With η = 1, λ = 0 one
    step solves least squares.

    Each step records its Newton decrement λ(θ_t)² = ∇L(θ_t)·d_t (`decrement`), ≈ 2(L(θ_t) − L*) near
    the minimum: the loop's evidence that θ_t was already converged (src/loop/loop.py).
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

    @property
    def decrement(self) -> float | None:
        """The last step's Newton decrement λ² = ∇L(θ)·[∇²L(θ) + λI]⁻¹∇L(θ); None before any step."""
        value = self.state[self.param_groups[0]["params"][0]].get("decrement")
        return None if value is None else float(value)

    def direction(self, closure: Callable[..., Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The batch loss L(θ), ∇L(θ) and the Newton direction d = [∇²L(θ) + λI]⁻¹ ∇L(θ)."""
        group = self.param_groups[0]
        params: list[Tensor] = group["params"]
        system = getattr(closure, "newton_system", None)
        form = system() if system is not None else None
        if form is not None:  # the least-squares form: a QR of A, the Hessian never formed
            A, c, s = form
            theta = flat(params)
            g = s * (A.T @ (A @ theta - c))
            A, c = augmented(A, c, group["damping"] / s, theta)  # damping: rows that hold θ where it is
            if A.shape[0] >= A.shape[1]:  # (a batch with fewer rows than parameters: the Hessian's way)
                return closure(backward=False).detach(), g, theta - lstsq(A, c)
        with torch.enable_grad():
            loss = closure(backward=False)
            g, H = gradient_and_hessian(loss, params)
        H.diagonal().add_(group["damping"])
        try:
            return loss.detach(), g, torch.linalg.solve(H, g)
        except torch.linalg.LinAlgError as exc:
            raise RuntimeError(f"the Hessian is singular ({exc}); set optimizer.damping > 0") from exc

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor]) -> Tensor:  # type: ignore[override]
        """One Newton step; `closure(backward=False)` returns the batch loss with its graph."""
        group = self.param_groups[0]
        params: list[Tensor] = group["params"]
        loss, g, d = self.direction(closure)
        self.state[params[0]]["decrement"] = float(g @ d)
        theta = flat(params)
        s = group["lr"]
        if group["line_search"] is None:
            assign(params, theta - s * d)
            return loss
        slope = float(g @ d)  # −slope is the directional derivative along −d
        for _ in range(group["max_backtracks"]):
            assign(params, theta - s * d)
            if float(closure(backward=False)) <= float(loss) - group["armijo_c"] * s * slope:
                return loss
            s *= group["backtrack"]
        assign(params, theta)  # no step passed the test
        return loss
