"""Snapshots on disk: written atomically, read back only if intact and made of plain data.

A snapshot file is one line holding the SHA-256 of the payload, then the payload: a `torch.save`
of plain containers and tensors. Writing goes to a temporary file that is renamed over the old one,
so a crash leaves either the previous snapshot or the new one, never half of one. Reading checks the
digest (a truncated or edited file is refused) and unpickles with `weights_only=True` (no code runs).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from src.config import ConfigError

FORMAT = 1  # bump when the snapshot's layout changes


class SnapshotError(ConfigError):
    """A snapshot that cannot be trusted or used; the message names the file and why."""


def save(state: dict[str, Any], path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from exc
    digest, _, payload = raw.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise SnapshotError(
            f"snapshot {path} is truncated or was modified (SHA-256 mismatch); not loading it"
        )
    try:
        state: dict[str, Any] = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as exc:  # weights_only refuses anything but plain data
        raise SnapshotError(f"snapshot {path} holds more than plain data; not loading it ({exc})") from exc
    if state.get("format") != FORMAT:
        raise SnapshotError(f"snapshot {path} has format {state.get('format')}, this version reads {FORMAT}")
    return state
