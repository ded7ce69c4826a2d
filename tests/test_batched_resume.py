"""A batch interrupted and resumed from its rows' snapshots ends as the same batch left alone.

In process (src/loop/batched.py): a stop request at an epoch's end snapshots every training row in
the single run's format (src/loop/checkpoint.py), then fresh runs restored from those files train on;
every row's history, stop and parameters are bitwise the uninterrupted batch's, rows that had stopped
(diverged, early stopping) stay stopped, and a single run resumed from a row's snapshot goes on as
that row. Then with real processes, signals and a sqlite MLflow store (tests/test_batched_launcher.py):
a batched --multirun stopped by SIGINT and continued with `resume=auto` ends with the runs, histories
and parameters of the same multirun left alone, and of the same jobs run one at a time."""

from __future__ import annotations

import dataclasses
import math
import shlex
import signal
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from src.loop import EpochMetrics, FitResult, Progress, checkpoint, fit
from src.loop.batched import Resumed, fit_batch
from src.loop.training import Training
from src.signals import Stopped, StopRequest
from src.train import build, compose
from tests.helpers import ONE_AT_A_TIME, all_runs, artifact_paths, interrupt_midway, run_cli

TIMED = {"epoch_time"}  # seconds: never the same twice


def runs_of(*configs: tuple[str, ...]) -> list[Training]:
    return [build(compose("tracking=none", "trainer.dtype=float64", *c)) for c in configs]


class InterruptAt:
    """What a SIGINT during epoch `epoch` does: the batch's stop request is made."""

    def __init__(self, stop: StopRequest, epoch: int) -> None:
        self.stop, self.epoch = stop, epoch

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        if metrics.epoch == self.epoch:
            self.stop.record("interrupted")


def history(result: FitResult) -> list[dict[str, object]]:
    return [{k: v for k, v in dataclasses.asdict(m).items() if k not in TIMED} for m in result.history]


def snapshot_files(runs: list[Training], folder: Path) -> list:
    """Each row's snapshot writer, as src/batch.py's: the single run's snapshot plus the stop reason."""

    def writer(i: int):
        def write(p: Progress, stop_reason: str | None) -> None:
            state = checkpoint.capture(p, runs[i], None, "")
            checkpoint.save(state | {checkpoint.STOP_REASON: stop_reason}, folder / f"{i}.pt")

        return write

    return [writer(i) for i in range(len(runs))]


GRID = {
    "sgd": [
        ("optimizer=sgd", "optimizer.lr=0.02", "seed=1"),
        ("optimizer=momentum", "optimizer.dampening=0.1", "optimizer.weight_decay=0.001", "seed=2"),
        ("optimizer=nesterov", "optimizer.lr=0.03", "schedule=step", "schedule.step_size=4", "seed=3"),
        ("optimizer=sgd", "optimizer.lr=3.0", "seed=4"),  # diverges before the interruption
        ("optimizer=momentum", "trainer.patience=3", "seed=5"),  # early-stops before it
    ],
    "adam": [
        ("optimizer=adam", "optimizer.weight_decay=0.01", "seed=1"),
        ("optimizer=adamw", "schedule=exponential", "schedule.gamma=0.95", "seed=2"),
        ("optimizer=adam", "optimizer.lr=0.3", "trainer.patience=2", "seed=3"),  # early-stops before it
    ],
}


CUT = 15  # the epoch the batch is interrupted in


@pytest.mark.parametrize("family", list(GRID))
def test_an_interrupted_batch_resumes_bitwise(tmp_path: Path, family: str) -> None:
    configs = [(*c, "trainer.checkpoint_every=4", "trainer.max_epochs=40") for c in GRID[family]]
    whole_runs = runs_of(*configs)
    whole = fit_batch(whole_runs)
    stopped_early = [r.epochs < CUT for r in whole]
    assert any(stopped_early) and not all(stopped_early)

    cut_runs, stop = runs_of(*configs), StopRequest()
    with pytest.raises(Stopped):
        fit_batch(
            cut_runs,
            [[InterruptAt(stop, CUT)]] * len(configs),
            stop,
            snapshots=snapshot_files(cut_runs, tmp_path),
        )
    states = [checkpoint.load(tmp_path / f"{i}.pt") for i in range(len(configs))]
    assert [s["progress"]["epoch"] < CUT for s in states] == stopped_early  # each as far as it went
    assert [s[checkpoint.STOP_REASON] is not None for s in states] == stopped_early

    resumed_runs = runs_of(*configs)
    resumed = [
        Resumed(checkpoint.restore(s, r), s[checkpoint.STOP_REASON])
        for s, r in zip(states, resumed_runs, strict=True)
    ]
    after = fit_batch(resumed_runs, resumed=resumed)
    for one, two, run_one, run_two in zip(whole, after, whole_runs, resumed_runs, strict=True):
        assert (two.stop_reason, two.epochs, two.best_epoch) == (one.stop_reason, one.epochs, one.best_epoch)
        assert history(two) == history(one)
        assert two.test_loss == one.test_loss or math.isnan(one.test_loss)
        for a, b in zip(run_one.model.parameters(), run_two.model.parameters(), strict=True):
            assert torch.equal(a, b)
    if family == "sgd":
        assert {"diverged", "early_stopped"} <= {r.stop_reason for r in whole}

    # A row's snapshot is a single run's: `fit` resumed from it goes on as the row did.
    i = next(i for i, early in enumerate(stopped_early) if not early)
    alone = runs_of(configs[i])[0]
    result = fit(alone, progress=checkpoint.restore(states[i], alone))
    assert (result.stop_reason, result.epochs, result.best_epoch) == (
        whole[i].stop_reason,
        whole[i].epochs,
        whole[i].best_epoch,
    )
    for a, b in zip(alone.model.parameters(), whole_runs[i].model.parameters(), strict=True):
        assert torch.equal(a, b)


SWEEP = (
    "--multirun", "optimizer=momentum,adam", "seed=0,1,2", "data.n=4000", "trainer.max_epochs=80",
    "trainer.patience=100000", "trainer.stopping_threshold=null", "trainer.dtype=float64",
    "trainer.checkpoint_every=5",
)  # fmt: skip
TIMED_METRICS = {"epoch_time", "wall_time", "setup_time"}  # seconds: not the same in two processes


def job_runs(uri: str) -> dict[str, object]:
    """The sweep's job runs by name (not its parent, not its groups); every run of the store FINISHED."""
    runs = all_runs(uri)
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    jobs = {r.info.run_name: r for r in runs if r.info.run_id not in parents}
    assert len(jobs) == 6
    return jobs


def metric_histories(uri: str, run: object) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(uri)
    keys = set(run.data.metrics) - TIMED_METRICS  # type: ignore[attr-defined]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)) for k in keys}  # type: ignore[attr-defined]


def final_parameters(sweep_dir: Path, job: int) -> dict[str, torch.Tensor]:
    return torch.load(sweep_dir / str(job) / "model.pt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_batched_multirun_stopped_by_sigint_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("whole", "alone", "cut")}
    for where in dirs.values():
        where.mkdir()
    uris = {name: f"sqlite:///{d / 'mlflow.db'}" for name, d in dirs.items()}
    sweep_dirs = {name: d / "multirun" for name, d in dirs.items()}
    whole = run_cli(dirs["whole"], *SWEEP, "hydra/launcher=batched", f"hydra.sweep.dir={sweep_dirs['whole']}")
    alone = run_cli(dirs["alone"], *SWEEP, *ONE_AT_A_TIME, f"hydra.sweep.dir={sweep_dirs['alone']}")
    assert whole.returncode == 0, whole.stderr
    assert alone.returncode == 0, alone.stderr

    # SIGINT as soon as the first batch (momentum × 3 seeds) has written its first snapshots. The sweep
    # dir typed relative: the printed command names it absolute, and resume still finds its parent run.
    cut_args = (*SWEEP, "hydra/launcher=batched", "hydra.sweep.dir=multirun")
    cut = interrupt_midway(
        dirs["cut"],
        uris["cut"],
        signal.SIGINT,
        *cut_args,
        after=sweep_dirs["cut"] / "0" / "snapshot.pt",
        pause=0.0,
    )
    assert cut.returncode == 130, cut.stderr
    hint = cut.stderr.splitlines()[-1]  # the command that continues the batch, as the user reads it
    printed = shlex.split(hint.split("continue every job with: ")[1])
    again = [*cut_args[:-1], f"hydra.sweep.dir={sweep_dirs['cut']}", "resume=auto"]
    assert printed == ["python", "-m", "src.train", *again]
    killed = {r.info.run_id: r for r in all_runs(uris["cut"])}
    assert {r.info.status for r in killed.values()} == {"KILLED"}  # none left RUNNING
    stopped_at = {
        checkpoint.load(sweep_dirs["cut"] / str(j) / "snapshot.pt")["progress"]["epoch"] for j in range(3)
    }
    (epoch,) = stopped_at  # every row of the batch stopped at the same epoch's end
    assert 5 <= epoch < 80
    assert not (sweep_dirs["cut"] / "3" / "snapshot.pt").exists()  # the Adam batch had not started

    resumed = run_cli(dirs["cut"], *printed[3:])
    assert resumed.returncode == 0, resumed.stderr
    said = resumed.stdout + resumed.stderr
    assert said.count("3 jobs train as one batch") == 2
    assert said.count(f"resumed at epoch {epoch} from") == 3  # the momentum rows; Adam's start afresh
    after = job_runs(uris["cut"])
    assert set(killed) <= {r.info.run_id for r in all_runs(uris["cut"])}  # the same runs, continued
    assert len(all_runs(uris["cut"])) == len(all_runs(uris["whole"]))  # no run twice: parent, groups, jobs
    expected, one_at_a_time = job_runs(uris["whole"]), job_runs(uris["alone"])
    assert sorted(after) == sorted(expected) == sorted(one_at_a_time)
    client = MlflowClient(uris["cut"])
    for name, run in after.items():
        got = metric_histories(uris["cut"], run)
        assert got == metric_histories(uris["whole"], expected[name]), name  # bitwise, every epoch
        alone_history = metric_histories(uris["alone"], one_at_a_time[name])
        assert got.keys() == alone_history.keys()
        for key, values in got.items():
            assert [s for s, _ in values] == [s for s, _ in alone_history[key]], (name, key)
            for (_, x), (_, y) in zip(values, alone_history[key], strict=True):
                assert math.isclose(x, y, rel_tol=1e-12), (name, key, x, y)
        assert "snapshot/snapshot.pt" in artifact_paths(client, run.info.run_id)  # type: ignore[attr-defined]
    for job in range(6):
        final = final_parameters(sweep_dirs["cut"], job)
        for other in ("whole", "alone"):
            reference = final_parameters(sweep_dirs[other], job)
            assert final.keys() == reference.keys()
            assert all(torch.equal(final[k], reference[k]) for k in final), (job, other)


@pytest.mark.slow
def test_resume_auto_on_a_finished_sweep_stops_in_one_line_and_records_nothing_twice(tmp_path: Path) -> None:
    args = ("--multirun", "seed=0,1", "trainer.max_epochs=5", "hydra/launcher=batched", "hydra.sweep.dir=sw")
    assert run_cli(tmp_path, *args).returncode == 0
    before = {
        (r.info.run_id, r.info.status, r.info.end_time)
        for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    }
    again = run_cli(tmp_path, *args, "resume=auto")
    assert again.returncode == 2, again.stderr
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith(f"error: resume=auto: the sweep in {tmp_path / 'sw'} has finished"), line
    assert "resume=<its run dir>" in line and "hydra.sweep.dir" in line
    after = {
        (r.info.run_id, r.info.status, r.info.end_time)
        for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    }
    assert after == before and len(before) == 4  # parent, group, two jobs: untouched, none added
