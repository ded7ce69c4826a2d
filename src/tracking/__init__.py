"""Everything MLflow: the tracker a run logs through, the store, the sidecar process that does the
writing, params and run names, store URIs and UI links, the logged model.

Imported lazily: the sidecar (`python -m src.tracking.sidecar`) and the training process's first
lines import this package before torch, and must not pay for torch, Hydra or MLflow here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from src.tracking.names import flatten, params, run_name, short_number, source_tags, swept_keys
    from src.tracking.store import (
        CONFIG_ARTIFACT,
        DEFAULT_URI,
        PROCESS_TAG,
        REPEATS_TAG,
        SWEEP_TAG,
        child_runs,
        end_killed,
        end_run,
    )
    from src.tracking.tracker import MODEL_ARTIFACT, MlflowTracker, NullTracker, make_tracker, uses_mlflow
    from src.tracking.uris import (
        SQLITE_WRITERS,
        checked_store,
        client_and_experiment,
        compare_link,
        tracking_uri,
        ui_hint,
        ui_link,
    )

__all__ = [
    "CONFIG_ARTIFACT",
    "DEFAULT_URI",
    "MODEL_ARTIFACT",
    "PROCESS_TAG",
    "REPEATS_TAG",
    "SQLITE_WRITERS",
    "SWEEP_TAG",
    "MlflowTracker",
    "NullTracker",
    "checked_store",
    "child_runs",
    "client_and_experiment",
    "compare_link",
    "end_killed",
    "end_run",
    "flatten",
    "make_tracker",
    "params",
    "run_name",
    "short_number",
    "source_tags",
    "swept_keys",
    "tracking_uri",
    "ui_hint",
    "ui_link",
    "uses_mlflow",
]
_WHERE = {  # the module that defines each name
    **dict.fromkeys(
        ["flatten", "params", "run_name", "short_number", "source_tags", "swept_keys"],
        "src.tracking.names",
    ),
    **dict.fromkeys(
        [
            "CONFIG_ARTIFACT",
            "DEFAULT_URI",
            "PROCESS_TAG",
            "REPEATS_TAG",
            "SWEEP_TAG",
            "child_runs",
            "end_killed",
            "end_run",
        ],
        "src.tracking.store",
    ),
    **dict.fromkeys(
        ["MODEL_ARTIFACT", "MlflowTracker", "NullTracker", "make_tracker", "uses_mlflow"],
        "src.tracking.tracker",
    ),
    **dict.fromkeys(
        [
            "SQLITE_WRITERS",
            "checked_store",
            "client_and_experiment",
            "compare_link",
            "tracking_uri",
            "ui_hint",
            "ui_link",
        ],
        "src.tracking.uris",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
