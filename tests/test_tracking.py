"""MLflow tracking against real stores: a sqlite file and a real `mlflow server` process."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from src import compare, jobs, tracking
from src.loop import EpochMetrics
from src.tracking import curves
from src.tracking import store as mlflow_store
from src.train import build, train
from tests.helpers import all_runs, artifact_paths, interrupt_midway, make_config, mlflow_server_on, run_cli

EPOCH_METRICS = ("train_loss", "val_loss", "lr", "grad_norm", "param_error", "epoch_time")


@pytest.mark.slow
def test_a_cli_run_records_everything(cli, tmp_path):
    proc = cli("optimizer=nesterov", "trainer.max_epochs=30")
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = all_runs(uri)
    client = MlflowClient(uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "nesterov max_epochs=30 lr=0.05"  # what its command line set
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["optimizer"] == "nesterov" and params["schedule"] == "constant"
    assert params["optimizer.lr"] == "0.05" and params["optimizer.nesterov"] == "True"
    assert params["trainer.sampling"] == "shuffle" and params["data.n"] == "1000"
    assert not [k for k in params if "_target_" in k or k.startswith(("tracking", "resume"))]
    assert "None" not in params.values() and len(params) <= 25
    assert tags["choice.optimizer"] == "nesterov" and tags["choice.schedule"] == "constant"
    assert "optimizer=nesterov" in tags["overrides"]
    assert tags["stop_reason"] == "max_epochs"
    assert len(tags["mlflow.source.git.commit"]) == 40
    # MLflow's own Source, User and Description fields.
    assert tags["mlflow.source.name"] == "src.train" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and tags["mlflow.note.content"].startswith(
        "python -m src.train optimizer=nesterov"
    )
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, 31))
    # Run-level results: one point each, at step 0 (MLflow's charts draw them as bars).
    for key in ("best_val_loss", "test_loss", "epochs", "best_epoch", "wall_time"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0]
    assert metrics["epochs"] == 30 and 1 <= metrics["best_epoch"] <= 30
    assert metrics["best_val_loss"] == min(
        m.value for m in client.get_metric_history(run.info.run_id, "val_loss")
    )
    # The data as an MLflow dataset input, with its rows per split.
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "linear" and len(dataset.digest) == 8 and dataset.source_type == "code"
    assert json.loads(dataset.profile) == {
        "train_rows": 700,
        "val_rows": 150,
        "test_rows": 150,
        "features": 2,
    }
    assert {
        "config.yaml",
        "loss_curve.png",
        "model/model.pt",
        "model/MLmodel",
        "estimates.csv",  # a linear model: its table of estimates
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        ".hydra/hydra.yaml",
    } <= artifact_paths(client, run.info.run_id)

    # The logged model, rebuilt from MLflow, reproduces the logged test loss exactly.
    evaluated = run_cli(tmp_path, run.info.run_id, "--uri", uri, module="src.evaluate")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test_loss {metrics['test_loss']!r}" in evaluated.stdout

    # The model is an MLflow model: the run lists it, and pyfunc predicts x·θ with its weights.
    (output,) = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).source_run_id == run.info.run_id
    weights = torch.load(
        client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path)), weights_only=True
    )["state_dict"]["weight"]
    X = np.random.default_rng(0).normal(size=(5, 2))
    mlflow.set_tracking_uri(uri)
    for model_uri in (f"runs:/{run.info.run_id}/model", f"models:/{output.model_id}"):
        predicted = mlflow.pyfunc.load_model(model_uri).predict(X)
        np.testing.assert_allclose(predicted, X @ weights.double().numpy(), rtol=1e-6)


def test_a_default_run_logs_at_most_25_params_a_reader_compares_by(sqlite_uri):
    train(make_config("trainer.progress=false", "trainer.max_epochs=2"))
    (run,) = all_runs(sqlite_uri)
    assert set(run.data.params) == {  # SGD's momentum, dampening, nesterov, weight_decay: torch's defaults
        "seed", "optimizer", "optimizer.lr", "schedule", "schedule.interval",
        "data", "data.n", "data.dim", "data.noise_std", "data.train_prop", "data.val_prop",
        "model", "model.bias", "trainer.max_epochs", "trainer.batch_size", "trainer.sampling",
        "trainer.patience", "trainer.min_delta", "trainer.stopping_threshold", "trainer.dtype",
        "regularization.l2",
    }  # fmt: skip
    assert "overrides" not in run.data.tags  # nothing set on a command line: no empty tag
    assert run.info.run_name == "sgd lr=0.1"  # outside Hydra: named by its optimizer and lr


def test_comparison_metrics_are_the_losses_relative_to_the_exact_solution(sqlite_uri):
    """val_loss_ratio, test_loss_ratio, objective_digits and theta_digits against θ* from numpy's
    least squares on the same training split, not the project's QR."""
    cfg = make_config("trainer.progress=false", "trainer.max_epochs=15", "trainer.dtype=float64")
    data = build(cfg).data  # the same seed draws the same data the run trains on
    X, y = data.train.X.numpy(), data.train.y.numpy()
    theta = np.linalg.lstsq(X, y, rcond=None)[0]
    optimum = float(np.mean((X @ theta - y) ** 2))
    at_theta = {s: float(np.mean((split.X.numpy() @ theta - split.y.numpy()) ** 2))
                for s, split in (("val", data.val), ("test", data.test))}  # fmt: skip
    train(cfg)
    (run,) = all_runs(sqlite_uri)
    metrics, client = run.data.metrics, MlflowClient(sqlite_uri)
    assert metrics["val_loss_ratio"] == pytest.approx(metrics["best_val_loss"] / at_theta["val"], rel=1e-9)
    assert metrics["test_loss_ratio"] == pytest.approx(metrics["test_loss"] / at_theta["test"], rel=1e-9)
    assert 0.5 < metrics["val_loss_ratio"] < 2  # a number MLflow's table shows without an exponent
    keys = ("opt_gap", "objective_digits", "ref_error", "theta_digits")
    history = {k: client.get_metric_history(run.info.run_id, k) for k in keys}
    for gap, digits in zip(history["opt_gap"], history["objective_digits"], strict=True):
        assert digits.value == pytest.approx(min(16, max(0, -math.log10(gap.value / optimum))), abs=1e-6)
    for error, digits in zip(history["ref_error"], history["theta_digits"], strict=True):
        assert digits.value == pytest.approx(-math.log10(error.value / np.linalg.norm(theta)), abs=1e-6)
    assert all(0 <= m.value <= 16 for m in history["objective_digits"])  # ≥ 0 by construction


def test_without_an_exact_solution_the_loss_is_compared_by_its_log10(sqlite_uri):
    train(make_config("model=mlp", "trainer.progress=false", "trainer.max_epochs=3"))
    (run,) = all_runs(sqlite_uri)
    metrics = run.data.metrics
    assert "val_loss_ratio" not in metrics and "objective_digits" not in metrics
    assert metrics["log10_best_val_loss"] == pytest.approx(math.log10(metrics["best_val_loss"]))
    history = MlflowClient(sqlite_uri).get_metric_history(run.info.run_id, "log10_val_loss")
    val_loss = MlflowClient(sqlite_uri).get_metric_history(run.info.run_id, "val_loss")
    assert [m.value for m in history] == pytest.approx([math.log10(m.value) for m in val_loss])


def test_a_run_that_raises_ends_failed_with_the_error(sqlite_uri):
    class Boom:
        def on_epoch_end(self, metrics: EpochMetrics) -> None:
            if metrics.epoch == 2:
                raise RuntimeError("exploded at epoch 2")

    with pytest.raises(RuntimeError):
        train(make_config("trainer.progress=false"), callbacks=[Boom()])
    (run,) = all_runs(sqlite_uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: exploded at epoch 2"
    history = MlflowClient(sqlite_uri).get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]  # what was trained before the failure is kept


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_ends_killed(tmp_path, sig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ("trainer.max_epochs=100000", "trainer.patience=100000", "trainer.stopping_threshold=null")
    proc = interrupt_midway(tmp_path, uri, sig, *args, f"hydra.run.dir={tmp_path}/out")
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].split(";")[0] == "interrupted"  # then where to resume
    (run,) = all_runs(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "Stopped: interrupted"
    assert run.data.tags["stop_reason"] == "interrupted"


def test_opening_a_store_ends_the_runs_of_dead_processes_killed(sqlite_uri):
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead_owner = f"{socket.gethostname()} {gone.pid} {mlflow_store.process_start(gone.pid)}"
    gone.kill()
    gone.wait()
    client, experiment = tracking.client_and_experiment(sqlite_uri, "descentlab")
    owners = {"dead": dead_owner, "alive": mlflow_store.this_process(), "elsewhere": "other-host 1 123"}
    ids = {
        name: client.create_run(experiment, tags={mlflow_store.PROCESS_TAG: owner}).info.run_id
        for name, owner in owners.items()
    }
    tracking.client_and_experiment(sqlite_uri, "descentlab")  # as the next run or sweep does
    runs = {name: client.get_run(run_id) for name, run_id in ids.items()}
    assert {name: run.info.status for name, run in runs.items()} == {
        "dead": "KILLED",
        "alive": "RUNNING",  # this process
        "elsewhere": "RUNNING",  # left to the sweeper's heartbeat
    }
    assert runs["dead"].data.tags["stop_reason"] == "process_died"
    assert runs["dead"].data.tags["error"].startswith(f"its process died (descentlab.process {dead_owner})")


@pytest.mark.slow
def test_ctrl_c_ends_a_sweep_and_its_parent_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ("trainer.max_epochs=100000", "trainer.patience=100000", "trainer.stopping_threshold=null")
    proc = interrupt_midway(tmp_path, uri, signal.SIGINT, "--multirun", "optimizer=sgd,adam", *args,
                            f"hydra.sweep.dir={tmp_path}/multirun")  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    runs = all_runs(uri)
    assert sum("descentlab.sweep_dir" in r.data.tags for r in runs) == 1
    assert {r.info.status for r in runs} == {"KILLED"}  # the parent and the job it was running, if any


@pytest.mark.slow
def test_multirun_is_one_parent_with_a_child_per_job(cli, tmp_path):
    proc = cli("--multirun", "optimizer=sgd,nesterov", "trainer.batch_size=1,32,null", "trainer.max_epochs=5")
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = all_runs(uri)
    parents = [r for r in runs if "descentlab.sweep_dir" in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6 and len(runs) == 7
    (parent,) = parents
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    # Each child is named by the values that differ between the sweep's runs: each optimizer's lr too.
    assert sorted(c.info.run_name for c in children) == [
        "nesterov bs=1 lr=0.05", "nesterov bs=32 lr=0.05", "nesterov bs=full lr=0.05",
        "sgd bs=1 lr=0.1", "sgd bs=32 lr=0.1", "sgd bs=full lr=0.1",
    ]  # fmt: skip
    assert parent.info.run_name == "sweep optimizer×2 bs×3 max_epochs=5"  # ≤ 40 characters
    # The parent carries the best child's results, so its row in the runs table is not blank.
    best = min(children, key=lambda c: c.data.metrics["best_val_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_val_loss"] == best.data.metrics["best_val_loss"]
    assert parent.data.metrics["test_loss"] == best.data.metrics["test_loss"]
    assert "compare.png" in artifact_paths(MlflowClient(uri), parent.info.run_id)
    assert "best_val_loss" in proc.stdout  # the comparison table printed at the end
    # ... and where everything is.
    experiment = parent.info.experiment_id
    assert f"sweep dir:   {tmp_path / 'multirun'}" in proc.stdout
    assert f"compare.png: {tmp_path / 'multirun' / 'compare.png'}" in proc.stdout
    assert f"parent run:  {parent.info.run_id}" in proc.stdout
    assert (
        f"mlflow ui --backend-store-uri {uri}  then open  "
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
    ) in proc.stdout


def test_compare_orders_runs_and_overlays_their_curves(tmp_path):
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("known")
    parent = client.create_run(experiment, run_name="sweep", tags={"descentlab.sweep_dir": "x"}).info.run_id
    curves = {"slow": [1.0, 0.5, 0.4], "fast": [1.0, 0.1, 0.01], "mid": [1.0, 0.3, 0.2]}
    for name, curve in curves.items():
        run_id = client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": parent}).info.run_id
        metrics = [Metric("val_loss", v, 0, step) for step, v in enumerate(curve, start=1)]
        metrics.append(Metric("best_val_loss", min(curve), 0, 3))
        client.log_batch(run_id, metrics=metrics, params=[])
        client.set_tag(run_id, "stop_reason", "max_epochs")
        client.set_terminated(run_id)
    runs = compare.child_runs(client, parent)
    lines = compare.table(runs).splitlines()
    assert lines[0].split()[:3] == ["run", "best_val_loss", "test_loss"]
    assert [line.split()[0] for line in lines[1:]] == ["fast", "mid", "slow"]
    assert lines[1].split()[1] == "0.01"
    fig = compare.overlay_figure(client, runs)
    plotted = {line.get_label(): np.asarray(line.get_ydata()).tolist() for line in fig.axes[0].lines}
    assert plotted == curves
    assert fig.axes[0].get_yscale() == "log"  # the values span two decades

    proc = run_cli(tmp_path, "--experiment", "known", "--uri", uri, "--out", "c.png", module="src.compare")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").stat().st_size > 0


def drawn_afresh(history: list[tuple[int, float, float]], best_epoch: int, title: str, path: Path) -> bytes:
    """The loss curve as a new pyplot figure draws it: what a run's PNG showed before the figure was
    reused across runs."""
    import matplotlib.pyplot as plt

    epochs, train, val = zip(*history, strict=True) if history else ((), (), ())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, train, label="train_loss")
    ax.plot(epochs, val, label="val_loss")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=title)
    ax.legend()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.read_bytes()


def test_each_loss_curve_is_the_png_a_fresh_figure_draws(tmp_path):
    """One figure redrawn run after run: no limit, tick, line or legend of an earlier run shows."""
    import matplotlib

    matplotlib.use("Agg")
    noisy = [(e, 0.2 * 0.5**e + 1e-6, 0.25 * 0.5**e + 1.1e-6) for e in range(1, 115)]
    shown = [
        (noisy, 50, "sgd seed=0 (patience)"),
        ([(e, 10 ** (-e / 10), 10 ** (-e / 12)) for e in range(1, 201)], 200, "many decades (max_epochs)"),
        (noisy[:30], 0, "no best epoch (max_epochs)"),
        ([(e, 1e3 * 2.0**e, 2e3 * 2.0**e) for e in range(1, 40)], 1, "diverged (diverged)"),
        ([(1, 0.5, 0.6)], 1, "one epoch (tolerance)"),
        ([(e, 1.0, math.nan) for e in range(1, 6)], 0, "no validation (max_epochs)"),
        ([], 0, "no epoch (stopped)"),
        (noisy[:5], 3, "short (patience)"),
    ]
    figure = curves.LossCurves()
    for i, (history, best, title) in enumerate([*shown, *reversed(shown), *shown[::3]]):
        drawn = curves.loss_curve(history, best, title, tmp_path / f"{i}.png", figure).read_bytes()
        assert drawn == drawn_afresh(history, best, title, tmp_path / f"{i}-afresh.png"), title


def test_a_batchs_loss_curves_are_drawn_apart_and_logged_as_each_run_ends(tmp_path, monkeypatch):
    """The sidecar's writer with several runs open (a batch closing) draws each curve in a process
    of its own, on that process's one figure; each PNG is still the one a fresh figure draws (also
    after a failed drawing), and a curve that cannot be drawn fails its run as it did when drawn in
    turn."""
    from src.tracking.store import RunWriter

    monkeypatch.chdir(tmp_path)  # the writer works in the training process's directory
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    where: dict[str, Any] = {"uri": uri, "experiment": "batch", "cwd": str(tmp_path), "env": env}
    writer = RunWriter(draw_apart=True)
    opened = {key: writer(RunWriter.open_run, key, where, f"run {key}", {}, [], "a: 1\n") for key in "abc"}
    ids = {key: run[1] for key, run in opened.items() if run is not None}
    history = [(1, 1.0, 2.0), (2, 0.5, 0.7), (3, 0.4, 0.75)]
    later = [(e, 10.0 / e**2, 20.0 / e) for e in range(1, 41)]  # other limits, ticks and no best line
    writer(RunWriter.log_loss_curve, "a", history, 2, "patience", str(tmp_path / "a.png"))
    writer(RunWriter.log_loss_curve, "b", history, 2, "patience", str(tmp_path / "missing" / "b.png"))
    writer(RunWriter.log_loss_curve, "c", later, 0, "max_epochs", str(tmp_path / "c.png"))
    assert set(writer.drawings) == {"a", "b", "c"}  # all sent to the drawing process
    writer(RunWriter.terminate, "a", "FINISHED", None, None)
    with pytest.raises(FileNotFoundError):
        writer(RunWriter.terminate, "b", "FINISHED", None, None)
    writer(RunWriter.terminate, "c", "FINISHED", None, None)
    writer.end_all("the test ended")
    client = MlflowClient(uri)
    runs = {key: client.get_run(run_id) for key, run_id in ids.items()}
    assert runs["a"].info.status == "FINISHED" and runs["b"].info.status == "FAILED"
    assert runs["b"].data.tags["error"].startswith("FileNotFoundError")
    assert "b.png" not in artifact_paths(client, ids["b"])
    logged = Path(client.download_artifacts(ids["a"], "a.png", str(tmp_path / "logged")))
    assert logged.read_bytes() == drawn_afresh(history, 2, "run a (patience)", tmp_path / "fresh.png")
    logged = Path(client.download_artifacts(ids["c"], "c.png", str(tmp_path / "logged")))
    assert logged.read_bytes() == drawn_afresh(later, 0, "run c (max_epochs)", tmp_path / "fresh-c.png")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1, serving artifacts itself (clients upload over HTTP)."""
    root = tmp_path_factory.mktemp("server")
    with mlflow_server_on(f"sqlite:///{root / 'server.db'}", root) as url:
        yield url


@pytest.mark.slow
def test_runs_reach_a_remote_mlflow_server(mlflow_server, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = train(
        make_config("trainer.progress=false", "trainer.max_epochs=10", f"tracking.uri={mlflow_server}")
    )
    client = MlflowClient(mlflow_server)
    (run,) = all_runs(mlflow_server)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_loss"] == result.test_loss
    assert run.data.params["optimizer.lr"] == "0.1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == list(range(1, 11))
    assert {"config.yaml", "loss_curve.png", "model/model.pt"} <= artifact_paths(client, run.info.run_id)
    assert not Path(tmp_path / "mlflow.db").exists()  # nothing went to the default local store


@pytest.mark.slow
def test_a_sweep_that_dies_leaves_nothing_running(cli, tmp_path):
    proc = cli("--multirun", "optimizer.lr=0.1,-1", "trainer.max_epochs=5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: optimizer.lr=-1.0 is not allowed: must be > 0"
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    statuses = sorted((("descentlab.sweep_dir" in r.data.tags), r.info.status) for r in runs)
    assert statuses == [(False, "FINISHED"), (True, "FAILED")]  # the first job, then its parent


def test_a_multiruns_values_reach_each_job_through_hydra_and_a_jobs_own_win():
    """MultirunParent passes the parent id to the jobs as `hydra.job.env_set` overrides of the
    multirun's config, from which Hydra composes every job (in any launcher); a sweeper's override
    of the same key for one job (a trial's run with repeats) wins."""
    from hydra import compose, initialize_config_dir

    from tests.helpers import CONF

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        multirun = compose("config", return_hydra_config=True)
        jobs.pass_to_jobs(multirun, {jobs.PARENT_RUN_ENV: "abc123", jobs.SWEPT_ENV: "optimizer,lr"})
        assert jobs.passed_to_jobs(multirun) == {
            jobs.PARENT_RUN_ENV: "abc123",
            jobs.SWEPT_ENV: "optimizer,lr",  # a comma, quoted: not a sweep
        }
        hydra_overrides = list(multirun.hydra.overrides.hydra)
        job = compose("config", overrides=hydra_overrides, return_hydra_config=True)
        trial = compose(
            "config",
            overrides=[*hydra_overrides, f"++hydra.job.env_set.{jobs.PARENT_RUN_ENV}=trial9"],
            return_hydra_config=True,
        )
    assert job.hydra.job.env_set[jobs.PARENT_RUN_ENV] == "abc123"
    assert job.hydra.job.env_set[jobs.SWEPT_ENV] == "optimizer,lr"
    assert trial.hydra.job.env_set[jobs.PARENT_RUN_ENV] == "trial9"
    with pytest.raises(ValueError, match="no quotes"):
        jobs.pass_to_jobs(multirun, {"X": "it's"})
