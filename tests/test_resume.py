"""Snapshots, resume, warm start and interrupts, with real processes and signals."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from src.loop import checkpoint
from src.models import LinearRegression
from src.signals import Stopped
from src.train import build, load_warm_start, train
from tests.helpers import all_runs, interrupt_midway, make_config, run_cli

METRICS = ("train_loss", "val_loss", "grad_norm", "param_error", "lr")
LONG_RUN = ("data.n=20000", "trainer.max_epochs=150", "trainer.patience=100000",
            "trainer.stopping_threshold=null", "optimizer=momentum", "optimizer.lr=0.01",
            "trainer.checkpoint_every=7")  # fmt: skip


def history(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(uri)
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in METRICS}


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "sig"), [("float64", signal.SIGINT), ("float32", signal.SIGTERM)])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, dtype, sig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = (*LONG_RUN, f"trainer.dtype={dtype}")
    whole = run_cli(tmp_path, *common, f"hydra.run.dir={tmp_path}/whole")
    assert whole.returncode == 0, whole.stderr
    (whole_run,) = all_runs(uri)

    cut = interrupt_midway(
        tmp_path, uri, sig, *common, f"hydra.run.dir={tmp_path}/cut", after=tmp_path / "cut" / "snapshot.pt"
    )
    assert cut.returncode == 130, cut.stderr
    cut_run = next(r for r in all_runs(uri) if r.info.run_id != whole_run.info.run_id)
    assert cut_run.info.status == "KILLED"
    snapshot = checkpoint.load(tmp_path / "cut" / "snapshot.pt")
    stopped_at = snapshot["progress"]["epoch"]
    assert 0 < stopped_at < 150  # it was stopped midway, not at the end
    assert history(uri, cut_run.info.run_id)["val_loss"][-1][0] == stopped_at  # MLflow = snapshot

    resumed = run_cli(tmp_path, f"resume={tmp_path}/cut", f"hydra.run.dir={tmp_path}/resumed")
    assert resumed.returncode == 0, resumed.stderr
    runs = {r.info.run_id: r for r in all_runs(uri)}
    assert len(runs) == 2  # the resumed run continued, it was not duplicated
    assert runs[cut_run.info.run_id].info.status == "FINISHED"
    assert history(uri, cut_run.info.run_id) == history(uri, whole_run.info.run_id)
    for key in ("test_loss", "best_val_loss", "best_epoch"):
        assert runs[cut_run.info.run_id].data.metrics[key] == whole_run.data.metrics[key]
    final = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)


@pytest.mark.slow
def test_a_tampered_or_truncated_snapshot_is_refused(tmp_path):
    proc = run_cli(tmp_path, "trainer.max_epochs=3", "tracking=none", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "run" / "snapshot.pt"
    good = path.read_bytes()
    assert checkpoint.load(path)["progress"]["epoch"] == 3
    for bad in (good[: len(good) // 2], good[:-9] + bytes([good[-9] ^ 1]) + good[-8:]):
        path.write_bytes(bad)
        proc = run_cli(tmp_path, f"resume={tmp_path}/run", "tracking=none")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"error: snapshot {path} is truncated or was modified (SHA-256 mismatch); not loading it"
        ]


@pytest.mark.slow
def test_resume_may_extend_training_but_not_change_the_method(tmp_path):
    proc = run_cli(tmp_path, "trainer.max_epochs=3", "tracking=none", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 0
    proc = run_cli(tmp_path, f"resume={tmp_path}/run", "optimizer.lr=0.5", "tracking=none")
    assert proc.returncode == 2
    assert "optimizer.lr: a resumed run keeps its config; only trainer.max_epochs" in proc.stderr
    proc = run_cli(tmp_path, f"resume={tmp_path}/run", "trainer.max_epochs=5", "tracking=none",
                   f"hydra.run.dir={tmp_path}/more")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.load(tmp_path / "more" / "snapshot.pt")["progress"]["epoch"] == 5


def test_warm_start_begins_from_the_other_runs_parameters(sqlite_uri):
    first = train(make_config("trainer.progress=false", "trainer.max_epochs=5"))
    (run,) = all_runs(sqlite_uri)
    logged = torch.load(Path(MlflowClient(sqlite_uri).download_artifacts(run.info.run_id, "model/model.pt")),
                        weights_only=True)["state_dict"]  # fmt: skip
    cfg = make_config("trainer.progress=false", "optimizer=gd", f"warm_start={run.info.run_id}")
    model = build(cfg).model
    assert isinstance(model, LinearRegression)
    load_warm_start(cfg, model)
    assert torch.equal(model.weight.detach(), logged["weight"])
    second = train(cfg)
    assert second.history[0].param_error is not None and first.param_error is not None
    assert second.history[0].param_error < 10 * first.param_error  # it did not start from scratch
    refined = next(r for r in all_runs(sqlite_uri) if r.info.run_id != run.info.run_id)
    assert refined.data.tags["warm_start_from"] == run.info.run_id


def test_a_full_batch_run_stopped_right_after_its_step_resumes_identically(quiet_config):
    """A full-batch epoch is one step, so a stop lands after the epoch's last batch."""
    from src.loop import fit

    cfg = quiet_config("optimizer=gd", "trainer.max_epochs=20", "trainer.dtype=float64",
                       "trainer.patience=1000", "trainer.stopping_threshold=null")  # fmt: skip
    whole = fit(build(cfg))

    parts, saved = build(cfg), dict[str, Any]()

    def stop_after_eight_steps(optimizer, args, kwargs):
        saved["steps"] = saved.get("steps", 0) + 1
        if saved["steps"] == 8:
            parts.stop.record("interrupted")  # as the signal handler would, during the step

    parts.optimizer.register_step_post_hook(stop_after_eight_steps)

    def snapshot(p):
        saved["state"] = checkpoint.capture(p, parts, None, "")

    with pytest.raises(Stopped):
        fit(parts, snapshot=snapshot)
    progress = saved["state"]["progress"]
    assert progress["epoch"] == 7 and progress["sizes"] == [len(parts.data.train)]
    again = build(cfg)
    resumed = fit(again, progress=checkpoint.restore(saved["state"], again))
    assert [(m.train_loss, m.val_loss, m.lr, m.grad_norm) for m in resumed.history] == [
        (m.train_loss, m.val_loss, m.lr, m.grad_norm) for m in whole.history
    ]


def test_a_requeued_slurm_job_finds_the_snapshot_in_its_run_dir(tmp_path, monkeypatch):
    from src.loop.checkpoint import SNAPSHOT, requeued_snapshot

    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    (tmp_path / SNAPSHOT).write_bytes(b"")
    assert requeued_snapshot(tmp_path) is None  # a first start never resumes by itself
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_snapshot(tmp_path) == tmp_path
    assert requeued_snapshot(tmp_path / "elsewhere") is None  # requeued before its first snapshot
    assert requeued_snapshot(None) is None


def test_resume_auto_takes_the_run_dirs_own_snapshot_if_it_has_one(tmp_path):
    from src.loop.checkpoint import SNAPSHOT, own_snapshot

    assert own_snapshot(tmp_path) is None  # nothing yet: the run starts afresh
    (tmp_path / SNAPSHOT).write_bytes(b"")
    assert own_snapshot(tmp_path) == tmp_path
    assert own_snapshot(None) is None


def test_resume_auto_is_refused_for_an_optuna_sweep_before_anything_is_written(tmp_path):
    """Its jobs' run dirs (multirun/0, 1, ...) are not its trials': a study continues when its command
    runs again, without resume=auto."""
    args = (
        "--multirun",
        "hydra/sweeper=optuna",
        "optimizer.lr=interval(0.01,0.1)",
        "hydra.sweeper.n_trials=2",
    )
    done = run_cli(tmp_path, *args, "resume=auto", "hydra.sweep.dir=sw")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "error: resume=auto continues a multirun's jobs from their run dirs, not an Optuna"
    )
    assert "run the same command without it" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no study, no sweep dir
