"""`python -m src.train [group=choice ...] [key=value ...]`: compose → build → fit → report.

Returns the best validation loss, which a Hydra sweeper minimizes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import cli, config, hpo
from src.config import Interval
from src.loop import Callback, FitResult, fit

log = logging.getLogger(__name__)
config.register()


def build(cfg: DictConfig) -> dict[str, Any]:
    """Everything a run needs, from a composed and validated config; nothing is logged yet."""
    config.validate(cfg)
    trainer: config.TrainerConf = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        trainer.progress = False  # a bar per job would only garble a sweep's output
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # for any draw a library makes outside our generator
    dtype, device = getattr(torch, trainer.dtype.value), trainer.device
    data = instantiate(cfg.data, generator=generator).to(dtype=dtype, device=device)
    model = instantiate(cfg.model)(data.n_features, generator=generator)
    model.to(dtype=dtype, device=device)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    schedule = {key: value for key, value in cfg.schedule.items() if key != "interval"}
    scheduler = instantiate(schedule)(optimizer)
    return dict(
        data=data,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        interval=Interval(cfg.schedule.interval),
        trainer=trainer,
        generator=generator,
    )


def summarize(result: FitResult, run_id: str | None) -> None:
    log.info(
        "%d epochs, stopped: %s; best val loss %.4g at epoch %d; test loss %.4g",
        result.epochs,
        result.stop_reason,
        result.best_val_loss,
        result.best_epoch,
        result.test_loss,
    )
    if result.param_error is not None:
        log.info("||theta - theta_hat|| = %.3g", result.param_error)
    if run_id is not None:
        log.info("MLflow run %s", run_id)


def train(
    cfg: DictConfig, callbacks: Sequence[Callback] = (), tags: dict[str, str] | None = None
) -> FitResult:
    parts = build(cfg)
    with instantiate(cfg.tracking, cfg=cfg, tags=tags, _recursive_=False) as tracker:
        result = fit(callbacks=[tracker, *callbacks], **parts)
        tracker.log_result(result)
    summarize(result, tracker.run_id)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    trial = hpo.this_trial()  # the Optuna trial this job runs; a no-op outside an Optuna sweep
    result = train(cfg, callbacks=[trial], tags=trial.tags)
    trial.finish(result)
    return result.best_val_loss


if __name__ == "__main__":
    cli.run(main)
