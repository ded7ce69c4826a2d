"""A small objective of our own for hydra-optuna-sweeper's documented examples (its example/
folder): `python tests/sphere/app.py --multirun --config-name <example>`; each config in conf/ is
one of upstream's example configs as its documentation shows it."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(version_base=None, config_path="conf", config_name="sphere")
def objective(cfg: DictConfig) -> float | tuple[float, float]:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    x, y = float(cfg.x), float(cfg.y)
    if cfg.objective == "binh_korn":  # upstream's multi-objective example
        return 4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2
    if cfg.objective == "sphere4":  # upstream's custom-search-space example
        return float(cfg.w) ** 2 + x**2 + y**2 + float(cfg.z) ** 2
    return x**2 + y**2


def configure(cfg: DictConfig, trial: Trial) -> None:
    """custom_search_space: z within max_z_difference_from_x of x, and a new key w."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    objective()
