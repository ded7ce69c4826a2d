"""Least squares by an orthogonal factorization, refined to the accuracy the data allow, the same
answer on every call.

`torch.linalg.lstsq` on the CPU (LAPACK's gelsy, threaded) gave different answers across identical
calls on an ill-conditioned design. Householder QR (`torch.linalg.qr`) followed by a triangular
solve takes one fixed path through the arithmetic: bitwise the same θ every time. Its error is
≈ cond(A)·ε plus cond(A)²·ε·‖r‖/(‖A‖‖x‖) — the second term, from the rounding of Qᵀ against a large
residual r, is what cost NIST's Wampler5 (a degree-5 polynomial with large noise) all but 5.9 digits.
Refining x alone (x += QR solution against b − Ax) keeps that term: its fixed point is exact for the
factorization's A + δA, not for A. Björck's refinement of the augmented system
    r + A x = b,   Aᵀ r = 0
does remove it, provided both residuals are computed in about twice the working precision (below,
error-free products and sums: Dekker's and Knuth's, so it holds on every device and platform, where
numpy's longdouble may be plain double). Each round reuses the one QR: some twenty elementwise passes
over A.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MAX_REFINEMENTS = 10  # it contracts by ≈ cond(A)·ε a round: two or three rounds where it can help


def lstsq(A: Tensor, b: Tensor) -> Tensor:
    """argmin_x ‖A x − b‖ for a full-column-rank A (m ≥ n): A = QR, R x = Qᵀb, then refined."""
    Q, R = torch.linalg.qr(A)
    x = solve(R, Q.T @ b)
    r = residual(A, b, x, torch.zeros_like(b))
    previous = math.inf
    for _ in range(MAX_REFINEMENTS):
        f = residual(A, b, x, r)  # the augmented system's residuals: f = b − r − Ax, g = −Aᵀr
        g = -transposed_product(A, r)
        # Its correction with the same factorization: Rᵀu = g, R δx = Qᵀf − u, δr = f − Q(Qᵀf − u).
        v = Q.T @ f - solve(R.T, g, upper=False)
        dx = solve(R, v)
        size = float(torch.linalg.vector_norm(dx))
        if not size < previous / 2:  # no longer contracting: at rounding level (or cond(A)·ε ≳ 1)
            break
        x, r, previous = x + dx, r + (f - Q @ v), size
        if size <= torch.finfo(x.dtype).eps * float(torch.linalg.vector_norm(x)):
            break
    return x


def solve(R: Tensor, v: Tensor, upper: bool = True) -> Tensor:
    return torch.linalg.solve_triangular(R, v[:, None], upper=upper)[:, 0]


def residual(A: Tensor, b: Tensor, x: Tensor, r: Tensor) -> Tensor:
    """b − r − A x, rounded once from about twice the working precision."""
    p, e = two_product(A, x[None, :])  # A x = Σ_j (p + e)[:, j] exactly
    return compensated_sum(torch.cat([b[:, None], -r[:, None], -p], 1), -e, dim=1)


def transposed_product(A: Tensor, r: Tensor) -> Tensor:
    """Aᵀ r, rounded once from about twice the working precision."""
    p, e = two_product(A, r[:, None])
    return compensated_sum(p, e, dim=0)


def two_sum(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """s + t = a + b exactly, s = fl(a + b) (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def two_product(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """p + e = a·b exactly, p = fl(a·b) (Dekker, with Veltkamp's split into half-width parts)."""
    p = a * b
    a_hi, a_lo = split(a)
    b_hi, b_lo = split(b)
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def split(a: Tensor) -> tuple[Tensor, Tensor]:
    digits = 1 - round(math.log2(torch.finfo(a.dtype).eps))  # 53 in float64
    c = (2.0 ** math.ceil(digits / 2) + 1) * a
    hi = c - (c - a)
    return hi, a - hi


def compensated_sum(terms: Tensor, small: Tensor, dim: int) -> Tensor:
    """Σ terms + Σ small along `dim` as if in twice the working precision: the terms by pairwise
    error-free additions, their rounding errors and the small terms (each within ε of a term) added
    up plainly (error ≈ ε|sum| + ε²·log₂(n)·Σ|terms|)."""
    error = small.sum(dim)
    while (n := terms.shape[dim]) > 1:
        half = n // 2
        head, rounding = two_sum(terms.narrow(dim, 0, half), terms.narrow(dim, half, half))
        error = error + rounding.sum(dim)
        if n % 2:  # the odd one out joins the first pair
            first, rounding = two_sum(head.narrow(dim, 0, 1), terms.narrow(dim, n - 1, 1))
            head.narrow(dim, 0, 1).copy_(first)
            error = error + rounding.squeeze(dim)
        terms = head
    return terms.squeeze(dim) + error


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
