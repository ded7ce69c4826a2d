"""MLflow in a process of its own, so that a training process never imports it nor waits on its writes.

`import mlflow` costs seconds and every write is a store transaction; on a machine with two cores a
second process does that work truly beside training (a thread would share the GIL). A tracker's calls
are `RunWriter`'s methods (src/tracking/store.py), named as such and checked by mypy:
`calls.send(RunWriter.log_text, key, text, artifact)` sends one and goes on, `ask` sends one whose
value it needs (a `Future`), `barrier()` waits until every call sent is done and raises the first error
one met. The calls run in the order they were sent, so a write sent after a snapshot lands after it.
`Sidecar` runs them in the sidecar process; `InProcess` (`tracking.sidecar=false`) runs the same
writer in the training process, at once, with the same order and errors.

`serve()` is the other end (`python -m src.tracking.sidecar`), running the calls on its `RunWriter`.
It starts in a session of its own and ignores the signals that stop training (SIGINT, SIGTERM, and
SLURM's SIGUSR2, which reaches every process of a job): they are for the training process, which
decides what they mean and ends its runs. When the training process closes the pipe
(it exited, or was killed), runs still open end KILLED. `Sidecar.prestart()` starts it while the
training process imports torch, so MLflow's imports cost no wall time.

This module imports only the standard library at load time: the training side must stay light.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from src.tracking.store import RunWriter

P = ParamSpec("P")
R = TypeVar("R")
# A call of the writer as it travels: a method of RunWriter (None: a ping), its arguments, its keywords.
Call = tuple[Callable[..., Any] | None, tuple[Any, ...], dict[str, Any]]

HEADER = struct.Struct(">I")  # each message: its length, then its pickle
# Command lines that need no run of their own in this process: help, a printed config, tracking off
# or in this process.
NO_RUN = {
    *("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "tracking=none"),
    *("tracking.sidecar=false", "tracking.sidecar=False"),
}
# The launchers that run a --multirun's jobs in this process, sharing its sidecar (any other starts
# one where each job runs; the sweep's parent run uses MLflow itself).
HERE = {"batched", "basic"}


def write_message(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message)
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next message; None at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return pickle.loads(stream.read(HEADER.unpack(header)[0]))


class SidecarError(RuntimeError):
    """The MLflow process ended unexpectedly: nothing more can be logged."""


class MlflowError(RuntimeError):
    """An MLflow call failed in the sidecar; the message names MLflow's error (its class stays there)."""


def run_call(writer: RunWriter, call: Call) -> tuple[bool, Any]:
    """Whether the call succeeded, and its value or its error, an MlflowError naming MLflow's error
    (a training process without MLflow can unpickle it). A ping does nothing."""
    method, args, kwargs = call
    if method is None:
        return True, None
    try:
        return True, writer(method, *args, **kwargs)
    except Exception as exc:
        error = MlflowError(f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc  # in this process, the traceback goes on into MLflow's (not pickled)
        return False, error


class Calls(abc.ABC):
    """The training process's end of a `RunWriter`: where a tracker's calls go, and their replies."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []  # of calls sent without waiting, not yet raised
        self.lock = threading.Lock()

    def send(
        self,
        method: Callable[Concatenate[RunWriter, str, P], Any],
        key: str,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """`method(writer, key, *args, **kwargs)`, in order; an error comes at `barrier()`."""
        self._put((method, (key, *args), kwargs), None)

    def ask(
        self, method: Callable[Concatenate[RunWriter, str, P], R], key: str, *args: P.args, **kwargs: P.kwargs
    ) -> Future[R]:
        """As `send`, with the call's value (or error) as a future (for the calls that open a run,
        which the writer never skips)."""
        future: Future[R] = Future()
        self._put((method, (key, *args), kwargs), future)
        return future

    def barrier(self) -> None:
        """Wait until every call sent so far is done; raise the first error one of them met."""
        self._wait()
        with self.lock:
            errors, self.errors = self.errors, []
        if errors:
            raise errors[0]

    def _reply(self, future: Future[Any] | None, ok: bool, value: Any) -> None:
        """A call's value or error to whoever waits for it; an error nobody waits for, to `barrier`."""
        if future is None:
            if not ok:
                with self.lock:
                    self.errors.append(value)
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    @abc.abstractmethod
    def _put(self, call: Call, future: Future[Any] | None) -> None:
        """Run the call after every call put before; its reply to `future`."""

    @abc.abstractmethod
    def _wait(self) -> None:
        """Return when every call sent so far is done."""


class InProcess(Calls):
    """`tracking.sidecar=false`: the calls run here, at once, on a writer of this tracker's own; this
    process imports MLflow. A process killed meanwhile leaves its run RUNNING until the next process
    that opens the store ends it KILLED (src/tracking/store.py's `end_dead_runs`)."""

    def __init__(self) -> None:
        from src.tracking.store import RunWriter

        super().__init__()
        self.writer = RunWriter()

    def _put(self, call: Call, future: Future[Any] | None) -> None:
        self._reply(future, *run_call(self.writer, call))

    def _wait(self) -> None:
        pass  # every call is done when it returns


class Sidecar(Calls):
    """The training process's end of its MLflow process: one per process, shared by its runs."""

    _current: Sidecar | None = None

    @classmethod
    def prestart(cls, argv: Sequence[str]) -> None:
        """Start this process's sidecar now, unless the command line plainly needs none (a
        --multirun needs it when its jobs run in this process); it opens the store the run will
        likely use (`tracking.uri=`, $MLFLOW_TRACKING_URI or ./mlflow.db) if that store exists, so
        that creating the run costs the run no time."""
        if NO_RUN & {a.split("=", 1)[0] if a.startswith("-") else a for a in argv} or cls._current:
            return
        launchers = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra/launcher=")]
        if launchers and launchers[-1] not in HERE:
            return
        from src.tracking.store import given_uri, sqlite_file

        given = [a.split("=", 1)[1] for a in argv if a.startswith("tracking.uri=")]
        uri = given_uri(given[-1] if given else None)
        path = sqlite_file(uri)
        cls._current = cls(warm=[uri] if path is not None and path.is_file() else [])

    @classmethod
    def get(cls) -> Sidecar:
        """This process's sidecar, started if needed (a forked child starts its own)."""
        if cls._current is None or cls._current.pid != os.getpid() or cls._current.dead:
            cls._current = cls()
        return cls._current

    def __init__(self, warm: Sequence[str] = ()) -> None:
        super().__init__()
        self.pid = os.getpid()
        root = str(Path(__file__).resolve().parents[2])  # the same src/ as this process's
        pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "src.tracking.sidecar", *warm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": pythonpath},
            start_new_session=True,  # a Ctrl-C is for the training process, which ends the runs
        )
        self.waiting: dict[int, Future[Any]] = {}
        self.dead = self.used = False
        self.ended = f"the MLflow process (pid {self.proc.pid}) was closed"  # why no call can be sent
        self.sent = 0
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Two threads, so that training blocks neither on a full pipe nor on a reply.
        threading.Thread(target=self._write, daemon=True, name="mlflow-sidecar-writer").start()
        threading.Thread(target=self._read, daemon=True, name="mlflow-sidecar-reader").start()
        atexit.register(self.close)

    def _wait(self) -> None:
        """A ping, answered once every call sent before it is done."""
        ping: Future[None] = Future()
        self._put((None, (), {}), ping)
        ping.result()

    def _put(self, call: Call, future: Future[Any] | None) -> None:
        """The call to the sidecar's writer, through the pipe (its method pickled by its name)."""
        if self.dead:
            raise SidecarError(self.ended)
        self.used = True
        with self.lock:
            call_id, self.sent = self.sent, self.sent + 1
            if future is not None:
                self.waiting[call_id] = future
        self.outbox.put((call_id, call, future is not None))

    def close(self) -> None:
        """At exit: let a used sidecar finish (it ends runs left open KILLED); kill an unused one."""
        if self.dead or self.pid != os.getpid():  # a forked child's copy: not its sidecar
            return
        self.dead = True
        if self.used:
            self.outbox.put(None)  # the writer closes the pipe: the sidecar finishes and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        else:  # started early for a run that never came (bad input, tracking off): nothing to finish
            self.proc.kill()
            self.proc.wait()

    def _write(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # a dead sidecar: the reader reports it
            while (message := self.outbox.get()) is not None:
                write_message(self.proc.stdin, message)
            self.proc.stdin.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(Exception):  # a message that cannot be read: as good as dead
            while (message := read_message(self.proc.stdout)) is not None:
                call_id, ok, value = message
                with self.lock:
                    future = self.waiting.pop(call_id, None)  # None: a call sent without waiting failed
                self._reply(future, ok, value)
        if not self.dead:  # not closed by this process: it died
            with contextlib.suppress(subprocess.TimeoutExpired):  # it closed its end: it is ending
                self.proc.wait(timeout=5)
            self.proc.kill()  # a reply this process cannot read: nothing it says can be trusted now
            status = self.proc.wait()
            self.ended = f"the MLflow process (pid {self.proc.pid}) ended unexpectedly (exit status {status})"
            self.dead = True
        with self.lock:
            waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            future.set_exception(SidecarError(self.ended))


# ------------------------------------------------------------------------------ the sidecar's side
def serve() -> None:
    """Run the calls the training process sends, in order, replying where it waits or a call failed."""
    from src.signals import REASONS

    for stop in REASONS:  # Ctrl-C, kill, SLURM's warning: the training process's to act on, not ours
        signal.signal(stop, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(5)  # on a busy machine, training comes first
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print from a library must not corrupt the replies
    from src.tracking import curves
    from src.tracking import store as mlflow_store

    mlflow_store.quiet_migrations()
    import mlflow.tracking  # noqa: F401  # while the training process imports torch

    for uri in sys.argv[1:]:  # an existing store the run will likely open: its engine and schema check
        mlflow_store.warm_store(uri)
    # matplotlib now, before the first call: the training process waits for its run to exist before its
    # first step, so this costs setup time, never CPU taken from training (wall_time)
    curves.warm_plots()
    writer = mlflow_store.RunWriter(draw_apart=True)
    while True:
        if (message := read_message(requests)) is None:
            break
        call_id, call, reply = message
        ok, value = run_call(writer, call)
        if reply or not ok:
            with contextlib.suppress(OSError):  # the training process is gone: its runs still end below
                write_message(replies, (call_id, ok, value))
    writer.end_all("the training process ended without ending this run")
    # Every write above was synchronous and is done: skip the interpreter's teardown (seconds of
    # MLflow's and SQLAlchemy's exit hooks that nobody waits for).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # run as src.tracking.sidecar, so that its errors unpickle as that module's
    from src.tracking import sidecar as mlflow_sidecar

    mlflow_sidecar.serve()
