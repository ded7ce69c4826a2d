"""The exact gradient and Hessian of a loss, by automatic differentiation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def gradient_and_hessian(loss: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """∇L (n,) and ∇²L (n, n) of a scalar loss with respect to the parameters, flattened.

    The gradient is differentiated again (double backward); the n Hessian rows come from a single
    backward pass batched over the rows of I (`is_grads_batched`, which vectorizes it with vmap).
    """
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    g = flat(grads)
    n = g.numel()
    if not g.requires_grad:  # a loss linear in θ: the Hessian is zero
        return g.detach(), torch.zeros(n, n, dtype=g.dtype, device=g.device)
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    rows = torch.autograd.grad(
        g, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True, materialize_grads=True
    )
    return g.detach(), torch.cat([r.reshape(n, -1) for r in rows], dim=1).detach()


def assign(params: Sequence[Tensor], values: Tensor) -> None:
    """θ ← values, `values` flat over the parameters in order."""
    offset = 0
    for p in params:
        p.copy_(values[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
