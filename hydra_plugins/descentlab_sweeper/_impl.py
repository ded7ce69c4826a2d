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
import logging
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig
from optuna.trial import Trial, TrialState

from src import signals
from src.jobs import ENV_SET, SWEPT_ENV
from src.sweep import studies
from src.sweep import trial as hpo

from . import _identity, _outcome, _repeats, _report, _samplers, _space, _storage, _warm
from .config import UPSTREAM_NAME, upstream_installed

if TYPE_CHECKING:
    from ._plan import Plan
    from .sweeper import DescentlabOptunaSweeper

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class SweepFailed(RuntimeError):
    """More trials failed than hydra.sweeper.max_failure_rate allows."""


def describe(obj: object) -> str:
    return type(obj).__name__


def conventions(sweeper: DescentlabOptunaSweeper, fresh: bool) -> str:
    """The sweep's first line: which meaning its parameters and budget have."""
    if sweeper.range_stop_included:
        ranges = "range(a, b) includes b, as in hydra-optuna-sweeper"
    else:
        ranges = "range(a, b) excludes b, as in Hydra's basic sweeper"
    if sweeper.max_failure_rate >= 1:
        failures = "failed trials are survived (max_failure_rate=1.0)"
    else:
        failures = f"the sweep stops once more than {sweeper.max_failure_rate:g} of its trials fail"
    if fresh:
        budget = f"n_trials={sweeper.n_trials} for this command's own fresh study (storage: null)"
    else:
        budget = f"n_trials={sweeper.n_trials} counts the whole study, which the same command resumes"
    return f"hydra/sweeper={sweeper.name}: {ranges}; {budget}; {failures}"


class Sweep:
    def __init__(self, sweeper: DescentlabOptunaSweeper, plan: Plan) -> None:
        assert sweeper.config is not None, "Hydra calls setup() before sweep()"
        self.sweeper, self.config, self.launcher = sweeper, sweeper.config, sweeper.launcher
        log.info(conventions(sweeper, plan.fresh))
        if upstream_installed():
            log.info(
                "hydra-optuna-sweeper is installed too; hydra/sweeper=%s runs descentlab's sweeper, "
                "hydra/sweeper=%s runs the upstream one",
                sweeper.name,
                UPSTREAM_NAME,
            )
        self.plan, self.objectives = plan, plan.objectives
        self.space, self.fixed = plan.space.distributions, plan.space.fixed
        self.extend: Callable[[DictConfig, Trial], None] | None = (
            get_method(sweeper.custom_search_space) if sweeper.custom_search_space else None
        )
        self.storage_path, self.study_name = plan.storage, plan.study_name
        if plan.fresh:  # storage null: this command's own study; an older one in the sweep dir goes
            Path(self.storage_path).unlink(missing_ok=True)
        self.storage = studies.open_storage(self.storage_path)
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            directions=self.objectives.directions,  # type: ignore[arg-type]  # checked: minimize/maximize
            load_if_exists=True,
        )
        _identity.record(study, plan.identity)  # checked against this sweep in _plan.check
        if study.metric_names is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names is "experimental"
                study.set_metric_names(self.objectives.names)
        self.n_trials = plan.n_trials
        self.seeds = _repeats.seeds(int(self.config.get("seed") or 0), sweeper.repeats)
        self.study = optuna.load_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=_samplers.build(sweeper.sampler, plan, len(study.trials)),
            pruner=instantiate(sweeper.pruner),
        )
        self.last_failure = ""  # the latest failed trial's reason, for the failure-rate error
        self.in_flight: dict[int, Trial] = {}  # by number: the trials this process runs
        self.outcomes: Counter[TrialState] = Counter()  # of trials this process finished
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = None if sweeper.timeout is None else time.monotonic() + sweeper.timeout
        self.runs = _report.StudyRuns(self.config, self.study_name)
        if plan.enqueue or plan.warm_source is not None:
            with _storage.budget_lock(self.storage, self.storage_path, self.study_name):
                self._warm_start()

    def _warm_start(self) -> None:
        if self.plan.warm_source is not None:
            _warm.warm_start(self.study, self.plan.warm_source, self.space, self.extend is not None)
        _warm.enqueue(self.study, self.plan.enqueue)

    # ------------------------------------------------------------------------------------ run
    def run(self) -> None:
        # hydra/launcher=batched runs its jobs in this process, as the basic launcher does (threads
        # would share its Hydra context and cwd); with trials_together it takes n_jobs trials at once.
        in_process = getattr(self.launcher, "runs_in_this_process", isinstance(self.launcher, BasicLauncher))
        batches = bool(getattr(self.launcher, "trains_trials_together", False))
        together = self.sweeper.n_jobs > 1 and batches and len(self.seeds) == 1
        parallel = self.sweeper.n_jobs > 1 and not in_process
        for line in _report.opening_lines(self.study, self.storage_path):  # upstream's first lines
            log.info(line)
        log.info(
            "Optuna study %s in %s: %s, %s, %s; n_trials=%d for the study, %d in flight%s",
            self.study_name,
            studies.redact(self.storage_path),
            describe(self.study.sampler),
            describe(self.study.pruner),
            self.objectives.describe(),
            self.n_trials,
            in_flight := self.sweeper.n_jobs if parallel or together else 1,
            "" if in_flight == self.sweeper.n_jobs else " (its launcher runs jobs one by one)",
        )
        self.runs.start()
        heartbeat = threading.Thread(target=self._heartbeat, name="optuna-heartbeat", daemon=True)
        heartbeat.start()
        try:
            if together:
                self._work_in_batches(self.sweeper.n_jobs)
            elif parallel:
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

    def _work_in_batches(self, n: int) -> None:
        """n trials asked together and launched as one list of jobs, which the launcher trains as one
        batch where they qualify (docs/batched.md); each trial is told its own outcome."""
        while not self.stop.is_set():
            signals.check()
            trials: list[Trial] = []
            while len(trials) < n and (trial := self._ask()) is not None:
                trials.append(trial)
            if not trials:
                return
            numbers = [t.number for t in trials]
            if numbers != list(range(numbers[0], numbers[0] + len(trials))):
                for trial in trials:  # another process asked in between: a job's number is its trial's
                    self._run(trial)
                continue
            keys = [(self.study_name, t._trial_id) for t in trials]
            hpo.live.update(zip(keys, trials, strict=True))
            try:
                jobs = [self._overrides(t) for t in trials]
                returns = self.launcher.launch(jobs, initial_job_idx=numbers[0])
            finally:
                for key in keys:
                    hpo.live.pop(key, None)
            for trial, ret in zip(trials, returns, strict=True):
                self._settle(trial, ret)

    def _ask(self) -> Trial | None:
        """The next trial, or None once the study's budget is used or this process must stop."""
        with _storage.budget_lock(self.storage, self.storage_path, self.study_name):
            self._fail_stale()
            trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            started = sum(not _warm.copied(t) for t in trials)
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

    def _overrides(self, trial: Trial) -> list[str]:
        return [
            *self.fixed.values(),
            *(f"{name}={_space.override_value(value)}" for name, value in trial.params.items()),
            f"++{ENV_SET}{hpo.STUDY_ENV}={_space.override_value(self.study_name)}",
            f"++{ENV_SET}{hpo.TRIAL_ENV}={trial._trial_id}",
            f"++{ENV_SET}{SWEPT_ENV}={_space.override_value(self._swept(trial))}",
        ]

    def _run(self, trial: Trial) -> None:
        key = (self.study_name, trial._trial_id)
        hpo.live[key] = trial  # a job in this process uses the live trial
        try:
            ret = _repeats.launch(
                self.launcher,
                trial,
                self._overrides(trial),
                seeds=self.seeds,
                study=self.study,
                objectives=self.objectives,
                runs=self.runs,
            )
        finally:
            hpo.live.pop(key, None)
        self._settle(trial, ret)

    def _settle(self, trial: Trial, ret: JobReturn) -> None:
        """The trial's job is back: tell the study its outcome."""
        self.runs.link(trial)
        attrs = _outcome.stored(self.study, trial.number).user_attrs
        state, values, reason = _outcome.judge(ret, attrs, self.objectives)
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
            self.last_failure = reason
        with self.lock:
            del self.in_flight[trial.number]
            self.outcomes[state] += 1
        self._tell(trial, values, state)
        log.info(_outcome.describe(trial.number, state, values, reason, trial.params, self.objectives.names))
        self.runs.tag_child(trial.number, state.name)
        self._check_failure_rate()

    def _swept(self, trial: Trial) -> str:
        """The keys that name the trial's runs: its parameters, and `seed` with repeats."""
        return ",".join([*trial.params, *(["seed"] if len(self.seeds) > 1 else [])])

    def _tell(self, trial: Trial, values: list[float] | None, state: TrialState) -> None:
        try:
            self.study.tell(trial, values=values, state=state, skip_if_finished=True)
        except RuntimeError as error:
            # GridSampler calls study.stop() once its grid is used up, which only works inside
            # study.optimize; the trial is told by then, and the budget ends the sweep anyway.
            if "Study.stop" not in str(error):
                raise

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
            self.runs.tag_child(trial.number, TrialState.FAIL.name, killed=True)

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
        """On an interrupt or error in the sweeper: end its in-flight trials FAIL, not RUNNING, and
        say the state the storage holds, whatever the storage calls raised."""
        with self.lock:
            trials = list(self.in_flight.values())
        for trial in trials:
            error: Exception | None = None
            try:
                trial.set_user_attr("fail_reason", f"sweep stopped: {type(exc).__name__}")
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception as problem:  # told meanwhile, or the storage itself failed
                error = problem
            try:
                state = _outcome.stored(self.study, trial.number).state.name
            except Exception:
                state = "unknown"
            if state in ("RUNNING", "unknown"):
                log.warning("trial %d may be left RUNNING: %s", trial.number, error)
            else:
                log.warning("trial %d ended %s: the sweep stopped (%s)", trial.number, state, describe(exc))

    # ------------------------------------------------------------------------------- results
    def _finish(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts = Counter(t.state.name.lower() for t in trials if t.state in FINISHED and not _warm.copied(t))
        summary = _report.summarize(self.study, counts)
        for line in [*_report.upstream_lines(self.study), f"study {self.study_name}: {summary}"]:
            log.info(line)
        for line in _report.pareto_lines(self.study):
            log.info(line)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        results = sweep_dir / "optimization_results.yaml"
        _report.save_results(self.study, self.storage_path, counts, results)
        plots = _report.save_plots(self.study, sweep_dir / "optuna_plots")
        self.runs.finish(self.study, self.storage_path, counts, [*plots, results])
        if self._failure_rate_exceeded():
            fails, done = self.outcomes[TrialState.FAIL], sum(self.outcomes.values())
            raise SweepFailed(
                f"{fails} of {done} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.sweeper.max_failure_rate} allows; the last: {self.last_failure}"
            )

    def _failure_rate_exceeded(self) -> bool:
        done = sum(self.outcomes.values())
        return bool(done) and self.outcomes[TrialState.FAIL] / done > self.sweeper.max_failure_rate
