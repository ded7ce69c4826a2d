"""Shared fixtures: compose configs in-process, run the real CLI in a subprocess, a fresh
MLflow store. Plain helpers the tests import live in tests/helpers.py."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import make_config, run_cli


@pytest.fixture
def quiet_config() -> Callable[..., DictConfig]:
    """make_config with tracking off and no progress bar, for fast in-process runs."""

    def make(*overrides: str) -> DictConfig:
        return make_config("tracking=none", "trainer.progress=false", *overrides)

    return make


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def call(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(tmp_path, *args, env=env)

    return call


@pytest.fixture
def sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh MLflow sqlite store, also set as MLFLOW_TRACKING_URI for in-process runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
