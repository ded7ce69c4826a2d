"""The logged model as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(X)`.

The model directory is `model.pt` (the weights-only checkpoint that `src.evaluate`, `resume` and
`warm_start` read with `torch.load(..., weights_only=True)`) plus an `MLmodel` file naming this module
as its loader. Writing the MLmodel directly costs milliseconds; `mlflow.pyfunc.save_model` would scan
every installed package's metadata (≈1.4 s a process) to check requirements.
"""

from __future__ import annotations

import platform
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.models import LogisticRegression

WEIGHTS = "model.pt"


class Predictor:
    """predict(X) → the model's output for each row: y for regression, P(y = 1 | x) for the logit."""

    def __init__(self, checkpoint: dict[str, Any]) -> None:
        self.module = instantiate(OmegaConf.create(checkpoint["model"]))(checkpoint["in_features"])
        self.logistic = isinstance(self.module, LogisticRegression)  # it outputs logits
        self.module.load_state_dict(checkpoint["state_dict"])
        self.module.eval()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        dtype = next(self.module.parameters()).dtype
        X = torch.as_tensor(np.asarray(model_input, dtype=np.float64), dtype=dtype)
        with torch.no_grad():
            out = self.module(X)
            return (torch.sigmoid(out) if self.logistic else out).numpy()


def _load_pyfunc(path: str) -> Predictor:
    """MLflow's loader hook; `path` is the model directory's `model.pt`."""
    return Predictor(torch.load(path, weights_only=True))


def save(checkpoint: dict[str, Any], folder: Path) -> Path:
    """`folder` as an MLflow model directory holding `checkpoint` as its weights: `model.pt`, and an
    `MLmodel` naming this module as the pyfunc loader, written directly (importing `mlflow.pyfunc`
    to write it would cost ≈0.3 s a process)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / WEIGHTS)
    python = platform.python_version()
    flavor = {"loader_module": __name__, "data": WEIGHTS, "python_version": python}
    mlmodel = {
        "flavors": {"python_function": flavor},
        "mlflow_version": version("mlflow"),
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    (folder / "requirements.txt").write_text(f"torch=={version('torch')}\ndescentlab\n")
    (folder / "python_version.txt").write_text(python + "\n")
    return folder
