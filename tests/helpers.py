"""Plain helpers the tests import (fixtures live in conftest.py): run the real CLI in a
subprocess, read MLflow, start a real `mlflow server`."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from src.train import compose

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


make_config = compose  # the config `python -m src.train <overrides>` would run (no hydra node)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_cli(
    cwd: Path,
    *args: str,
    module: str = "src.train",
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` in `cwd`, as a user would type it; outputs land under cwd."""
    hydra_dirs = []
    if module == "src.train":  # keep outputs inside cwd unless the caller says where
        if not any(a.startswith("hydra.run.dir=") for a in args):
            hydra_dirs.append(f"hydra.run.dir={cwd}/outputs/run")
        if not any(a.startswith("hydra.sweep.dir=") for a in args):
            hydra_dirs.append(f"hydra.sweep.dir={cwd}/multirun")
    return subprocess.run(
        [sys.executable, "-m", module, *args, *hydra_dirs],
        cwd=cwd,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def all_runs(uri: str, experiment: str = "descentlab") -> list:
    """Every run of `experiment` in the store at `uri`. A sqlite store nobody created has none, and is
    not opened: that would create it (seconds of schema migrations) and race a run creating it."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], max_results=1000)


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def interrupt_midway(
    cwd: Path,
    uri: str,
    sig: signal.Signals,
    *args: str,
    after: Path | None = None,
    pause: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Start a run, let it train a random while (past the moment `after` exists, if given: on a busy
    machine a fixed delay can land before the first epoch; `pause`: that long past it, not a random
    while), send `sig`; returns the finished process."""
    from mlflow.tracking import MlflowClient

    # The store made here, before the run starts: polling a sqlite store while the run is still
    # creating it would run MLflow's schema migrations from two processes at once.
    MlflowClient(tracking_uri=uri).search_experiments()
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not [r for r in all_runs(uri) if r.info.status == "RUNNING"] or (after and not after.exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not start within 120 s"
            time.sleep(0.2)
        time.sleep(
            pause if pause is not None else random.uniform(0.0, 1.0) if after else random.uniform(1.0, 2.5)
        )
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:  # a failed test must not leave an endless run behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server_on(store: str, root: Path, app: str | None = None, **env: str) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 over `store`, serving artifacts itself (under
    root/artifacts, its log in root/server.log); yields its URL. `env` goes to the server; `app`
    is its --app-name (`basic-auth`: MLflow's login and permissions)."""
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", store, "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1",  # one process: uvicorn restarts workers that start slowly on a busy machine
         *(["--app-name", app] if app else [])],
        cwd=root, env=cli_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # ≈10 s on an idle machine; minutes on a crowded one
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers; ≈10 s to stop
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# Hydra's own launcher: a --multirun's jobs one at a time (the reference for batched runs).
ONE_AT_A_TIME = ("hydra/launcher=basic",)
