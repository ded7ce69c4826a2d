"""Rebuild a logged model from MLflow, evaluate it on its test split, and print its estimates.

    python -m src.evaluate <run_id> [--uri sqlite:///mlflow.db]

The run's logged config regenerates the same data (same seed, same draws), the logged state_dict
restores the parameters, and the test loss is recomputed: it equals the logged `test_loss` exactly.
For a linear or logistic model the table of estimates the run printed is printed again.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from src.config import Config, register, retyped
from src.estimation import inference
from src.loop import evaluate
from src.tracking.store import CONFIG_ARTIFACT
from src.tracking.tracker import MODEL_ARTIFACT
from src.tracking.uris import tracking_uri


def load_run(run_id: str, uri: str | None = None) -> tuple[DictConfig, dict]:
    """The run's config (typed by the schemas again) and its checkpoint, loaded weights-only."""
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = download_artifacts(
            run_id=run_id, artifact_path=CONFIG_ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri(uri)
        )
        model_path = download_artifacts(
            run_id=run_id, artifact_path=MODEL_ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri(uri)
        )
        cfg = logged_config(Path(cfg_path).read_text())
        checkpoint = torch.load(Path(model_path), weights_only=True)
    return cfg, checkpoint


def logged_config(text: str) -> DictConfig:
    """A run's logged config (resolved YAML), typed by the schemas again, as src.train composed it."""
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    assert isinstance(cfg, DictConfig)
    return retyped(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run whose logged model to rebuild and evaluate")
    parser.add_argument(
        "--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    )
    args = parser.parse_args(argv)

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from src.train import build, settings

    register()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        recorded = MlflowClient(tracking_uri(args.uri)).get_run(args.run_id).data
        logged, stop_reason = recorded.metrics.get("test_loss"), recorded.tags.get("stop_reason", "unknown")
        cfg, checkpoint = load_run(args.run_id, args.uri)
    except MlflowException as exc:
        sys.exit(f"error: run {args.run_id}: {str(exc).splitlines()[0]}")
    cfg.tracking = {"_target_": "src.tracking.NullTracker"}
    run = build(cfg)
    model, data = run.model, run.data
    model.load_state_dict(checkpoint["state_dict"])
    if len(data.test):
        test_loss = evaluate(run.learner, data.test)
        print(f"test_loss {test_loss!r} (logged {logged!r})")
        if logged is not None and test_loss != logged:
            sys.exit(f"error: recomputed test_loss {test_loss!r} differs from the logged {logged!r}")
    else:
        print("no test split (the run estimated on every row it was given): no test_loss")
    estimates = inference.estimate(
        model, data, run.reference, cfg.inference.cov, run.l2, stop_reason, settings(cfg, run)
    )
    if estimates is not None:
        print("\n".join([estimates.format(), *estimates.warnings]))


if __name__ == "__main__":
    main()
