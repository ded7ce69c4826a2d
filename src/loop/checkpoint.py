"""Snapshots on disk: written atomically, read back only if intact and made of plain data.

A snapshot file is one line holding the SHA-256 of the payload, then the payload: a `torch.save`
of plain containers and tensors. Writing goes to a temporary file that is renamed over the old one,
so a crash leaves either the previous snapshot or the new one, never half of one. Reading checks the
digest (a truncated or edited file is refused) and unpickles with `weights_only=True` (no code runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.loop import EpochMetrics, Progress
from src.loop.training import Training

FORMAT = 1  # bump when the snapshot's layout changes
SNAPSHOT = "snapshot.pt"  # in the run dir
SNAPSHOT_ARTIFACT = f"snapshot/{SNAPSHOT}"  # in the MLflow run
AUTO = "auto"  # resume=auto: continue from the run dir's own snapshot, if there is one
STOP_REASON = "stop_reason"  # a batch row's snapshot: why it had stopped (src/batch.py); None: on


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


def capture(progress: Progress, run: Training, run_id: str | None, config_yaml: str) -> dict[str, Any]:
    """Everything needed to continue the run exactly: loop progress, states, RNG, and its config."""
    p = dataclasses.asdict(progress)  # history entries become plain dicts
    return {
        "progress": p,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "mlflow_run_id": run_id,
        "config": config_yaml,
    }


def restore(state: dict[str, Any], run: Training) -> Progress:
    """Load a snapshot's states into a freshly built run; returns the loop progress to resume."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    p = dict(state["progress"])
    p["history"] = [EpochMetrics(**m) for m in p["history"]]
    return Progress(**p)


def own_snapshot(run_dir: Path | None) -> Path | None:
    """`resume=auto`: the run dir's own snapshot, if it has one (else the run starts afresh). A
    --multirun given the sweep dir it ran in (hydra.sweep.dir) continues each job from its own."""
    return run_dir if run_dir is not None and (run_dir / SNAPSHOT).is_file() else None


def requeued_snapshot(run_dir: Path | None) -> Path | None:
    """The snapshot a requeued SLURM job continues from: its own run dir's, when SLURM restarted the
    job (SLURM_RESTART_COUNT > 0: requeued at a time limit or on preemption, or after a node failure)."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) == 0:
        return None
    return own_snapshot(run_dir)


def locate(source: str, filename: str, artifact: str, uri: str, key: str) -> Path:
    """`source` is a run dir holding `filename`, or an MLflow run id with `artifact` logged in the
    store at `uri` (resolved: src.tracking.uris.tracking_uri)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / filename).is_file():
            raise SnapshotError(f"{key}={source}: no {filename} in that run dir")
        return path / filename
    if not re.fullmatch(r"[0-9a-f]{32}", source):
        raise SnapshotError(f"{key}={source}: no such run dir, and not an MLflow run id (32 hex digits)")
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Path(download_artifacts(run_id=source, artifact_path=artifact, tracking_uri=uri))
    except MlflowException as exc:
        first = str(exc).splitlines()[0]
        raise SnapshotError(
            f"{key}={source} is neither a run dir nor a run with {artifact}: {first}"
        ) from exc


# What a resume may change: when and how to stop, how often to snapshot. Anything else would make it
# another run (other batches, precision or method), which is what warm_start is for.
RESUMABLE = tuple(f"trainer.{key}" for key in (
    "max_epochs", "max_time", "patience", "min_delta", "stopping_threshold", "divergence_threshold",
    "grad_tol", "checkpoint_every", "progress",
))  # fmt: skip


def resumed_config(
    state: dict[str, Any], composed: DictConfig, overrides: list[str], schema: Any
) -> DictConfig:
    """The snapshot's own config. Of this command's overrides, the RESUMABLE ones apply (with the
    values Hydra parsed into `composed`); any other that differs from the snapshot's is refused."""
    cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(state["config"]))
    assert isinstance(cfg, DictConfig)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group  # without the +, ++ or ~ prefix
        if key in ("resume", "warm_start") or key.startswith("hydra."):
            continue
        ours = OmegaConf.select(composed, key)
        if key in RESUMABLE:
            OmegaConf.update(cfg, key, ours)
            continue
        theirs = OmegaConf.select(cfg, key)
        if isinstance(ours, DictConfig) and isinstance(theirs, DictConfig):  # a group choice
            ours, theirs = OmegaConf.to_container(ours), OmegaConf.to_container(theirs)
        if ours != theirs:
            raise SnapshotError(
                f"{key}: a resumed run keeps its config; only {', '.join(RESUMABLE)} may change "
                "(to start from its parameters with other settings, use warm_start=)"
            )
    return cfg


def warm_start_parameters(source: str, uri: str) -> dict[str, torch.Tensor]:
    """The final parameters of another run: its model.pt, or the best ones in its snapshot."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "model.pt").is_file():
        return dict(
            load(locate(source, SNAPSHOT, SNAPSHOT_ARTIFACT, uri, "warm_start"))["progress"]["best_state"]
        )
    model_file = locate(source, "model.pt", "model/model.pt", uri, "warm_start")
    try:
        state: dict[str, torch.Tensor] = torch.load(model_file, weights_only=True)["state_dict"]
    except Exception as exc:  # not a torch file, or more than plain data, or no state_dict
        raise SnapshotError(f"warm_start={source}: {model_file} is not a descentlab model ({exc})") from exc
    return state
