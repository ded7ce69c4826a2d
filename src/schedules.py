"""Learning-rate schedules torch lacks, and the Robbins–Monro check of a schedule.

A schedule is a torch.optim.lr_scheduler class (or a function returning one) that takes the
optimizer first; t counts optimizer steps or epochs, as the schedule's `interval` says.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
    StepLR,
)


class RobbinsMonroLR(LRScheduler):
    """η_t = η₀ / (1 + t/τ)^κ.

    η_t → 0, Σ η_t = ∞ and Σ η_t² < ∞ hold exactly for κ ∈ (0.5, 1] (the Robbins–Monro conditions).
    """

    def __init__(self, optimizer: Optimizer, tau: float, kappa: float, last_epoch: int = -1) -> None:
        self.tau = tau
        self.kappa = kappa
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        decay = (1 + self.last_epoch / self.tau) ** -self.kappa
        return [base_lr * decay for base_lr in self.base_lrs]


def constant(optimizer: Optimizer) -> LRScheduler:
    """η_t = η₀ for every t: torch's ConstantLR with a factor of 1 from the start."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def warmup_cosine(
    optimizer: Optimizer, T_max: int, warmup: int, start_factor: float = 0.1, eta_min: float = 0.0
) -> SequentialLR:
    """A linear warm-up, then a cosine decay; torch's LinearLR then CosineAnnealingLR:

        η_t = η₀ (s + (1 − s) t/W)                                      for t < W
        η_t = η_min + (η₀ − η_min) (1 + cos(π (t − W)/(T_max − W))) / 2  for W ≤ t ≤ T_max

    with W = `warmup`, s = `start_factor`.
    """
    return SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup),
            CosineAnnealingLR(optimizer, T_max=T_max - warmup, eta_min=eta_min),
        ],
        milestones=[warmup],
    )


def robbins_monro_verdict(scheduler: LRScheduler) -> tuple[bool, str]:
    """Whether a schedule meets the Robbins–Monro conditions Σ η_t = ∞ and Σ η_t² < ∞ (hence
    η_t → 0), decided analytically from its class and parameters, and why, in words.

    The verdict is the same whether t counts steps or epochs: an epoch's η repeated over its B
    batches multiplies both sums by B. (The lecture writes the second condition as a ratio of the
    sums; the weaker Σ η_t² / Σ η_t → 0 is what a convergence bound for convex losses needs.)
    """
    if isinstance(scheduler, SequentialLR):  # the last schedule runs forever: it decides the sums
        return robbins_monro_verdict(scheduler._schedulers[-1])
    if isinstance(scheduler, ConstantLR):  # η_t = η₀ once its `total_iters` (0 for ours) have passed
        return False, (
            "the step size stays at η₀ (Σ η_t² = ∞), so minibatch noise keeps θ_t moving around the "
            "minimum; a decaying schedule (schedule=robbins_monro) lets it settle"
        )
    if isinstance(scheduler, StepLR | ExponentialLR):
        gamma = float(scheduler.gamma)
        if gamma == 1:
            return False, "γ = 1 keeps η_t constant: Σ η_t² = ∞"
        return False, (
            f"η_t shrinks geometrically (γ = {gamma:g} < 1): Σ η_t < ∞, so the steps cover a bounded "
            "distance and can stall short of the minimum"
        )
    if isinstance(scheduler, CosineAnnealingLR):
        return False, (
            "a finite-horizon schedule: torch's cosine climbs back after T_max (period 2·T_max) and "
            "stays ≥ eta_min, so η_t does not → 0 and Σ η_t² = ∞"
        )
    if isinstance(scheduler, RobbinsMonroLR):
        return kappa_verdict(scheduler.kappa)
    return False, f"{type(scheduler).__name__} is not one the check knows; no verdict"


def kappa_verdict(kappa: float) -> tuple[bool, str]:
    """η_t = η₀/(1 + t/τ)^κ: Σ η_t = ∞ iff κ ≤ 1 and Σ η_t² < ∞ iff 2κ > 1."""
    if 0.5 < kappa <= 1:
        return True, (
            f"η₀/(1 + t/τ)^κ with κ = {kappa:g} ∈ (0.5, 1]: Σ η_t = ∞ (κ ≤ 1) and Σ η_t² < ∞ (2κ > 1)"
        )
    if kappa <= 0.5:
        return False, (
            f"η₀/(1 + t/τ)^κ with κ = {kappa:g} ≤ 0.5: Σ η_t² = ∞ (2κ ≤ 1), though Σ η_t² / Σ η_t → 0"
        )
    return False, f"η₀/(1 + t/τ)^κ with κ = {kappa:g} > 1: Σ η_t < ∞, the steps stop too soon"
