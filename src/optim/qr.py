"""Least squares by an orthogonal factorization, the same answer on every call.

`torch.linalg.lstsq` on the CPU (LAPACK's gelsy, threaded) gave different answers across identical
calls on an ill-conditioned design. Householder QR (`torch.linalg.qr`) followed by a triangular
solve takes one fixed path through the arithmetic: bitwise the same θ every time, and as accurate as
lstsq on a full-rank design (error ≈ cond(A)·ε plus cond(A)²·ε·‖r‖/(‖A‖‖x‖), never cond(A)²·ε as
solving the normal equations AᵀA x = Aᵀb does).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lstsq(A: Tensor, b: Tensor) -> Tensor:
    """argmin_x ‖A x − b‖ for a full-column-rank A (m ≥ n), by A = QR and R x = Qᵀb."""
    Q, R = torch.linalg.qr(A)
    return torch.linalg.solve_triangular(R, (Q.T @ b)[:, None], upper=True)[:, 0]


def augmented(A: Tensor, b: Tensor, ridge: float, center: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """[A; √ridge I] and [b; √ridge center]: the least-squares form of (AᵀA + ridge I) x = Aᵀb +
    ridge·center (center 0: a penalty ‖x‖²; the current point: a damping), so that either keeps the
    orthogonal factorization."""
    if ridge == 0:
        return A, b
    n = A.shape[1]
    root = ridge**0.5
    rows = root * torch.eye(n, dtype=A.dtype, device=A.device)
    target = torch.zeros(n, dtype=b.dtype, device=b.device) if center is None else root * center
    return torch.cat([A, rows]), torch.cat([b, target])
