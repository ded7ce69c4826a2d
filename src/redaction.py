"""Secrets kept out of what the project records: MLflow params, tags and artifacts, log lines, error
lines. A password inside a URL (`postgresql://user:secret@host/db`) becomes `user:***@`; the values of
the variables that hold credentials (MLFLOW_TRACKING_PASSWORD, PGPASSWORD, ...), the password of
~/.mlflow/credentials and the password of any URL in the environment become `***` wherever they
appear. Hydra's own files (`.hydra/*.yaml`, `multirun.yaml`) hold what was typed on the command line:
docs/cluster.md says how to keep secrets out of them.

Standard library only: the CLI installs the log redaction before its slow imports."""

from __future__ import annotations

import configparser
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

MASK = "***"
SECRET_ENV = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "PGPASSWORD",
    "MYSQL_PWD",
)
SHORTEST = 6  # a shorter value is masked inside URLs only: masking "1234" everywhere would garble logs
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/?#@'\"]*):(?P<password>[^\s@/'\"]+)@")


@functools.cache
def _credentials_file_password(path: str) -> str | None:
    """The password MLflow reads from ~/.mlflow/credentials ([mlflow] mlflow_tracking_password)."""
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except (OSError, configparser.Error):
        return None
    return parser.get("mlflow", "mlflow_tracking_password", fallback=None)


def known_secrets() -> list[str]:
    """The secret values this process knows of, longest first."""
    found = {os.environ.get(name, "") for name in SECRET_ENV}
    found.add(_credentials_file_password(os.path.expanduser("~/.mlflow/credentials")) or "")
    for value in os.environ.values():
        if "://" in value:
            found.update(m["password"] for m in URL_PASSWORD.finditer(value) if m["password"] != MASK)
    return sorted((s for s in found if len(s) >= SHORTEST), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` without passwords in URLs and without the values of known secrets."""
    text = URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    for secret in known_secrets():
        text = text.replace(secret, MASK)
    return text


def redact_tree(path: Path) -> None:
    """Each text file under `path` (or `path` itself), redacted in place: for copies about to be logged."""
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if (clean := redact(text)) != text:
            file.write_text(clean, encoding="utf-8")


def install_log_redaction() -> None:
    """Every log record this process makes from now on, redacted as it is made (whatever handlers
    Hydra configures later, and however often), its traceback included."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it itself when the record is emitted
            return record
        if (clean := redact(message)) != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
