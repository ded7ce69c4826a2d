"""Whether an MLflow server lets this process in, asked before MLflow is imported: with the credentials
MLflow itself would send (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, else
~/.mlflow/credentials; or MLFLOW_TRACKING_TOKEN), can it read the experiment and create runs in it?
MLflow's basic-auth app answers 401 to a missing or wrong login and 403 to a missing permission;
each becomes one line naming what to set. Standard library only (urllib)."""

from __future__ import annotations

import base64
import configparser
import json
import os
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

TIMEOUT = 5.0  # seconds to wait for a tracking server's /health before calling it unreachable
# Once /health has answered, the server is there: a slow answer is load (three sweeps starting at
# once, a cold server), so the login questions wait as MLflow itself would (its HTTP timeout: 120 s).
ANSWER_TIMEOUT = 60.0
CREDENTIALS_FILE = "~/.mlflow/credentials"  # where MLflow reads a login when the environment has none
ENV_LOGIN = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
API = "/api/2.0/mlflow"


def credentials_file() -> Path:
    return Path(os.path.expanduser(CREDENTIALS_FILE))


def read_file_login() -> tuple[str | None, str | None]:
    """The user and password of ~/.mlflow/credentials' [mlflow] section, as MLflow reads them."""
    parser = configparser.ConfigParser()
    try:
        parser.read(credentials_file())
    except configparser.Error:
        return None, None
    get = parser.get
    return get("mlflow", "mlflow_tracking_username", fallback=None), get(
        "mlflow", "mlflow_tracking_password", fallback=None
    )


def login() -> tuple[dict[str, str], str | None, str]:
    """The Authorization header MLflow would send, the user it names (None for a token or no
    login), and where the login comes from, for messages."""
    file_user, file_password = read_file_login()
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or file_user
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or file_password
    if user and password:  # MLflow's precedence: a user and password, else a token
        from_env = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        source = ENV_LOGIN if from_env else CREDENTIALS_FILE
        basic = base64.standard_b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}, user, source
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}, None, "MLFLOW_TRACKING_TOKEN"
    return {}, None, ""


def request(
    uri: str,
    path: str,
    body: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> HTTPResponse:
    """GET (or, with a body, POST as JSON) `path` of the server at `uri`, honouring MLflow's TLS
    variables; HTTP errors raise urllib.error.HTTPError."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**(headers or {}), **({} if body is None else {"Content-Type": "application/json"})}
    req = urllib.request.Request(f"{uri.rstrip('/')}{path}", data=data, headers=headers)
    context = None
    if uri.startswith("https"):
        context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return urllib.request.urlopen(req, timeout=timeout, context=context)


def status(
    uri: str, path: str, headers: dict[str, str], body: dict[str, str] | None = None
) -> tuple[int, bytes]:
    try:
        with request(uri, path, body, headers, ANSWER_TIMEOUT) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def problem(uri: str, experiment: str | None) -> str | None:
    """Why the server at `uri` would refuse this process's runs in `experiment`, or None. A custom
    MLFLOW_TRACKING_AUTH plugin is MLflow's to apply: then nothing is asked."""
    if os.environ.get("MLFLOW_TRACKING_AUTH"):
        return None
    headers, user, source = login()
    if source == CREDENTIALS_FILE and (mode := stat.S_IMODE(credentials_file().stat().st_mode)) & 0o077:
        return f"{CREDENTIALS_FILE} holds a password others can read (mode {mode:o}): chmod 600 it"
    if experiment is None:
        code, answer = status(uri, f"{API}/experiments/search?max_results=1", headers)
    else:
        query = urllib.parse.urlencode({"experiment_name": experiment})
        code, answer = status(uri, f"{API}/experiments/get-by-name?{query}", headers)
    if code == 401:
        if not headers:
            where = f"(or write them to {CREDENTIALS_FILE}, mode 600)"
            return f"the server asks for a login (401): set {ENV_LOGIN} {where}"
        who = f"user '{user}'" if user else "the token"
        return f"the server refused the login of {who} (401): check {source}"
    who = f"user '{user}'" if user else "this login"
    if code == 403:
        return (
            f"{who} may not read experiment '{experiment}' (403): ask the server's admin for READ and EDIT "
            "permission on it, or set MLFLOW_TRACKING_USERNAME to a user who has them"
        )
    if code != 200 or experiment is None:
        return None  # 404: no such experiment yet, the run creates it; else MLflow says what it thinks
    return _write_problem(uri, headers, who, experiment, answer)


def _write_problem(uri: str, headers: dict[str, str], who: str, experiment: str, answer: bytes) -> str | None:
    """Whether this login may create runs in the experiment: a run request the server rejects as
    malformed (400) once it has let it through (403 otherwise); nothing is created either way."""
    try:
        experiment_id = str(json.loads(answer)["experiment"]["experiment_id"])
    except (ValueError, KeyError, TypeError):
        return None
    code, _ = status(
        uri, f"{API}/runs/create", headers, {"experiment_id": experiment_id, "start_time": "probe"}
    )
    if code == 403:
        return (
            f"{who} may not write to experiment '{experiment}' (403 on runs/create): ask its owner or the "
            "server's admin for EDIT permission, or set MLFLOW_TRACKING_USERNAME to a user who has it"
        )
    return None
