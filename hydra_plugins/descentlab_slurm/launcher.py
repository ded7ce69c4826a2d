"""Sweeps on a SLURM cluster: `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml).

Hydra's submitit launcher, with what a cluster needs:

- **Time limits and preemption.** SLURM sends the warning signal (USR2) `signal_delay_s` seconds
  before a job's time limit, or when it preempts the job. The job only records a stop request: the
  loop finishes its step and writes its snapshot, and the MLflow run ends resumable; then, outside
  any signal handler, submitit's checkpoint/requeue puts the same job back in the queue (a time
  limit counts against `max_num_timeout`; past it the trial fails with that reason). The requeued
  job finds the snapshot in its run dir (`src.loop.checkpoint.requeued_snapshot`) and continues the same
  MLflow run and the same Optuna trial. (submitit's own handler requeues, or raises, from inside the
  signal handler, i.e. into whatever the job happens to be doing.)
- **Limits checked up front**: a `timeout_min` that leaves under a minute before the warning is refused.
- **Quiet status polling** with `squeue` (sacct needs accounting, which small clusters lack): one
  log line per job state change, no warning per poll.
- **A job that ends without a result** (`scancel`, a node failure, a kill at the time limit) fails
  its trial with the reason; the sweep goes on.

submitit is imported only when jobs are launched: Hydra imports this module at every start.
"""

from __future__ import annotations

import functools
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import HydraException
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

WARNED = "preempted"  # the stop reason of SLURM's warning signal
MIN_WORK_S = 60  # a job must get at least this long before SLURM's warning (it may come 60 s early)
POLL_S = 10  # at most one squeue call per this many seconds, for all jobs
TERMINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "TIMEOUT", "GONE"}  # fmt: skip


class LimitsError(HydraException):
    """A launcher setting SLURM cannot honour."""


class JobLost(RuntimeError):
    """The SLURM job ended without a result: cancelled, killed, or out of requeues."""


def check_limits(timeout_min: int, signal_delay_s: int) -> None:
    """Refuse a time limit that leaves no time to work before SLURM's warning signal."""
    work_s = timeout_min * 60 - signal_delay_s
    if work_s < MIN_WORK_S:
        raise LimitsError(
            f"hydra.launcher.timeout_min={timeout_min} leaves {work_s} s before SLURM's warning signal "
            f"(hydra.launcher.signal_delay_s={signal_delay_s} s before the limit); it must leave at "
            f"least {MIN_WORK_S} s: raise timeout_min or lower signal_delay_s"
        )


class Launcher(SlurmLauncher):
    """`hydra/launcher=slurm`: submitit's SLURM launcher, surviving time limits and preemption."""

    @classmethod
    def check_config(cls, config: DictConfig) -> None:
        """The launcher's limits, before a sweep logs anything (for a Hydra callback, which finds
        this method on the class: src.sweep.parent.MultirunParent)."""
        check_limits(int(config.hydra.launcher.timeout_min), int(config.hydra.launcher.signal_delay_s))

    def setup(self, **kwargs: Any) -> None:
        check_limits(int(self.params["timeout_min"]), int(self.params["signal_delay_s"]))
        super().setup(**kwargs)

    # ----------------------------------------------------------------------- in the SLURM job
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        import submitit

        from src import signals

        warning = submitit.JobEnvironment._usr_sig()
        submitits = signal.getsignal(warning)  # its checkpoint-and-requeue: called below, not as a handler
        signals.REASONS.setdefault(warning, WARNED)
        # The warning, and SIGTERM (scancel; submitit would ignore it, and SLURM's SIGKILL would then
        # leave the MLflow run RUNNING), only record a stop request: the loop stops after its step.
        signals.install()
        try:
            return super().__call__(*args, **kwargs)
        except signals.Stopped as stopped:  # at a safe point: the snapshot is written
            if stopped.reason != signals.REASONS[warning]:
                raise
        handler = getattr(submitits, "__self__", None)
        if handler is None:  # submitit installed no handler: nothing to requeue with
            raise KeyboardInterrupt("SLURM warning signal")
        # SLURM answers the requeue with SIGTERM to this job: expected now, so it must not raise
        # Stopped into the requeue call (losing its log line) or into the exit (a traceback).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            handler.checkpoint_and_try_requeue(warning)  # requeues, then exits the process
        except submitit.core.utils.UncompletedJobError as error:  # out of requeues
            reason = (
                f"SLURM time limit: {str(error).removeprefix('Job ').rstrip('.')} "
                f"(hydra.launcher.max_num_timeout={self.params['max_num_timeout']}); its snapshot is "
                f"in its run dir under {self.config.hydra.sweep.dir if self.config else 'the sweep dir'}"
            )
            log.warning(reason)
            return JobReturn(status=JobStatus.FAILED, _return_value=JobLost(reason))
        raise AssertionError("submitit neither requeued the job nor refused to")

    # ----------------------------------------------------------------------- in the sweeper
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Hydra's submitit launch, polling with squeue, and with a failed JobReturn (not a raise)
        for a job that ended without a result."""
        import submitit
        from submitit.slurm.slurm import SlurmJob

        assert self.config is not None
        params = dict(self.params)
        folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
        SlurmJob.watcher = squeue_watcher()
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs_args = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            state = Singleton.get_state()
            jobs_args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        jobs = executor.map_array(self, *zip(*jobs_args, strict=True))
        return [result(job) for job in jobs]


def result(job: Any) -> JobReturn:
    """The job's JobReturn; a failed one naming the job's last state when it left no result."""
    import submitit

    try:
        ret: JobReturn = job.results()[0]
        return ret
    except submitit.core.utils.UncompletedJobError:
        state = squeue_watcher().states.get(job.job_id, "ENDED").split(" ")[0]
        reason = f"SLURM job {job.job_id} ended {state} without a result; its log: {job.paths.stderr}"
    except submitit.core.utils.FailedJobError as error:  # raised outside the task (which Hydra catches)
        trace = [line for line in str(error).split("----------------------")[1].splitlines() if line.strip()]
        reason = f"SLURM job {job.job_id} failed: {trace[-1] if trace else 'see'} (log: {job.paths.stderr})"
    log.warning(reason)
    return JobReturn(status=JobStatus.FAILED, _return_value=JobLost(reason))


@functools.cache
def squeue_watcher() -> Any:
    """submitit's job-state watcher, reading `squeue` (which needs no accounting) instead of sacct,
    with one log line per state change instead of a warning per poll."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        def __init__(self) -> None:
            super().__init__(delay_s=POLL_S)
            self.states: dict[str, str] = {}
            self.lock = threading.Lock()

        def update(self) -> None:
            with self.lock:  # one poll at a time, from the sweeper's worker threads
                self._update()

        def _update(self) -> None:
            jobs = sorted(self._registered - self._finished)
            if not jobs:
                return
            command = ["squeue", "--states=all", "--noheader", "--format=%i|%T|%N", "--jobs", ",".join(jobs)]
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return  # squeue unreachable for a moment: keep the states we know
            info = self.read_info("JobID|State|NodeList\n" + out)
            for job in jobs:
                known = self.states.get(job)
                state = info.get(job, {}).get("State") or ("GONE" if known else "UNKNOWN")
                self._info_dict[job] = {"State": state}
                if state not in (known, "UNKNOWN"):
                    log.info("SLURM job %s: %s", job, state)
                    self.states[job] = state
                if state in TERMINAL:
                    self._finished.add(job)
            self._last_status_check = time.time()

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            return str(self.get_state(job_id, mode=mode)).split(" ")[0] in TERMINAL

    return SqueueWatcher()
