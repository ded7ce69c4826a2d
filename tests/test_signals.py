"""Signals only record a stop request; runs stop at safe points (src/signals.py), with real signals."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from src import signals
from src.loop import checkpoint, fit
from src.signals import Stopped
from src.tracking.tracker import MlflowTracker
from src.train import build, train
from tests.helpers import all_runs, cli_env, make_config


@pytest.fixture
def handlers() -> Iterator[None]:
    """The CLI's signal handlers, installed in this process for one test and removed after."""
    saved = {sig: signal.getsignal(sig) for sig in signals.REASONS}
    signals.install()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signals._process.reason, signals._process.count = None, 0


def test_a_signal_is_recorded_and_a_second_stops_at_once(handlers):
    with signals.scoped() as stop:
        signal.raise_signal(signal.SIGINT)  # no exception: the handler only records
        assert (stop.reason, stop.count) == ("interrupted", 1)
        with pytest.raises(Stopped):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # a third one kills outright


def test_a_request_before_a_run_is_carried_into_it_and_handed_back(handlers):
    signal.raise_signal(signal.SIGINT)
    assert signals.pending() == "interrupted"
    with signals.scoped() as stop:
        assert stop.reason == "interrupted" and signals.pending() is None
    assert signals.pending() == "interrupted"  # the process still knows: e.g. a sweep's parent ends KILLED


def test_a_failed_run_leaves_no_stop_state_behind(handlers, sqlite_uri):
    class Boom:
        def on_epoch_end(self, metrics):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        train(make_config("trainer.progress=false"), callbacks=[Boom()])
    signal.raise_signal(signal.SIGINT)  # reaches the process, not the dead run's request
    assert signals.pending() == "interrupted"
    with pytest.raises(Stopped):  # and the next run stops before it starts anything
        train(make_config("trainer.progress=false"))
    assert [r.info.status for r in all_runs(sqlite_uri)] == ["FAILED"]


def test_a_callback_that_raises_leaves_its_run_unstopped_for_the_next_fit(handlers, quiet_config):
    """A signal, then a callback failing in the same epoch: the error comes out, the process keeps
    the request (the CLI exits 130), and the run's own request is reset, so fitting it again runs."""
    run = build(quiet_config("trainer.max_epochs=3"))

    class SignalThenBoom:
        def on_epoch_end(self, metrics):
            signal.raise_signal(signal.SIGINT)  # recorded in run.stop by the handler
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), signals.scoped(run.stop):
        fit(run, callbacks=[SignalThenBoom()])
    assert (run.stop.reason, run.stop.count) == (None, 0)
    assert signals.pending() == "interrupted"
    result = fit(run)  # not stopped at its first step
    assert result.stop_reason == "max_epochs" and result.epochs == 3


def test_a_request_before_training_stops_at_the_first_step(quiet_config):
    run, saved = build(quiet_config()), dict[str, Any]()
    run.stop.record("interrupted")
    with pytest.raises(Stopped):
        fit(run, snapshot=lambda p: saved.update(p=checkpoint.capture(p, run, None, "")))
    progress = saved["p"]["progress"]
    assert progress["epoch"] == 0 and len(progress["sizes"]) == 1  # one step, then the snapshot


def test_a_request_during_evaluation_stops_at_the_epochs_end(quiet_config):
    run, saved = build(quiet_config()), dict[str, Any]()

    class StopInEpochThree:  # callbacks run right after the evaluation
        def on_epoch_end(self, metrics):
            if metrics.epoch == 3:
                run.stop.record("interrupted")

    with pytest.raises(Stopped):
        fit(run, callbacks=[StopInEpochThree()],
            snapshot=lambda p: saved.update(p=checkpoint.capture(p, run, None, "")))  # fmt: skip
    progress = saved["p"]["progress"]
    assert progress["epoch"] == 3 and progress["sizes"] == []


def test_a_signal_while_mlflow_sets_up_ends_the_run_killed(handlers, sqlite_uri, monkeypatch):
    enter = MlflowTracker.__enter__

    def enter_then_signal(self):
        tracker = enter(self)
        signal.raise_signal(signal.SIGINT)  # after the run exists, before the first epoch
        return tracker

    monkeypatch.setattr(MlflowTracker, "__enter__", enter_then_signal)
    with pytest.raises(Stopped):
        train(make_config("trainer.progress=false"))
    (run,) = all_runs(sqlite_uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["stop_reason"] == "interrupted"
    assert run.data.tags["error"] == "Stopped: interrupted"


ENDLESS = ("trainer.max_epochs=1000000000", "trainer.patience=1000000000", "trainer.stopping_threshold=null")


@pytest.mark.slow
def test_sigint_at_any_moment_ends_the_run_within_ten_seconds(tmp_path):
    """20 endless runs, each sent SIGINT 0.5-15 s after it starts (seeded moments; 4 at a time to
    keep it cheap): each ends within 10 s of its signal, with status 130, and no run stays RUNNING.
    (Python's own exit is allowed for a signal before the handlers are in.)"""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store's schema, once, before the runs race for it
    rng = random.Random(13)
    moments = [rng.uniform(0.5, 15.0) for _ in range(20)]
    took: list[float] = []

    def start(i: int) -> subprocess.Popen:
        with open(tmp_path / f"stderr{i}", "w") as stderr:
            args = [sys.executable, "-m", "src.train", *ENDLESS, f"hydra.run.dir={tmp_path}/run{i}"]
            return subprocess.Popen(
                args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=stderr
            )

    for wave in range(0, len(moments), 4):
        procs = {i: start(i) for i in range(wave, min(wave + 4, len(moments)))}
        try:
            started, signalled, ended = time.monotonic(), dict[int, float](), dict[int, float]()
            while len(ended) < len(procs):
                now = time.monotonic()
                for i, proc in procs.items():
                    if i not in signalled and now - started >= moments[i]:
                        proc.send_signal(signal.SIGINT)
                        signalled[i] = now
                    if i not in ended and proc.poll() is not None:
                        ended[i] = now
                    if i in signalled and i not in ended and now - signalled[i] > 10:
                        pytest.fail(f"run {i}, sent SIGINT {moments[i]:.1f} s after start, ran 10 s more")
                time.sleep(0.05)
        finally:  # no run outlives a failure
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
        for i, proc in procs.items():
            stderr = (tmp_path / f"stderr{i}").read_text()
            # 130, or Python's own KeyboardInterrupt exit (-SIGINT, or 1 from its site import) for a
            # signal before src.train installs its handlers: on a loaded machine start-up takes > 0.5 s.
            own = proc.returncode in (1, -signal.SIGINT) and "KeyboardInterrupt" in stderr
            assert proc.returncode == 130 or own, f"run {i} at {moments[i]:.1f} s: {stderr}"
            assert i in signalled, f"run {i} ended by itself before its signal: {stderr}"
            took.append(ended[i] - signalled[i])
    assert [r.info.status for r in all_runs(uri) if r.info.status == "RUNNING"] == []
    print(f"20 runs interrupted; the slowest ended {max(took):.1f} s after its signal")
