"""Signals as stop requests: a handler only records what was asked; the code stops at a safe point.

Raising from a signal handler is unsafe: the exception lands in whatever runs at that moment, and
inside a garbage-collection or weakref callback (SQLAlchemy's, say) Python prints "Exception
ignored in ..." and the interrupt is gone. So the first signal only records a `StopRequest` with
its reason, and code checks it where stopping is safe:

- the training loop after each step and after each evaluation: it finishes the step, writes its
  snapshot and raises `Stopped` (src/loop/loop.py);
- a run before and after each stage outside training (setup, MLflow, teardown), and `cli.run`
  before and after the job: `request.check()` raises `Stopped`, the run's MLflow run ends KILLED
  and the process exits with status 130.

Before the work starts (during the imports) nothing can be left half-done, so a signal then ends
the process at once (`install(at_once=True)`). Later, a second signal raises `Stopped` at once (the
user insists); a third gets the default action (the process dies), which nothing can swallow.

Each run owns its request (`Run.stop`: `train` opens `scoped(run.stop)`, `fit` checks it), so
nothing of one run's stop state leaks into the next job of the same process. A request made before
the run starts (while Hydra composes, say) is carried into it, and a request is handed back to the
process when the run ends, so the process still knows it was asked to stop (a sweep's parent run
then ends KILLED).

To add a signal: map it to a reason in REASONS (e.g. `signal.SIGUSR2: "preempted"`), and act on
`request.reason` or `Stopped.reason` where behaviour should differ (e.g. snapshot and requeue when
preempted instead of ending the run KILLED).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

INTERRUPTED = 130  # the exit status of a stopped process: 128 + SIGINT, as a shell reports Ctrl-C
REASONS: dict[signal.Signals, str] = {
    signal.SIGINT: "interrupted",  # Ctrl-C
    signal.SIGTERM: "interrupted",  # kill, or SLURM before it kills a job
    signal.SIGUSR2: "preempted",  # SLURM's warning before a time limit or preemption (submitit's choice)
}


class Stopped(KeyboardInterrupt):
    """Raised at a safe point for a stop request: runs end KILLED, the process exits with 130."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StopRequest:
    """What signals asked of a run: `reason` of the first (None: carry on), how many came."""

    reason: str | None = None
    count: int = 0

    def record(self, reason: str) -> None:
        self.count += 1
        self.reason = self.reason or reason

    def check(self) -> None:
        """A safe point: stop here if a stop was requested."""
        if self.reason is not None:
            raise Stopped(self.reason)


_process = StopRequest()  # where signals are recorded outside any run
_target = _process  # where the handler records now: the running run's request, else _process
_exit_at_once = False  # nothing has started yet (the imports): nothing to end or clean up


def _handle(signum: int, frame: FrameType | None) -> None:
    if _exit_at_once:
        os.write(2, b"interrupted\n")
        os._exit(INTERRUPTED)
    request = _target
    request.record(REASONS[signal.Signals(signum)])
    if request.count == 2:  # the user insists: stop now, and let a third signal kill outright
        for sig in REASONS:
            signal.signal(sig, signal.SIG_DFL)
        raise Stopped(request.reason or "interrupted")


def install(at_once: bool = False) -> None:
    """Route the signals in REASONS to stop requests; with `at_once`, until the next install(), a
    signal ends the process at once: for the imports (seconds), before anything can be left half-done."""
    global _exit_at_once
    _exit_at_once = at_once
    for sig in REASONS:
        signal.signal(sig, _handle)


def check() -> None:
    """A safe point outside any run (the process's own request)."""
    _process.check()


def pending() -> str | None:
    """The reason of a stop requested in this process and not yet acted on by a run, if any."""
    return _process.reason


@contextmanager
def scoped(request: StopRequest | None = None) -> Iterator[StopRequest]:
    """A run's request (a fresh one if none is given): signals record into it while the block runs.
    A request made before the block is carried in. When the block ends, however it ends (a callback
    may raise), the handler records into the process again, a request left is handed back to the
    process, and the run's request is reset, so nothing of it stops a later run."""
    global _target
    outer, request = _target, request if request is not None else StopRequest()
    if outer.reason is not None:
        request.record(outer.reason)
        request.count = max(request.count, outer.count)
    outer.reason, outer.count = None, 0
    _target = request
    try:
        yield request
    finally:
        _target = outer
        if request.reason is not None:
            outer.record(request.reason)
            outer.count = max(outer.count, request.count)
        request.reason, request.count = None, 0
