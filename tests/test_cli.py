"""The command line as a user types it: default run, multirun, and bad input."""

from __future__ import annotations

import pytest

from tests.helpers import all_runs


@pytest.mark.slow
def test_default_run_prints_summary_and_logs_a_finished_run(cli, tmp_path):
    proc = cli()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "stopped: early_stopped" in out
    error = float(out.split("||theta - theta_hat|| = ")[1].split()[0])
    assert error <= 1e-3
    (run,) = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.info.status == "FINISHED"
    assert {"train_loss", "val_loss", "lr", "best_val_loss", "test_loss", "param_error"} <= set(
        run.data.metrics
    )
    assert run.data.params["optimizer"] == "sgd"


@pytest.mark.slow
def test_multirun_over_optimizers_leaves_one_finished_run_each(cli, tmp_path):
    proc = cli("--multirun", "optimizer=sgd,momentum,nesterov,adam")
    assert proc.returncode == 0, proc.stderr
    runs = [r for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4  # one child per job (under the sweep's parent run)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {"train_loss", "val_loss", "lr", "best_val_loss", "test_loss", "param_error"} <= set(
        runs[0].data.metrics
    )
    choices = {r.data.params["optimizer"]: r.data.params.get("optimizer.nesterov") for r in runs}
    assert choices == {"sgd": "False", "momentum": "False", "nesterov": "True", "adam": None}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "optimizer=nope",
            "optimizer=nope is not a choice; available: adagrad, adam, adamw, gd, lbfgs, momentum, "
            "nesterov, newton, preconditioned, rmsprop, sgd",
        ),
        ("optimizer.lr=abc", "optimizer.lr: Value 'abc' of type 'str' could not be converted to Float"),
        ("optimizer.lr=-1", "optimizer.lr=-1.0 is not allowed: must be > 0"),
        ("data.train_prop=0.95", "train_prop + val_prop = 1.1 must be <= 1"),
        ("optimizer.lrr=0.1", "optimizer.lrr: Key 'lrr' not in 'SGDConf'"),
        ("trainer.sampling=sometimes", "expected one of [shuffle, replacement, sequential]"),
        ("trainer.batch_size=0", "trainer.batch_size=0 is not allowed"),
        ("regularization.l2=-1", "regularization.l2=-1.0 is not allowed: must be >= 0"),
        ("schedule=robbins_monro", None),  # a valid choice, to prove the check is not blanket
    ],
)
def test_bad_input_is_one_line_nonzero_and_leaves_no_run(cli, tmp_path, override, expected):
    if expected is None:
        proc = cli(override, "trainer.max_epochs=2")
        assert proc.returncode == 0, proc.stderr
        return
    proc = cli(override)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert all(r.info.status != "RUNNING" for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}"))


def test_full_error_shows_the_traceback(cli):
    proc = cli("optimizer.lr=-1", HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
