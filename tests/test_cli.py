"""The command line as a user types it: default run, multirun, and bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import all_runs, cli_env


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
    # a value at its default is not a param (≤ 25 params a run): only nesterov's True differs
    assert choices == {"sgd": None, "momentum": None, "nesterov": "True", "adam": None}


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
        (
            "optimizer.lrr=0.1",
            "optimizer.lrr is not a key of optimizer=sgd: did you mean optimizer.lr? Its keys: lr,",
        ),
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


def test_a_bad_override_is_one_error_line_and_exit_2_whatever_the_callers_hydra_full_error(cli):
    proc = cli("optimizer.lr=abc", HYDRA_FULL_ERROR="0")  # set, but not to 1: one line still
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: optimizer.lr: Value 'abc' of type 'str' could not be converted to Float"
    ]


# cli.run sets HYDRA_FULL_ERROR=1 for the call (Hydra's only way to hand an error on): in the process
# that called it, whatever the caller had is back afterwards.
KEEPS_THE_CALLERS_VALUE = """
import os, runpy, sys
{setup}
sys.argv = ["train", "optimizer.lr=-1", "hydra.run.dir=outputs/run"]
try:
    runpy.run_module("src.train", run_name="__main__")  # python -m src.train, in this process
except SystemExit as exc:
    print(exc.code, os.environ.get("HYDRA_FULL_ERROR", "<unset>"))
"""


@pytest.mark.parametrize(
    ("setup", "after"),
    [('os.environ["HYDRA_FULL_ERROR"] = "0"', "0"), ('os.environ.pop("HYDRA_FULL_ERROR", None)', "<unset>")],
)
def test_a_callers_hydra_full_error_is_kept(tmp_path, setup, after):
    script = KEEPS_THE_CALLERS_VALUE.format(setup=setup)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert proc.stdout.split() == ["2", after], proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: optimizer.lr=-1.0 is not allowed: must be > 0"]


def test_help_lists_the_groups_to_pick_from_and_not_the_internal_schemas(cli):
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = [line.split(":")[0] for line in groups.splitlines() if ": " in line]
    assert listed == ["data", "experiment", "model", "optimizer", "schedule", "tracking"]
    assert "optimizer: adagrad, adam, adamw, gd, lbfgs, momentum, nesterov, newton" in groups
    assert "schema" not in proc.stdout
