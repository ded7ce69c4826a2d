"""Preconditioned gradient descent with a choice of preconditioner C."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from src.config.schemas import PRECONDITIONERS
from src.errors import ConfigError
from src.optim.hessian import assign, flat, gradient_and_hessian


class Preconditioned(Optimizer):
    r"""The lecture's preconditioned gradient descent, θ_{t+1} = θ_t − η_t C_t ∇L(θ_t), with C from
    `preconditioner` (λ = `damping` ≥ 0):

        identity         C = I                            gradient descent
        jacobi           C_t = diag(∇²L(θ_t) + λI)⁻¹      the Hessian's diagonal, inverted, each step
        inverse_hessian  C = (∇²L(θ₀) + λI)⁻¹             the inverse Hessian at the first step's θ₀
        diagonal         C = diag(c), c = `diagonal`      given

    The stationary points are those of L whatever the (positive definite) C. With C = H⁻¹ on least
    squares, where H is constant, this is Newton's method; Jacobi undoes badly scaled coordinates but
    not correlation between them. The Hessian is the exact one of the step's batch, by autograd.
    """

    needs_closure = True  # step(closure) re-evaluates the batch loss (src.loop.fit passes one)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1.0,
        preconditioner: str = "jacobi",
        diagonal: Sequence[float] | None = None,
        damping: float = 0.0,
    ) -> None:
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner={preconditioner!r}: must be one of {PRECONDITIONERS}")
        defaults = dict(lr=lr, preconditioner=preconditioner, damping=damping)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("Preconditioned treats all parameters as one vector: one parameter group")
        tensors: list[Tensor] = self.param_groups[0]["params"]
        if preconditioner == "diagonal":
            n = sum(p.numel() for p in tensors)
            if diagonal is None or len(diagonal) != n:
                given = None if diagonal is None else len(diagonal)
                raise ConfigError(f"optimizer.diagonal has {given} entries; the model has {n} parameters")
            first = tensors[0]
            self.state[first]["C"] = torch.tensor(diagonal, dtype=first.dtype, device=first.device)

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor]) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        params: list[Tensor] = group["params"]
        state, kind = self.state[params[0]], group["preconditioner"]
        with torch.enable_grad():
            if kind == "jacobi" or (kind == "inverse_hessian" and "C" not in state):
                loss = closure(backward=False)  # with its graph, to differentiate twice
                g, H = gradient_and_hessian(loss, params)
                H.diagonal().add_(group["damping"])
                state["C"] = 1 / H.diagonal() if kind == "jacobi" else torch.linalg.inv(H)
            else:
                loss = closure()
                g = flat([torch.zeros_like(p) if p.grad is None else p.grad for p in params])
        C = state.get("C")
        if C is None:  # identity
            direction = g
        elif C.dim() == 1:  # a diagonal C, stored as its diagonal
            direction = C * g
        else:
            direction = C @ g
        assign(params, flat(params) - group["lr"] * direction)
        return loss.detach()
