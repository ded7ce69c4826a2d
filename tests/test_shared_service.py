"""One shared service for many workers, as docs/cluster.md sets it up: MLflow's basic-auth server in
front of a PostgreSQL database its own role owns, a workers' MLflow user, a workers' PostgreSQL role
that may only read and write Optuna's tables, passwords in files and variables only; independent
sweep processes log to the server and share one study, and no password is recorded anywhere."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import cli_env, mlflow_server_on

pytestmark = pytest.mark.slow

QUICK = ("trainer.max_epochs=30", "trainer.progress=false")
HYDRA_WRITES = {"config.yaml", "hydra.yaml", "overrides.yaml", "multirun.yaml"}  # Hydra's, not ours


def psql(sql: str, database: str = "postgres") -> None:
    command = f'psql -q -v ON_ERROR_STOP=1 -d {database} -c "{sql}"'
    subprocess.run(["su", "postgres", "-c", command], check=True)


def secret_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)  # libpq and the project refuse a password file others can read
    return path


@dataclass
class Service:
    url: str  # the MLflow server
    roles: str  # the prefix of the test's PostgreSQL roles and databases
    storage: str  # the study storage, without password (the workers' role; its password in `pgpass`)
    db_password: str  # the workers' PostgreSQL password
    pgpass: Path
    admin: dict[str, str]  # MLflow logins as environment variables
    workers: dict[str, str]
    reader: dict[str, str]
    root: Path

    def runs(self) -> list:
        """Every run of experiment descentlab, read as the server's admin."""
        saved = {k: os.environ.get(k) for k in self.admin}
        os.environ.update(self.admin)
        try:
            client = MlflowClient(self.url)
            experiment = client.get_experiment_by_name("descentlab")
            return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.update({k: v})


def api(url: str, path: str, login: dict[str, str] | None = None, body: dict | None = None) -> int:
    """The status of a request to the server's REST API, with `login` (MLflow's variables) if given."""
    headers = {"Content-Type": "application/json"}
    if login:
        pair = f"{login['MLFLOW_TRACKING_USERNAME']}:{login['MLFLOW_TRACKING_PASSWORD']}"
        headers["Authorization"] = "Basic " + b64encode(pair.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def start_postgres() -> None:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL (pg_ctlcluster) and root to create its roles")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"], capture_output=True)
    for _ in range(50):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            return
        time.sleep(0.2)


def create_databases(p: str, passwords: dict[str, str], root: Path) -> None:
    """docs/cluster.md's roles: `<p>_server` owns MLflow's two databases; `<p>_owner` owns Optuna's
    and creates its tables; `<p>_workers` may connect to Optuna's only, and only read and write rows."""
    for role, password in passwords.items():
        psql(f"CREATE ROLE {p}_{role} LOGIN PASSWORD '{password}'")
    for db, owner in (("mlflow", "server"), ("mlflow_auth", "server"), ("optuna", "owner")):
        psql(f"CREATE DATABASE {p}_{db} OWNER {p}_{owner}")
        psql(f"REVOKE ALL ON DATABASE {p}_{db} FROM PUBLIC")
    psql(f"GRANT CONNECT ON DATABASE {p}_optuna TO {p}_workers")
    owner_pgpass = secret_file(
        root / "owner" / "pgpass", f"127.0.0.1:5432:*:{p}_owner:{passwords['owner']}\n"
    )
    owner = f"postgresql+psycopg2://{p}_owner@127.0.0.1:5432/{p}_optuna"  # creates Optuna's tables:
    create = f"import optuna; optuna.storages.RDBStorage('{owner}')"
    subprocess.run([sys.executable, "-c", create], env=cli_env(PGPASSFILE=str(owner_pgpass)), check=True)
    grant = "SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"
    psql(
        f"GRANT {grant} TO {p}_workers; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {p}_workers",
        f"{p}_optuna",
    )


def create_user(url: str, admin: dict[str, str], name: str) -> dict[str, str]:
    login = {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": secrets.token_hex(12)}
    body = {"username": name, "password": login["MLFLOW_TRACKING_PASSWORD"]}
    assert api(url, "users/create", admin, body) == 200
    return login


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """PostgreSQL roles and databases, and MLflow's basic-auth server on them, with two users:
    `workers` (who creates experiment descentlab, so may write to it) and `reader` (who may read it)."""
    start_postgres()
    root = tmp_path_factory.mktemp("service")
    p = f"i28_{secrets.token_hex(4)}"
    passwords = {role: secrets.token_hex(12) for role in ("server", "owner", "workers")}
    try:
        create_databases(p, passwords, root)
        server_pgpass = secret_file(
            root / "server" / "pgpass", f"127.0.0.1:5432:*:{p}_server:{passwords['server']}\n"
        )
        auth_db = f"postgresql+psycopg2://{p}_server@127.0.0.1:5432/{p}_mlflow_auth"
        ini = f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_db}\nadmin_username = admin\n"
        auth_ini = secret_file(root / "server" / "basic_auth.ini", ini)
        admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": secrets.token_hex(12)}
        with mlflow_server_on(
            f"postgresql+psycopg2://{p}_server@127.0.0.1:5432/{p}_mlflow",
            root / "server",
            app="basic-auth",
            PGPASSFILE=str(server_pgpass),
            MLFLOW_AUTH_CONFIG_PATH=str(auth_ini),
            MLFLOW_AUTH_ADMIN_PASSWORD=admin["MLFLOW_TRACKING_PASSWORD"],
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        ) as url:
            workers, reader = create_user(url, admin, "workers"), create_user(url, admin, "reader")
            assert api(url, "experiments/create", workers, {"name": "descentlab"}) == 200
            pgpass = secret_file(
                root / "workers" / "pgpass", f"127.0.0.1:5432:*:{p}_workers:{passwords['workers']}\n"
            )
            storage = f"postgresql://{p}_workers@127.0.0.1:5432/{p}_optuna"  # no password: it is in pgpass
            yield Service(url, p, storage, passwords["workers"], pgpass, admin, workers, reader, root)
    finally:
        for db in ("mlflow", "mlflow_auth", "optuna"):
            psql(f"DROP DATABASE IF EXISTS {p}_{db} WITH (FORCE)")
        for role in passwords:
            psql(f"DROP ROLE IF EXISTS {p}_{role}")


def worker_env(**extra: str) -> dict[str, str]:
    env = cli_env(**extra)
    for name in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "PGPASSWORD",
    ):
        if name not in extra:
            env.pop(name, None)
    return env


def test_the_server_lets_no_one_in_and_the_workers_role_reaches_only_optunas_rows(service: Service):
    url, p = service.url, service.roles
    assert api(url, "experiments/get-by-name?experiment_name=descentlab") == 401
    assert api(url, "experiments/search?max_results=5") == 401
    wrong = {**service.workers, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    assert api(url, "experiments/get-by-name?experiment_name=descentlab", wrong) == 401
    assert api(url, "experiments/get-by-name?experiment_name=descentlab", service.workers) == 200

    def connect(database: str) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1", dbname=f"{p}_{database}", user=f"{p}_workers", password=service.db_password
        )

    for database in ("mlflow", "mlflow_auth"):
        with pytest.raises(psycopg2.OperationalError, match="permission denied"):
            connect(database)
    with connect("optuna") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM studies")  # Optuna's rows: yes
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute("DROP TABLE trials")  # its tables: no
    connection.close()


def test_a_run_without_a_login_or_the_right_one_stops_before_training_in_one_line(service: Service, tmp_path):
    home = tmp_path / "home"  # no ~/.mlflow/credentials
    home.mkdir()
    before = {r.info.run_id for r in service.runs()}
    wrong = {**service.workers, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    cases = {
        "none": ({}, "asks for a login (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        "wrong": (wrong, "refused the login of user 'workers' (401): check MLFLOW_TRACKING_USERNAME and"),
        "reader": (service.reader, "user 'reader' may not write to experiment 'descentlab' (403"),
    }
    for name, (login, message) in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "src.train", f"tracking.uri={service.url}",
             f"hydra.run.dir={tmp_path / name}", *QUICK],
            cwd=tmp_path, env=worker_env(HOME=str(home), **login), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (name, done.stderr)
        assert "MLFLOW_TRACKING_USERNAME" in lines[0]
        assert "epoch" not in done.stdout.lower(), done.stdout  # nothing trained
    assert {r.info.run_id for r in service.runs()} == before  # nothing created, so nothing RUNNING


def sweep(
    service: Service, cwd: Path, storage: str, study: str, n_trials: int, seed: int, env: dict[str, str]
):
    args = (
        "--multirun", "hydra/sweeper=descentlab_optuna", f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study}",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))", f"tracking.uri={service.url}",
        f"hydra.sweep.dir={cwd / 'multirun'}", f"hydra.sweeper.sampler.seed={seed}", *QUICK,
    )  # fmt: skip
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def sweep_runs(service: Service, study_name: str) -> list:
    """The parent runs of the sweeps of this study and their runs."""
    runs = service.runs()
    parents = {r.info.run_id for r in runs if r.data.tags.get("optuna.study") == study_name}
    return [r for r in runs if r.info.run_id in parents or r.data.tags.get("mlflow.parentRunId") in parents]


def test_sweeps_on_many_workers_log_to_one_server_and_share_one_study(service: Service, tmp_path):
    n_trials, study_name = 4, f"shared_{secrets.token_hex(3)}"
    env = worker_env(PGPASSFILE=str(service.pgpass), **service.workers)
    workers = [
        sweep(service, tmp_path / f"worker{i}", service.storage, study_name, n_trials, i, env)
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [{int(n) for n in re.findall(r"trial (\d+) (?:COMPLETE|PRUNED|FAIL)", out)} for out in outputs]
    assert not ran[0] & ran[1] and ran[0] | ran[1] == set(range(n_trials)), ran  # each trial run once

    os.environ["PGPASSFILE"] = str(service.pgpass)  # the test reads the study as a worker would
    try:
        storage = service.storage.replace("postgresql:", "postgresql+psycopg2:")
        study = optuna.load_study(study_name=study_name, storage=storage)
    finally:
        del os.environ["PGPASSFILE"]
    assert sorted(t.number for t in study.trials if t.state.is_finished()) == list(range(n_trials))

    runs = sweep_runs(service, study_name)
    trial_runs = [r for r in runs if "optuna.trial" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs) == list(range(n_trials))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(runs) == n_trials + 2  # and the two sweeps' parent runs
    # artifacts went through the server to its store
    assert any((service.root / "server" / "artifacts").rglob("loss_curve.png"))


def test_no_password_is_recorded_however_it_was_given(service: Service, tmp_path):
    """Three workers, each with a study of one trial: A types the storage URL with its password on the
    command line, B interpolates it from a variable (`${oc.env:...}`) and reads its MLflow login from
    ~/.mlflow/credentials, C keeps it in a pgpass file; A's and C's MLflow logins are variables. Only
    the files Hydra itself writes from A's command line hold a password (docs/cluster.md)."""
    typed = service.storage.replace("_workers@", f"_workers:{service.db_password}@")
    login = service.workers
    home = tmp_path / "home"
    credentials = secret_file(
        home / ".mlflow" / "credentials",
        f"[mlflow]\nmlflow_tracking_username = {login['MLFLOW_TRACKING_USERNAME']}\n"
        f"mlflow_tracking_password = {login['MLFLOW_TRACKING_PASSWORD']}\n",
    )
    ways = {
        "A": (typed, worker_env(**login)),
        "B": ("${oc.env:DESCENTLAB_STORAGE}", worker_env(DESCENTLAB_STORAGE=typed, HOME=str(home))),
        "C": (service.storage, worker_env(PGPASSFILE=str(service.pgpass), **login)),
    }
    studies = {name: f"secrets_{name}_{secrets.token_hex(3)}" for name in ways}
    workers = {
        name: sweep(service, tmp_path / name, storage, studies[name], 1, 0, env)
        for name, (storage, env) in ways.items()
    }
    outputs = {name: worker.communicate(timeout=600)[0] for name, worker in workers.items()}
    assert {name: w.returncode for name, w in workers.items()} == dict.fromkeys(ways, 0), outputs
    planted = [service.db_password, login["MLFLOW_TRACKING_PASSWORD"]]

    def holds(text: str | bytes) -> bool:
        data = text.encode() if isinstance(text, str) else text
        return any(secret.encode() in data for secret in planted)

    # Files: the workers' outputs (run dirs, Hydra's job logs, the sweeps' results) and the server's
    # artifacts (the logged configs, .hydra copies, plots, models).
    files = [
        f for d in (tmp_path, service.root / "server" / "artifacts") for f in d.rglob("*") if f.is_file()
    ]
    holders = {f for f in files if f != credentials and holds(f.read_bytes())}
    assert holders, "the scan found no password, not even in Hydra's copy of A's command line"
    assert {f.name for f in holders} <= HYDRA_WRITES, sorted(map(str, holders))
    assert all(f.is_relative_to(tmp_path / "A") for f in holders), sorted(map(str, holders))

    # MLflow: names, params, tags, metric names of every run of the three sweeps
    runs = [r for study in studies.values() for r in sweep_runs(service, study)]
    assert len(runs) == 6, [r.info.run_name for r in runs]  # three parents, three trials
    (a_trial,) = [r for r in sweep_runs(service, studies["A"]) if "optuna.trial" in r.data.tags]
    logged = service.root / "server" / "artifacts" / a_trial.info.artifact_uri.split(":/", 1)[1]
    listing = sorted(str(f.relative_to(logged)) for f in logged.rglob("*"))
    assert (logged / ".hydra" / "hydra.yaml").is_file(), (a_trial.info, listing, outputs["A"][-3000:])
    assert ":***@127.0.0.1" in (logged / ".hydra" / "hydra.yaml").read_text()  # redacted before upload
    recorded = [(r.info.run_name, r.data.params, r.data.tags, sorted(r.data.metrics)) for r in runs]
    assert not holds(json.dumps(recorded))
    notes = [r.data.tags["mlflow.note.content"] for r in runs]
    assert any("_workers:***@127.0.0.1" in note for note in notes)  # A's command line, redacted

    # Optuna: each study's attributes and its trials'
    os.environ["PGPASSFILE"] = str(service.pgpass)
    try:
        storage = service.storage.replace("postgresql:", "postgresql+psycopg2:")
        loaded = [optuna.load_study(study_name=s, storage=storage) for s in studies.values()]
    finally:
        del os.environ["PGPASSFILE"]
    attributes = [
        (s.user_attrs, [(t.params, t.user_attrs, t.system_attrs) for t in s.trials]) for s in loaded
    ]
    assert not holds(json.dumps(attributes, default=str))
    assert not any(holds(out) for out in outputs.values()), outputs  # what the workers printed
