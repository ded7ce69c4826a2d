"""`python -m src.train [group=choice ...] [key=value ...]`: compose → build → fit → report.

Returns the best validation loss, which a Hydra sweeper minimizes (in an Optuna sweep: the
objectives it names, e.g. best_val_loss and wall_time).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the process's start, as near as Python lets us: setup_time counts from it

from src import signals

if __name__ == "__main__":  # first: a signal during the imports below (seconds) ends the process
    signals.install(at_once=True)
    import sys

    from src import cli as precheck

    precheck.precheck(sys.argv[1:])  # the config, checked before torch, MLflow and Optuna: < 1 s
    from src.tracking.sidecar import Sidecar

    Sidecar.prestart(sys.argv[1:])  # MLflow's imports in its own process, beside torch's here

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
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
from src.data.splits import whitened, with_frequencies
from src.errors import ConfigError
from src.estimation import inference, reference, report
from src.jobs import hydra_context
from src.loop import Callback, FitResult, Progress, checkpoint, fit
from src.loop.fast_step import skip_compile_guards
from src.loop.training import Training
from src.models import LinearRegression, LogisticRegression
from src.schedules import robbins_monro_verdict
from src.sweep import trial as hpo
from src.tracking.tracker import MlflowTracker, NullTracker, make_tracker
from src.tracking.uris import tracking_uri

log = logging.getLogger(__name__)
T = TypeVar("T")
Tracker = MlflowTracker | NullTracker
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
    data = weighted(data, model)
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


def weighted(data: Data, model: torch.nn.Module) -> Data:
    """data.weights for this model: weighted least squares is least squares on rows times √w (as
    statsmodels' WLS fits); a weighted logit's target carries each row's frequency weight beside its
    0/1 outcome (src.models.outcome), as statsmodels' GLM freq_weights; the MLP takes no weights."""
    if data.weighted_by is None:
        return data
    if type(model) is LinearRegression:
        log.info("weighted least squares: each row times sqrt(%s), as statsmodels' WLS", data.weighted_by)
        return whitened(data)
    if isinstance(model, LogisticRegression):
        log.info("weighted logit: %s are frequency weights (statsmodels' GLM freq_weights)", data.weighted_by)
        return with_frequencies(data)
    raise ConfigError(
        f"data.weights={data.weighted_by!r} is for model=linear (WLS) and model=logistic (frequency "
        f"weights) only; {type(model).__name__} takes no weights: leave data.weights unset"
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
    run_dir: Path | None = None,
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
        log.info(
            "distance to the true theta the data were simulated with: ||theta - theta_hat|| = %.3g",
            result.param_error,
        )
    if result.reference_loss is not None and result.history:
        last = result.history[-1]
        log.info(
            "last epoch: loss above the exact minimum L*, opt_gap = %.3g; distance to the exact "
            "minimizer theta*, ||theta - theta*|| = %.3g",
            last.opt_gap,
            last.ref_error,
        )
    if estimates is not None:
        log.info("estimates:\n%s", report.text(estimates))
        for warning in estimates.warnings:
            log.warning(warning.removeprefix("WARNING: "))
    if run_dir is not None:
        files = f" ({', '.join(report.files(estimates))}, full precision in the csv)" if estimates else ""
        log.info("run directory: %s%s", run_dir, files)
    if run_id is not None:
        log.info("MLflow run %s", run_id)
    if where is not None:
        log.info("see it: %s", where)


def notes(run: Training, result: FitResult) -> list[str]:
    """What the table's parameters are, where they are not simply the estimator on every row."""
    data, said = run.data, []
    if len(data.val) or len(data.test):
        n = len(data.train) + len(data.val) + len(data.test)
        which = (
            f"the parameters of epoch {result.best_epoch}, the best on the validation split (early stopping)"
            if len(data.val)
            else "the parameters the run ended with"
        )
        said.append(
            f"NOTE: {which}, fitted on the {len(data.train)} training rows of {n}: not the estimator on "
            "the whole sample; for that, +experiment=estimate (data.train_prop=1.0 data.val_prop=0.0)"
        )
    return said


def resumed(
    cfg: DictConfig, tags: dict[str, str]
) -> tuple[DictConfig, dict[str, Any] | None, dict[str, str]]:
    """The config to run, the snapshot to continue from (`resume=`; `resume=auto` or a requeued SLURM
    job: its run dir's own, if it has one) and the run's tags."""
    _, overrides, run_dir = hydra_context()
    resume = checkpoint.own_snapshot(run_dir) if cfg.resume == checkpoint.AUTO else cfg.resume
    resume = resume or checkpoint.requeued_snapshot(run_dir)
    if not resume:
        return cfg, None, tags
    uri = tracking_uri(cfg.tracking.get("uri"))
    source = checkpoint.locate(str(resume), checkpoint.SNAPSHOT, checkpoint.SNAPSHOT_ARTIFACT, uri, "resume")
    state = checkpoint.load(source)
    cfg = checkpoint.resumed_config(state, cfg, overrides, config.Config)
    progress = state["progress"]
    inside = f", step {len(progress['sizes'])} of epoch {progress['epoch'] + 1}" if progress["sizes"] else ""
    log.info("resumed at epoch %d%s from %s", progress["epoch"], inside, source)
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


_first_job = [True]  # whether the next job is this process's first: its setup began with the process


def job_started() -> float:
    """When this job's setup began: the process's start for its first job (imports included), the
    call for each later one (a --multirun runs its jobs one after another in one process)."""
    first, _first_job[0] = _first_job[0], False
    return STARTED if first else time.perf_counter()


def train(
    cfg: DictConfig, callbacks: Sequence[Callback] = (), tags: dict[str, str] | None = None
) -> FitResult:
    """One run. It owns its stop request (`Training.stop`, src/signals.py): a signal is honoured at the
    first step, after each step and evaluation, and between the stages around training; MLflow's run
    ends KILLED. A signal while the run is set up is carried into it."""
    since = job_started()
    signals.check()
    cfg, state, tags = resumed(cfg, dict(tags or {}))
    run = build(cfg)
    with signals.scoped(run.stop):
        try:
            run.stop.check()
            return _train(cfg, run, state, callbacks, tags | step_size_check(run), since)
        except KeyboardInterrupt as exc:  # a Stopped: say where the run is and how to go on
            exc.hint = resume_hint(hydra_context()[2])  # type: ignore[attr-defined]
            raise


def settings(cfg: DictConfig, run: Training) -> inference.Settings:
    """What the run's table of estimates needs to know of how it was fitted."""
    return inference.Settings(
        optimizer=type(run.optimizer).__name__,
        dtype=run.trainer.dtype.value,
        stopping_threshold=run.trainer.stopping_threshold,
        min_digits=cfg.inference.min_digits,
    )


def resume_hint(run_dir: Path | None) -> str:
    """What cli prints after `interrupted`: the run directory and the command that continues it."""
    if run_dir is None:
        return ""
    if not (run_dir / checkpoint.SNAPSHOT).is_file():
        return f"; run directory: {run_dir} (no snapshot yet: nothing to resume)"
    return f"; run directory: {run_dir}; continue it with: python -m src.train resume={run_dir}"


def _train(
    cfg: DictConfig,
    run: Training,
    state: dict[str, Any] | None,
    callbacks: Sequence[Callback],
    tags: dict[str, str],
    since: float,
) -> FitResult:
    progress = checkpoint.restore(state, run) if state is not None else None
    if cfg.warm_start and state is None:  # a resumed warm start continues from its snapshot
        load_warm_start(cfg, run.model)
        tags["warm_start_from"] = str(cfg.warm_start)
    run_dir = hydra_context()[2]
    if run_dir is not None:
        log.info("run directory: %s", run_dir)
    snapshot_path = run_dir / checkpoint.SNAPSHOT if run_dir is not None else None
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    resume_run_id = state["mlflow_run_id"] if state is not None else None
    tracker_args = dict(tags=tags, resume_run_id=resume_run_id, snapshot_path=snapshot_path)
    run.stop.check()
    with make_tracker(cfg, **tracker_args) as tracker:
        if state is None:
            tracker.log_dataset(run.data)

        def snapshot(p: Progress) -> None:
            if snapshot_path is not None:
                checkpoint.save(checkpoint.capture(p, run, tracker.run_id, config_yaml), snapshot_path)
            tracker.flush()  # MLflow then holds exactly the epochs the snapshot holds

        tracker.ready()  # MLflow's start-up is setup: the run and its dataset exist before the first step
        setup_time = time.perf_counter() - since
        result = fit(run, callbacks=[tracker, *callbacks], progress=progress, snapshot=snapshot)
        result.setup_time = setup_time
        estimates = record(cfg, run, result, tracker, run_dir)
        run.stop.check()
    validated = len(run.data.val) > 0
    summarize(result, tracker.run_id, estimates, validated, tracker.where, run_dir)
    return result


def record(
    cfg: DictConfig, run: Training, result: FitResult, tracker: Tracker, run_dir: Path | None
) -> inference.Estimates | None:
    """A trained run's outcome to its tracker and run dir: the result, then the table of estimates."""
    tracker.log_result(result, run.model)  # first: MLflow draws and writes while we estimate
    estimates = inference.estimate(
        run.model, run.data, run.reference, cfg.inference.cov, run.l2, result.stop_reason,
        settings(cfg, run),
    )  # fmt: skip
    if estimates is None:
        log.info("no table of estimates: %s", inference.unavailable(run.model, run.l2))
        return None
    estimates = replace(estimates, footer=[*notes(run, result), *estimates.footer])
    tracker.log_estimates(estimates)
    if run_dir is not None:
        report.write(estimates, run_dir)
    return estimates


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | list[float]:
    redaction.install_log_redaction()  # also where a launcher runs the job in another process
    trial = hpo.this_trial()  # the Optuna trial this job runs; a no-op outside an Optuna sweep
    result = train(cfg, callbacks=[trial], tags=trial.tags)
    trial.finish(result)
    return trial.objective(result)


if __name__ == "__main__":
    cli.run(main)
