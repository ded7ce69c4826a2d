"""Where configs written before src/sweep/spaces.py name `src.sweeps.optimizer_choice`."""

from src.sweep.spaces import LR_RANGES, optimizer_choice

__all__ = ["LR_RANGES", "optimizer_choice"]
