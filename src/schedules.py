"""Learning-rate schedules torch lacks, as torch.optim.lr_scheduler classes."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


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
