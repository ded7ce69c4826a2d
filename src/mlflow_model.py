"""The logged model as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(X)`.

The model directory is `model.pt` (the weights-only checkpoint that `src.evaluate`, `resume` and
`warm_start` read with `torch.load(..., weights_only=True)`) plus an `MLmodel` file naming this module
as its loader. Writing the MLmodel by hand costs milliseconds; `mlflow.pyfunc.save_model` would scan
every installed package's metadata (≈1.4 s a process) to check requirements.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

WEIGHTS = "model.pt"


class Predictor:
    """predict(X) → the model's output for each row: y for regression, P(y = 1 | x) for the logit."""

    def __init__(self, checkpoint: dict[str, Any]) -> None:
        node = OmegaConf.create(checkpoint["model"])
        self.logistic = str(node.get("_target_", "")).endswith("LogisticRegression")
        self.module = instantiate(node)(checkpoint["in_features"])
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
    """`folder` as an MLflow model directory holding `checkpoint` as its weights."""
    from mlflow.models import Model
    from mlflow.pyfunc import add_to_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / WEIGHTS)
    model = Model()
    add_to_model(model, loader_module=__name__, data=WEIGHTS, python_env=None)
    model.save(str(folder / "MLmodel"))
    (folder / "requirements.txt").write_text(f"torch=={version('torch')}\ndescentlab\n")
    (folder / "python_version.txt").write_text(platform.python_version() + "\n")
    return folder
