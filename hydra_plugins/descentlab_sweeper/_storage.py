"""The lock that lets several processes share one study's budget (where a study lives:
src/sweep/studies.py)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy import text

from src.sweep.studies import redact

log = logging.getLogger(__name__)


@contextmanager
def budget_lock(storage: BaseStorage, path: str, study_name: str) -> Iterator[None]:
    """Held while a process counts the study's trials and asks for one more, so that processes
    sharing a study never start more than n_trials between them: a file lock beside a journal or
    sqlite file, a transaction-scoped advisory lock on PostgreSQL."""
    if isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)
        with storage.engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield
        return
    if isinstance(storage, RDBStorage) and storage.engine.dialect.name != "sqlite":
        log.warning("no budget lock on %s: processes racing may start a trial too many", redact(path))
        yield
        return
    # An OS-level lock (flock, or msvcrt on Windows): released when a killed process dies.
    with FileLock(path.removeprefix("sqlite:///") + ".budget.lock"):
        yield
