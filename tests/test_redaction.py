"""Secrets kept out of what the project records (src/redaction.py), and a credentials file others can
read refused before any request (src/tracking/login.py). The end-to-end check, with a real server,
PostgreSQL and sweeps, is tests/test_shared_service.py."""

from __future__ import annotations

import logging

import pytest

from src import redaction
from src.tracking import login


def test_passwords_in_urls_and_known_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-mlflow")
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://w:from-the-env@db/optuna")
    text = (
        "python -m src.train hydra.sweeper.storage=postgresql+psycopg2://w:typed-secret@db:5432/optuna "
        "password hunter2-mlflow; from-the-env; http://host:5000/#/experiments/1 user@example.org"
    )
    clean = redaction.redact(text)
    for secret in ("typed-secret", "hunter2-mlflow", "from-the-env"):
        assert secret not in clean
    assert "postgresql+psycopg2://w:***@db:5432/optuna" in clean
    assert "http://host:5000/#/experiments/1 user@example.org" in clean  # no password: left as it is


def test_log_records_are_redacted_as_they_are_made(monkeypatch, caplog):
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())  # restored after
    redaction.install_log_redaction()
    redaction.install_log_redaction()  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("descentlab.test").info("storage %s", "mysql://u:pw-in-args@h/db")
        try:
            raise RuntimeError("cannot reach postgresql://u:pw-in-traceback@h/db")
        except RuntimeError:
            logging.getLogger("descentlab.test").exception("failed")
    assert "pw-in-args" not in caplog.text and "mysql://u:***@h/db" in caplog.text
    assert "pw-in-traceback" not in caplog.text and "postgresql://u:***@h/db" in caplog.text


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_credentials_file_others_can_read_is_refused_before_any_request(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH"):
        monkeypatch.delenv(name, raising=False)
    file = tmp_path / ".mlflow" / "credentials"
    file.parent.mkdir()
    file.write_text("[mlflow]\nmlflow_tracking_username = w\nmlflow_tracking_password = secret-in-file\n")
    file.chmod(mode)
    problem = login.problem("http://127.0.0.1:9", "descentlab")  # nothing listens there: never asked
    assert problem == f"~/.mlflow/credentials holds a password others can read (mode {mode:o}): chmod 600 it"
    assert login.login()[1:] == ("w", "~/.mlflow/credentials")
