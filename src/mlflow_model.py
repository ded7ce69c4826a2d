"""The loader that MLflow models logged before src/tracking/logged_model.py name (`loader_module:
src.mlflow_model` in their MLmodel file)."""

from src.tracking.logged_model import _load_pyfunc

__all__ = ["_load_pyfunc"]
