"""`python -m src.train [group=choice ...] [key=value ...]`: compose → build → fit → report.

Returns the best validation loss, which a Hydra sweeper minimizes (in an Optuna sweep: the
objectives it names, e.g. best_val_loss and wall_time).
"""

from __future__ import annotations

from src import signals

if __name__ == "__main__":  # first: a signal during the imports below (seconds) ends the process
    signals.install(at_once=True)
    import sys

    from src.tracking.sidecar import Sidecar

    Sidecar.prestart(sys.argv[1:])  # MLflow's imports in its own process, beside torch's here

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import cli, config, redaction
from src.config.schemas import Interval
from src.data import Data, check_fit
from src.errors import ConfigError
from src.estimation import inference, reference
from src.jobs import hydra_context
from src.loop import Callback, FitResult, Progress, checkpoint, fit
from src.loop.fast_step import skip_compile_guards
from src.loop.training import Training
from src.schedules import robbins_monro_verdict
from src.sweep import trial as hpo
from src.tracking.uris import tracking_uri

log = logging.getLogger(__name__)
T = TypeVar("T")
CONF = Path(__file__).resolve().parents[1] / "conf"
config.register()


def compose(*overrides: str) -> DictConfig:
    """The config `python -m src.train <overrides>` would run, for notebooks, tests and benchmarks."""
    with hydra.initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return hydra.compose("config", overrides=list(overrides))


def load_data(node: DictConfig, generator: torch.Generator, **extra: Any) -> Data:
    """The data source's Data; a ConfigError it raises (a bad file or column) comes out as itself,
    not wrapped in Hydra's InstantiationException, so the CLI prints just its line."""
    try:
        return instantiate(node, generator=generator, **extra)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


def checked(group: str, make: Callable[[], T]) -> T:
    """torch's own argument checks (what the schemas do not cover, e.g. a user's own YAML) as a
    config error naming the group."""
    try:
        return make()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{group}: {str(exc).strip().splitlines()[0]}") from exc


def build(cfg: DictConfig) -> Training:
    """Everything a run needs, from a composed and validated config; nothing is logged yet."""
    config.validate(cfg)
    trainer: config.TrainerConf = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        trainer.progress = False  # a bar per job would only garble a sweep's output
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # for any draw a library makes outside our generator
    dtype, device = getattr(torch, trainer.dtype.value), trainer.device
    cluster = {"cluster": cfg.inference.cluster} if cfg.inference.cluster else {}
    data = load_data(cfg.data, generator, **cluster).to(dtype=dtype, device=device)
    explain_splits(data)
    model: torch.nn.Module = instantiate(cfg.model)(data.n_features, generator=generator)
    model.to(dtype=dtype, device=device)
    check_fit(data, model, trainer.batch_size)
    l2: float = cfg.regularization.l2
    inference.check(cfg.inference.cov, model, l2)
    exact = reference.exact(model, data.train, l2)
    skip_compile_guards()  # descentlab never compiles: no torch._dynamo import (≈1.8 s) for nothing
    optimizer = checked("optimizer", lambda: instantiate(cfg.optimizer)(model.parameters()))
    schedule = {key: value for key, value in cfg.schedule.items() if key != "interval"}
    return Training(
        model=model,
        optimizer=optimizer,
        scheduler=checked("schedule", lambda: instantiate(schedule)(optimizer)),
        interval=Interval(cfg.schedule.interval),
        data=data,
        reference=exact,
        trainer=trainer,
        generator=generator,
        l2=l2,
    )


def explain_splits(data: Data) -> None:
    """Say what an empty validation or test split means, once, at the start."""
    if len(data.val) == 0:
        log.info("no validation split: early stopping and best_val_loss use the training data loss")
    if len(data.test) == 0:
        log.info(
            "no test split: no test_loss. %s",
            "This is estimation on the full sample (every row fits the coefficients), not prediction"
            if len(data.val) == 0
            else "Nothing is held out to judge prediction",
        )


def summarize(
    result: FitResult,
    run_id: str | None,
    estimates: inference.Estimates | None = None,
    validated: bool = True,
    where: str | None = None,
) -> None:
    test = "no test split" if math.isnan(result.test_loss) else f"test loss {result.test_loss:.4g}"
    best = (  # a diverged epoch is never the best one: with none before it, θ₀ is kept
        f"best {'val' if validated else 'train'} loss {result.best_val_loss:.4g} at epoch {result.best_epoch}"
        if result.best_epoch
        else "every epoch diverged, so the initial parameters are kept"
    )
    log.info(
        "%d epoch%s, stopped: %s; %s; %s",
        result.epochs,
        "" if result.epochs == 1 else "s",
        result.stop_reason,
        best,
        test,
    )
    if result.param_error is not None:
        log.info("||theta - theta_hat|| = %.3g", result.param_error)
    if result.reference_loss is not None and result.history:
        last = result.history[-1]
        log.info("last epoch: opt_gap = %.3g, ||theta - theta*|| = %.3g", last.opt_gap, last.ref_error)
    if estimates is not None:
        log.info("estimates:\n%s", estimates.format())
        for warning in estimates.warnings:
            log.warning(warning.removeprefix("WARNING: "))
    if run_id is not None:
        log.info("MLflow run %s", run_id)
    if where is not None:
        log.info("see it: %s", where)


def resumed(
    cfg: DictConfig, tags: dict[str, str]
) -> tuple[DictConfig, dict[str, Any] | None, dict[str, str]]:
    """The config to run, the snapshot to continue from (`resume=`, or a requeued SLURM job's own)
    and the run's tags."""
    _, overrides, run_dir = hydra_context()
    resume = cfg.resume or checkpoint.requeued_snapshot(run_dir)
    if not resume:
        return cfg, None, tags
    uri = tracking_uri(cfg.tracking.get("uri"))
    source = checkpoint.locate(str(resume), checkpoint.SNAPSHOT, checkpoint.SNAPSHOT_ARTIFACT, uri, "resume")
    state = checkpoint.load(source)
    cfg = checkpoint.resumed_config(state, cfg, overrides, config.Config)
    return cfg, state, tags | {"resumed_from": str(resume)}


def load_warm_start(cfg: DictConfig, model: torch.nn.Module) -> None:
    """`warm_start=<run dir or run id>`: begin from that run's final parameters."""
    try:
        model.load_state_dict(
            checkpoint.warm_start_parameters(cfg.warm_start, tracking_uri(cfg.tracking.get("uri")))
        )
    except RuntimeError as exc:  # other parameter names or shapes
        reason = str(exc).strip().splitlines()[-1].strip()
        message = f"warm_start={cfg.warm_start}: its parameters do not fit this model: {reason}"
        raise ConfigError(message) from exc


def step_size_check(run: Training) -> dict[str, str]:
    """Whether η_t meets the Robbins–Monro conditions, logged and as tags: only where the gradients
    are noisy (minibatches, or rows drawn with replacement); full-batch GD, Newton and L-BFGS have
    no noise for a decaying η_t to average out."""
    if not run.stochastic:
        return {}
    satisfied, reason = robbins_monro_verdict(run.scheduler)
    verdict = "hold" if satisfied else "do not hold"
    log.info("Robbins-Monro conditions (Σ η_t = ∞, Σ η_t² < ∞) %s: %s", verdict, reason)
    return {"robbins_monro": str(satisfied).lower(), "robbins_monro.reason": reason}


def train(
    cfg: DictConfig, callbacks: Sequence[Callback] = (), tags: dict[str, str] | None = None
) -> FitResult:
    """One run. It owns its stop request (`Training.stop`, src/signals.py): a signal is honoured at the
    first step, after each step and evaluation, and between the stages around training; MLflow's run
    ends KILLED. A signal while the run is set up is carried into it."""
    signals.check()
    cfg, state, tags = resumed(cfg, dict(tags or {}))
    run = build(cfg)
    with signals.scoped(run.stop):
        run.stop.check()
        return _train(cfg, run, state, callbacks, tags | step_size_check(run))


def _train(
    cfg: DictConfig,
    run: Training,
    state: dict[str, Any] | None,
    callbacks: Sequence[Callback],
    tags: dict[str, str],
) -> FitResult:
    progress = checkpoint.restore(state, run) if state is not None else None
    if cfg.warm_start and state is None:  # a resumed warm start continues from its snapshot
        load_warm_start(cfg, run.model)
        tags["warm_start_from"] = str(cfg.warm_start)
    run_dir = hydra_context()[2]
    snapshot_path = run_dir / checkpoint.SNAPSHOT if run_dir is not None else None
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    resume_run_id = state["mlflow_run_id"] if state is not None else None
    tracker_args = dict(tags=tags, resume_run_id=resume_run_id, snapshot_path=snapshot_path)
    run.stop.check()
    with instantiate(cfg.tracking, cfg=cfg, **tracker_args, _recursive_=False) as tracker:
        if state is None:
            tracker.log_dataset(run.data)

        def snapshot(p: Progress) -> None:
            if snapshot_path is not None:
                checkpoint.save(checkpoint.capture(p, run, tracker.run_id, config_yaml), snapshot_path)
            tracker.flush()  # MLflow then holds exactly the epochs the snapshot holds

        result = fit(run, callbacks=[tracker, *callbacks], progress=progress, snapshot=snapshot)
        tracker.log_result(result, run.model)  # first: MLflow draws and writes while we estimate
        estimates = inference.estimate(
            run.model, run.data, run.reference, cfg.inference.cov, run.l2, result.stop_reason
        )
        if estimates is None:
            log.info("no table of estimates: %s", inference.unavailable(run.model, run.l2))
        else:
            tracker.log_estimates(estimates)
        run.stop.check()
    validated = len(run.data.val) > 0
    summarize(result, tracker.run_id, estimates, validated=validated, where=tracker.where)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | list[float]:
    redaction.install_log_redaction()  # also where a launcher runs the job in another process
    trial = hpo.this_trial()  # the Optuna trial this job runs; a no-op outside an Optuna sweep
    result = train(cfg, callbacks=[trial], tags=trial.tags)
    trial.finish(result)
    return trial.objective(result)


if __name__ == "__main__":
    cli.run(main)
