"""Signals only record a stop request; runs stop at safe points (src/signals.py), with real signals."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from src import checkpoint, signals
from src.loop import fit
from src.signals import Stopped, StopRequest
from src.tracking import MlflowTracker
from src.train import build, train
from tests.conftest import all_runs, make_config


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


def test_a_request_before_training_stops_at_the_first_step(quiet_config):
    parts, saved, stop = build(quiet_config()), dict[str, Any](), StopRequest()
    stop.record("interrupted")
    with pytest.raises(Stopped):
        fit(snapshot=lambda p: saved.update(p=checkpoint.capture(p, parts, None, "")), stop=stop, **parts)
    progress = saved["p"]["progress"]
    assert progress["epoch"] == 0 and len(progress["sizes"]) == 1  # one step, then the snapshot


def test_a_request_during_evaluation_stops_at_the_epochs_end(quiet_config):
    parts, saved, stop = build(quiet_config()), dict[str, Any](), StopRequest()

    class StopInEpochThree:  # callbacks run right after the evaluation
        def on_epoch_end(self, metrics):
            if metrics.epoch == 3:
                stop.record("interrupted")

    with pytest.raises(Stopped):
        fit(callbacks=[StopInEpochThree()], stop=stop, **parts,
            snapshot=lambda p: saved.update(p=checkpoint.capture(p, parts, None, "")))  # fmt: skip
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
