"""One sweep: ask the study for trials, launch them as Hydra jobs, tell their outcomes.

The budget is the study's: the sweep ends when the study holds `n_trials` finished trials
(COMPLETE, PRUNED or FAIL, a killed process's trial included), however many processes share it.
Each process counts and asks under a lock, so together they never start more than that. While a
trial is in flight its process marks it alive every `heartbeat_interval` seconds (user attr
`heartbeat`); a RUNNING trial with no mark for `grace_period` seconds belongs to a process that
died, and whoever sees it first ends it FAIL. Optuna's own heartbeat exists only for RDB storages,
not for the journal file used by default, hence this one, the same for every storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from src import signals
from src.tracking import SWEPT_ENV

from . import _repeats, _report, _space, _storage, _trial

if TYPE_CHECKING:
    from .sweeper import DescentlabOptunaSweeper

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class SweepFailed(RuntimeError):
    """More trials failed than hydra.sweeper.max_failure_rate allows."""


def default_study_name(job_name: str, overrides: Sequence[str], custom_search_space: str | None) -> str:
    """`<job>-<digest of the search space and fixed overrides>`: the same command, the same study."""
    key = "\n".join([*sorted(overrides), custom_search_space or ""])
    return f"{job_name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def describe(obj: object) -> str:
    return type(obj).__name__


class Sweep:
    def __init__(self, sweeper: DescentlabOptunaSweeper, arguments: list[str]) -> None:
        assert sweeper.config is not None, "Hydra calls setup() before sweep()"
        self.sweeper, self.config, self.launcher = sweeper, sweeper.config, sweeper.launcher
        overrides = [f"{key!s}={value}" for key, value in sweeper.params.items()] + list(arguments)
        self.space, self.fixed = _space.parse(overrides)
        self.extend: Callable[[DictConfig, Trial], None] | None = (
            get_method(sweeper.custom_search_space) if sweeper.custom_search_space else None
        )
        self.storage_path = _storage.resolve(sweeper.storage, self.config.hydra.runtime.cwd)
        self.storage = _storage.open_storage(self.storage_path)
        self.study_name = sweeper.study_name or default_study_name(
            self.config.hydra.job.name, overrides, sweeper.custom_search_space
        )
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            directions=sweeper.directions,
            load_if_exists=True,
        )
        if len(sweeper.directions) == 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["best_val_loss"])  # what the job returns; Optuna's plots say so
        self.n_trials = sweeper.n_trials
        self.study = optuna.load_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self._sampler(len(study.trials)),
            pruner=instantiate(sweeper.pruner),
        )
        self.in_flight: dict[int, Trial] = {}  # by number: the trials this process runs
        self.outcomes: Counter[TrialState] = Counter()  # of trials this process finished
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = None if sweeper.timeout is None else time.monotonic() + sweeper.timeout
        self.parent = _report.ParentRun(self.config, self.study_name)

    def _sampler(self, n_existing: int) -> optuna.samplers.BaseSampler:
        cfg = OmegaConf.to_container(self.sweeper.sampler, resolve=True)
        assert isinstance(cfg, dict)
        if cfg.get("seed") is not None and n_existing:
            # A resumed study (or a second worker) must not replay the first process's draws.
            cfg["seed"] = int(cfg["seed"]) + n_existing
        sampler = instantiate(cfg)
        if isinstance(sampler, optuna.samplers.BaseSampler):
            return sampler
        grid = _space.grid(self.space)  # GridSampler is a partial waiting for the grid
        self.n_trials = min(self.n_trials, math.prod(len(values) for values in grid.values()))
        return sampler(grid)

    # ------------------------------------------------------------------------------------ run
    def run(self) -> None:
        parallel = self.sweeper.n_jobs > 1 and not isinstance(self.launcher, BasicLauncher)
        log.info(
            "Optuna study %s in %s: %s, %s, %s; n_trials=%d for the study, %d in flight%s",
            self.study_name,
            _storage.redact(self.storage_path),
            describe(self.study.sampler),
            describe(self.study.pruner),
            "/".join(self.sweeper.directions),
            self.n_trials,
            self.sweeper.n_jobs if parallel else 1,
            "" if parallel or self.sweeper.n_jobs == 1 else " (the basic launcher runs jobs one by one)",
        )
        self.parent.start()
        heartbeat = threading.Thread(target=self._heartbeat, name="optuna-heartbeat", daemon=True)
        heartbeat.start()
        try:
            if parallel:
                self._run_in_threads(self.sweeper.n_jobs)
            else:
                self._work()
            if not self.stop.is_set():
                self._wait_for_other_processes()
        except BaseException as exc:
            self.stop.set()
            self._abandon(exc)
            raise
        finally:
            self.stop.set()
            heartbeat.join()
        self._finish()

    def _run_in_threads(self, n: int) -> None:
        """n workers, each asking for its next trial as soon as its job is back: a trial pruned
        early frees its slot at once instead of waiting for the slowest of a batch."""
        pool = ThreadPoolExecutor(n, thread_name_prefix="optuna-worker")
        try:
            futures = [pool.submit(self._work) for _ in range(n)]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # re-raise a worker's error here
            wait(futures)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _work(self) -> None:
        while not self.stop.is_set():
            signals.check()  # a safe point between trials for a signal (src/signals.py)
            trial = self._ask()
            if trial is None:
                return
            self._run(trial)

    def _ask(self) -> Trial | None:
        """The next trial, or None once the study's budget is used or this process must stop."""
        with _storage.budget_lock(self.storage, self.storage_path, self.study_name):
            self._fail_stale()
            started = len(self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
            if started >= self.n_trials or self.stop.is_set():
                return None
            if self.deadline is not None and time.monotonic() > self.deadline:
                log.info("timeout of %s s reached: no new trial", self.sweeper.timeout)
                return None
            trial = self.study.ask(self.space)
            trial.set_user_attr("heartbeat", time.time())
            with self.lock:
                self.in_flight[trial.number] = trial
        if self.extend is not None:
            self.extend(self.config, trial)
        return trial

    def _run(self, trial: Trial) -> None:
        overrides = [
            *self.fixed.values(),
            *(f"{name}={_space.override_value(value)}" for name, value in trial.params.items()),
            *self.parent.env_overrides(),
            f"++hydra.job.env_set.{_trial.STUDY_ENV}={_space.override_value(self.study_name)}",
            f"++hydra.job.env_set.{_trial.TRIAL_ENV}={trial._trial_id}",
            f"++hydra.job.env_set.{SWEPT_ENV}={_space.override_value(self._swept(trial))}",
        ]
        key = (self.study_name, trial._trial_id)
        _trial.live[key] = trial  # a job in this process uses the live trial
        try:
            ret = _repeats.launch(self, trial, overrides)
        finally:
            _trial.live.pop(key, None)
        self.parent.link(trial)
        state, values, reason = self._judge(trial, ret)
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        with self.lock:
            del self.in_flight[trial.number]
            self.outcomes[state] += 1
        self._tell(trial, values, state)
        self._log_outcome(trial.number, state, values, reason, trial.params)
        self.parent.tag_child(trial.number, state.name)
        self._check_failure_rate()

    def _swept(self, trial: Trial) -> str:
        """The keys that name the trial's runs: its parameters, and `seed` with repeats."""
        return ",".join([*trial.params, *(["seed"] if self.sweeper.repeats > 1 else [])])

    def _tell(self, trial: Trial, values: list[float] | None, state: TrialState) -> None:
        try:
            self.study.tell(trial, values=values, state=state, skip_if_finished=True)
        except RuntimeError as error:
            # GridSampler calls study.stop() once its grid is used up, which only works inside
            # study.optimize; the trial is told by then, and the budget ends the sweep anyway.
            if "Study.stop" not in str(error):
                raise

    def _judge(self, trial: Trial, ret: JobReturn) -> tuple[TrialState, list[float] | None, str | None]:
        """COMPLETE with the returned value(s); PRUNED when the job stopped for the pruner; FAIL
        with a reason when the job raised, said why it failed, or returned no finite number."""
        if ret.status != JobStatus.COMPLETED:
            error = ret._return_value  # reading .return_value would re-raise it
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return TrialState.FAIL, None, f"{type(error).__name__}: {first_line}"[:1000]
        attrs = self._fresh(trial).user_attrs  # what the job wrote, maybe from another process
        if attrs.get("fail_reason"):
            return TrialState.FAIL, None, str(attrs["fail_reason"])
        if attrs.get("stop_reason") == "pruned":
            return TrialState.PRUNED, None, None
        value = ret.return_value
        try:
            values = [float(v) for v in value] if len(self.sweeper.directions) > 1 else [float(value)]
        except (TypeError, ValueError):
            return TrialState.FAIL, None, f"the job returned {value!r}, not a number per objective"
        if len(values) != len(self.sweeper.directions) or not all(map(math.isfinite, values)):
            return TrialState.FAIL, None, f"the job returned {value!r}, not a finite number per objective"
        return TrialState.COMPLETE, values, None

    def _fresh(self, trial: Trial) -> FrozenTrial:
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)

    def _log_outcome(
        self, number: int, state: TrialState, values: list[float] | None, reason: str | None, params: dict
    ) -> None:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        detail = {
            TrialState.COMPLETE: f"value {', '.join(f'{v:.4g}' for v in values or [])}",
            TrialState.PRUNED: "pruned",
            TrialState.FAIL: f"failed: {reason}",
        }[state]
        log.info("trial %d %s; %s", number, detail, shown)

    def _check_failure_rate(self) -> None:
        with self.lock:
            if self._failure_rate_exceeded():
                self.stop.set()  # the workers start nothing more; _finish raises SweepFailed

    # ----------------------------------------------------------------------------- liveness
    def _heartbeat(self) -> None:
        while not self.stop.wait(self.sweeper.heartbeat_interval):
            with self.lock:
                trials = list(self.in_flight.values())
            for trial in trials:
                with contextlib.suppress(RuntimeError):  # told finished meanwhile
                    trial.set_user_attr("heartbeat", time.time())

    def _fail_stale(self) -> None:
        """End FAIL the RUNNING trials of processes that stopped marking them alive."""
        now = time.time()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            assert trial.datetime_start is not None
            seen = float(trial.user_attrs.get("heartbeat", trial.datetime_start.timestamp()))
            if trial.number in self.in_flight or now - seen <= self.sweeper.grace_period:
                continue
            log.warning(
                "trial %d: no heartbeat for %.0f s, its process is gone; ending it FAIL",
                trial.number,
                now - seen,
            )
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            self.parent.tag_child(trial.number, TrialState.FAIL.name, killed=True)

    def _wait_for_other_processes(self) -> None:
        """Stay until trials other processes run are done (or found stale), so that the summary
        below is the whole study's and a killed process's trial does not stay RUNNING."""
        waiting = False
        while True:
            with _storage.budget_lock(self.storage, self.storage_path, self.study_name):
                self._fail_stale()
                running = [t.number for t in self.study.get_trials(states=(TrialState.RUNNING,))]
            if not running:
                return
            if not waiting:
                log.info("waiting for trials %s, running in other processes", running)
                waiting = True
            signals.check()
            time.sleep(min(self.sweeper.heartbeat_interval, 5.0))

    def _abandon(self, exc: BaseException) -> None:
        """On an interrupt or error in the sweeper: end its in-flight trials FAIL, not RUNNING."""
        with self.lock:
            trials = list(self.in_flight.values())
        for trial in trials:
            try:
                trial.set_user_attr("fail_reason", f"sweep stopped: {type(exc).__name__}")
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception as error:  # the storage itself may be what failed
                log.warning("trial %d left RUNNING: %s", trial.number, error)

    # ------------------------------------------------------------------------------- results
    def _finish(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts = Counter(t.state.name.lower() for t in trials if t.state in FINISHED)
        summary = _report.summarize(self.study, counts)
        log.info("study %s: %s", self.study_name, summary)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        _report.save_results(self.study, self.storage_path, counts, sweep_dir / "optimization_results.yaml")
        plots = _report.save_plots(self.study, sweep_dir / "optuna_plots")
        self.parent.finish(self.study, self.storage_path, counts, plots)
        if self._failure_rate_exceeded():
            fails, done = self.outcomes[TrialState.FAIL], sum(self.outcomes.values())
            raise SweepFailed(
                f"{fails} of {done} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.sweeper.max_failure_rate} allows"
            )

    def _failure_rate_exceeded(self) -> bool:
        done = sum(self.outcomes.values())
        return bool(done) and self.outcomes[TrialState.FAIL] / done > self.sweeper.max_failure_rate
