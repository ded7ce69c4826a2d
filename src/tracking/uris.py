"""Where runs are recorded: the store's URI (checked, and a server probed, before MLflow is imported),
and the MLflow UI's links to runs and to the compare page."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from src.errors import ConfigError
from src.redaction import redact
from src.tracking import login

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

from src.jobs import launch_dir
from src.tracking.store import given_uri, open_experiment

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
SQLITE_WRITERS = 6  # concurrent writers one sqlite store was tested with (tests/test_parallel.py)


def tracking_uri(uri: str | None = None) -> str:
    """The store: `uri`, else $MLFLOW_TRACKING_URI, else DEFAULT_URI. A relative sqlite path means
    the directory the command was launched from, also when Hydra runs the job elsewhere."""
    uri = given_uri(uri)
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).is_absolute():
        uri = f"sqlite:///{launch_dir() / path}"
    return uri


STORE_FORMS = (
    "sqlite:///path, http(s)://host:port (an mlflow server), postgresql://user@host/db, "
    "mysql://..., or file:///path with MLFLOW_ALLOW_FILE_STORE=true"
)


def checked_store(uri: str, given: str | None, experiment: str | None = None) -> str:
    """`uri` if MLflow can use it, else a ConfigError naming tracking.uri (or $MLFLOW_TRACKING_URI,
    where it came from) and the accepted forms. A server is asked for /health first, so that an
    unreachable one fails in seconds, not after MLflow's minutes of retries; then, with the
    credentials MLflow would send, whether it lets this user read `experiment` and create runs in it
    (src/tracking/login.py), so that a missing or wrong login fails in one line before training."""
    key = "tracking.uri" if given else "tracking.uri (from $MLFLOW_TRACKING_URI)"
    shown = redact(uri)
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise ConfigError(
            f"{key}={shown}: MLflow's file store needs MLFLOW_ALLOW_FILE_STORE=true; or use sqlite:///path"
        )
    well_formed = {
        "sqlite": uri.startswith("sqlite:///"),
        "http": bool(parts.hostname),
        "https": bool(parts.hostname),
        "postgresql": bool(parts.hostname or parts.query),
        "mysql": bool(parts.hostname),
        "mssql": bool(parts.hostname),
        "file": True,  # allowed above
    }
    if not well_formed.get(scheme, False):
        raise ConfigError(f"{key}={shown} is not a tracking store MLflow can use; use {STORE_FORMS}")
    if scheme == "sqlite" and (path := Path(uri.removeprefix("sqlite:///"))).is_file():
        with path.open("rb") as db:
            if path.stat().st_size and db.read(16) != SQLITE_HEADER:
                raise ConfigError(
                    f"{key}={shown}: {path} is not an SQLite database; name a new file (MLflow creates it) "
                    "or an MLflow store"
                )
    if scheme in ("http", "https"):
        health = f"{shown.rstrip('/')}/health"
        try:
            login.request(uri, "/health").close()
        except urllib.error.HTTPError:
            pass  # something answers (a proxy's login page, say): the login check says more
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"{key}={shown}: no tracking server answered GET {health} within {login.TIMEOUT:g} s "
                f"({reason}); start one (mlflow server) or use another store"
            ) from None
        try:
            problem = login.problem(uri, experiment)
        except OSError as exc:
            raise ConfigError(
                f"{key}={shown}: the server answered GET {health} but not its API within "
                f"{login.ANSWER_TIMEOUT:g} s ({getattr(exc, 'reason', exc)}); is it overloaded?"
            ) from None
        if problem:
            raise ConfigError(f"{key}={shown}: {problem}")
    return uri


UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of a run, or of an experiment's runs table. `workflowType=machine_learning`
    opens the runs table rather than MLflow 3's GenAI overview (which a browser otherwise remembers)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def compare_link(uri: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's compare page of these runs (their params, metrics and parallel coordinates)."""
    from urllib.parse import quote

    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI
    runs, experiments = quote(json.dumps(list(run_ids))), quote(json.dumps([experiment_id]))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&workflowType=machine_learning"


def ui_hint(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The link, and for a local store the `mlflow ui` command that serves it."""
    link = ui_link(uri, experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        return link
    return f"mlflow ui --backend-store-uri {uri}  then open  {link}"


def client_and_experiment(uri: str | None, experiment: str) -> tuple[MlflowClient, str]:
    """The store's client and the experiment's id; the runs of dead processes found there are ended."""
    return open_experiment(
        checked_store(tracking_uri(uri), uri, experiment), experiment
    )  # checked: before MLflow
