"""MLflow in a process of its own, so that a training process never imports it nor waits on its writes.

`import mlflow` costs seconds and every write is a store transaction; on a machine with two cores a
second process does that work truly beside training (a thread would share the GIL). `Sidecar` is the
training process's end: `send` sends a call and goes on, `ask` sends one whose value it needs (a
`Future`), `barrier()` waits until every call sent is done and raises the first error one met. The
calls run in the order they were sent, so a write sent after a snapshot lands after it.

`serve()` is the other end (`python -m src.tracking.sidecar`), running src/tracking/store.py's `Runs`.
It starts in a session of its own and ignores the signals that stop training (SIGINT, SIGTERM, and
SLURM's SIGUSR2, which reaches every process of a job): they are for the training process, which
decides what they mean and ends its runs. When the training process closes the pipe
(it exited, or was killed), runs still open end KILLED. `Sidecar.prestart()` starts it while the
training process imports torch, so MLflow's imports cost no wall time.

This module imports only the standard library at load time: the training side must stay light.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

HEADER = struct.Struct(">I")  # each message: its length, then its pickle
# Command lines that need no run of their own in this process: help, a printed config, tracking off,
# or a --multirun (whose jobs start their own sidecar where they run; the parent uses MLflow itself).
NO_RUN = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--multirun", "-m", "tracking=none"}


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


class Sidecar:
    """The training process's end of its MLflow process: one per process, shared by its runs."""

    _current: Sidecar | None = None

    @classmethod
    def prestart(cls, argv: Sequence[str]) -> None:
        """Start this process's sidecar now, unless the command line plainly needs none; it opens
        the store the run will likely use (`tracking.uri=`, $MLFLOW_TRACKING_URI or ./mlflow.db) if
        that store exists, so that creating the run costs the run no time."""
        if NO_RUN & {a.split("=", 1)[0] if a.startswith("-") else a for a in argv} or cls._current:
            return
        given = [a.split("=", 1)[1] for a in argv if a.startswith("tracking.uri=")]
        uri = (given or [os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"])[-1]
        path = Path(uri.removeprefix("sqlite:///").split("?")[0])
        cls._current = cls(warm=[uri] if uri.startswith("sqlite:///") and path.is_file() else [])

    @classmethod
    def get(cls) -> Sidecar:
        """This process's sidecar, started if needed (a forked child starts its own)."""
        if cls._current is None or cls._current.pid != os.getpid() or cls._current.dead:
            cls._current = cls()
        return cls._current

    def __init__(self, warm: Sequence[str] = ()) -> None:
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
        self.errors: list[BaseException] = []
        self.dead = self.used = False
        self.ended = f"the MLflow process (pid {self.proc.pid}) was closed"  # why no call can be sent
        self.sent = 0
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.lock = threading.Lock()
        # Two threads, so that training blocks neither on a full pipe nor on a reply.
        threading.Thread(target=self._write, daemon=True, name="mlflow-sidecar-writer").start()
        threading.Thread(target=self._read, daemon=True, name="mlflow-sidecar-reader").start()
        atexit.register(self.close)

    def send(self, function: str, *args: Any, **kwargs: Any) -> None:
        """`Runs.<function>(*args, **kwargs)` in the sidecar, in order; an error comes at `barrier()`."""
        self._put(function, args, kwargs, None)

    def ask(self, function: str, *args: Any, **kwargs: Any) -> Future[Any]:
        """As `send`, with the call's value (or error) as a future."""
        future: Future[Any] = Future()
        self._put(function, args, kwargs, future)
        return future

    def barrier(self) -> None:
        """Wait until every call sent so far is done; raise the first error one of them met."""
        self.ask("ping", "").result()
        with self.lock:
            errors, self.errors = self.errors, []
        if errors:
            raise errors[0]

    def _put(
        self, function: str, args: tuple[Any, ...], kwargs: dict[str, Any], future: Future[Any] | None
    ) -> None:
        if self.dead:
            raise SidecarError(self.ended)
        self.used = True
        with self.lock:
            call_id, self.sent = self.sent, self.sent + 1
            if future is not None:
                self.waiting[call_id] = future
        self.outbox.put((call_id, function, args, kwargs, future is not None))

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
                    future = self.waiting.pop(call_id, None)
                    if future is None:  # a call sent without waiting failed
                        self.errors.append(value)
                        continue
                future.set_result(value) if ok else future.set_exception(value)
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
    from src.tracking import store as mlflow_store

    mlflow_store.quiet_migrations()
    import mlflow.tracking  # noqa: F401  # while the training process imports torch

    for uri in sys.argv[1:]:  # an existing store the run will likely open: its engine and schema check
        mlflow_store.warm_store(uri)
    plots_ready = False
    runs = mlflow_store.Runs()
    while True:
        if not plots_ready and not select.select([requests], [], [], 0)[0]:  # idle: ready the PNG
            mlflow_store.warm_plots()
            plots_ready = True
        if (message := read_message(requests)) is None:
            break
        call_id, function, args, kwargs, reply = message
        try:
            value, ok = (None if function == "ping" else runs(function, *args, **kwargs)), True
        except Exception as exc:  # by name and message: the training process has no MLflow to unpickle it
            value, ok = MlflowError(f"{type(exc).__name__}: {exc}"), False
        if reply or not ok:
            with contextlib.suppress(OSError):  # the training process is gone: its runs still end below
                write_message(replies, (call_id, ok, value))
    runs.end_all("the training process ended without ending this run")
    # Every write above was synchronous and is done: skip the interpreter's teardown (seconds of
    # MLflow's and SQLAlchemy's exit hooks that nobody waits for).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # run as src.tracking.sidecar, so that its errors unpickle as that module's
    from src.tracking import sidecar as mlflow_sidecar

    mlflow_sidecar.serve()
