"""One shared service for many workers, as the README sets it up: a PostgreSQL database for MLflow
and one for Optuna, one `mlflow server` in front of the first, passwords in a pgpass file only, and
independent sweep processes that log to the server and share one study."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import cli_env, mlflow_server_on

pytestmark = pytest.mark.slow

QUICK = ("trainer.max_epochs=30", "trainer.progress=false")


def psql(sql: str) -> None:
    subprocess.run(["su", "postgres", "-c", f'psql -q -v ON_ERROR_STOP=1 -c "{sql}"'], check=True)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A role with two databases (`<role>_mlflow`, `<role>_optuna`) on the local PostgreSQL, and a
    pgpass file holding its password; yields the role and the file."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL (pg_ctlcluster) and root to create its roles")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"], capture_output=True)
    for _ in range(50):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            break
        time.sleep(0.2)
    role, password = f"i17_{secrets.token_hex(4)}", secrets.token_hex(12)
    psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    for db in ("mlflow", "optuna"):
        psql(f"CREATE DATABASE {role}_{db} OWNER {role}")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:5432:*:{role}:{password}\n")
    pgpass.chmod(0o600)  # libpq ignores a pgpass others can read
    try:
        yield role, pgpass
    finally:
        for db in ("mlflow", "optuna"):
            psql(f"DROP DATABASE IF EXISTS {role}_{db} WITH (FORCE)")
        psql(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def mlflow_server(tmp_path: Path, database: tuple[str, Path]) -> Iterator[str]:
    """`mlflow server` backed by the role's MLflow database; yields its URL."""
    role, pgpass = database
    store = f"postgresql+psycopg2://{role}@127.0.0.1:5432/{role}_mlflow"
    with mlflow_server_on(store, tmp_path, PGPASSFILE=str(pgpass)) as url:
        yield url


def test_sweeps_on_many_workers_log_to_one_server_and_share_one_study(tmp_path, database, mlflow_server):
    role, pgpass = database
    storage = f"postgresql://{role}@127.0.0.1:5432/{role}_optuna"  # no password: it is in pgpass
    n_trials = 4
    args = (
        "--multirun", "hydra/sweeper=descentlab_optuna", f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))", f"tracking.uri={mlflow_server}", *QUICK,
    )  # fmt: skip
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "src.train",
                *args,
                f"hydra.sweep.dir={tmp_path / f'worker{i}'}",
                f"hydra.sweeper.sampler.seed={i}",
            ],
            cwd=tmp_path,
            env=cli_env(PGPASSFILE=str(pgpass)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [{int(n) for n in re.findall(r"trial (\d+) (?:COMPLETE|PRUNED|FAIL)", out)} for out in outputs]
    assert not ran[0] & ran[1] and ran[0] | ran[1] == set(range(n_trials)), ran  # each trial run once

    os.environ["PGPASSFILE"] = str(pgpass)  # the test reads the study as a worker would
    try:
        study = optuna.load_study(
            study_name="shared", storage=storage.replace("postgresql:", "postgresql+psycopg2:")
        )
    finally:
        del os.environ["PGPASSFILE"]
    assert sorted(t.number for t in study.trials if t.state.is_finished()) == list(range(n_trials))

    client = MlflowClient(mlflow_server)
    (experiment,) = [e for e in client.search_experiments() if e.name == "descentlab"]
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = [r for r in runs if "optuna.trial" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs) == list(range(n_trials))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(runs) == n_trials + 2  # and the two sweeps' parent runs
    # artifacts went through the server to its store
    assert any((tmp_path / "artifacts").rglob("loss_curve.png"))
