"""Tables to read: a user's CSV or Parquet file (`load_file`) or a data set statsmodels ships
(`load_statsmodels`). Either becomes `Data` through `from_frame` (src/data/tables.py: target and
feature columns) or, with `data.formula`, through `from_formula` (src/data/formula.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.data.formula import from_formula
from src.data.splits import Data
from src.data.tables import check_columns, from_frame
from src.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}


def table_data(
    frame: pd.DataFrame, source: str, target: str | None, formula: str | None, **table: Any
) -> Data:
    """The table's design: the formula's, or the target and feature columns'."""
    if formula is not None:
        drop, cluster, weights = table.pop("drop_missing"), table.pop("cluster", None), table.pop("weights")
        absorb = table.pop("absorb", None)
        return from_formula(frame, source, formula, drop, cluster, weights, absorb, target=target, **table)
    if table.pop("absorb", None) is not None:  # the config's rules refuse it first
        raise ConfigError("data.absorb needs data.formula")
    if target is None:
        raise ConfigError("data.target=None: name the column to predict, or give data.formula='y ~ x1 + x2'")
    return from_frame(frame, source, target, **table)


def load_file(path: str, target: str | None, formula: str | None = None, **table: Any) -> Data:
    """A CSV or Parquet file, by extension; a relative path is relative to the launch directory."""
    import pandas as pd
    from hydra.utils import to_absolute_path

    file = Path(to_absolute_path(path))  # Hydra may have changed the working directory
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        allowed = ", ".join(sorted(READERS))
        raise ConfigError(f"data.path={file}: unknown file type {file.suffix!r}; allowed: {allowed}")
    if not file.exists():
        raise ConfigError(f"data.path={file}: no such file")
    try:
        frame = getattr(pd, reader)(file)
        if reader == "read_csv":  # pandas renames a repeated name (x, x.1): read the header as written
            check_columns(
                pd.read_csv(file, header=None, nrows=1, dtype=str).iloc[0].tolist(), f"data.path={file}"
            )
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data.path={file}: the file is empty") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds; the message says which
        kind = reader.removeprefix("read_").replace("csv", "CSV").replace("parquet", "Parquet")
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"data.path={file}: cannot read it as {kind}: {reason}") from exc
    return table_data(frame, f"data.path={file}", target, formula, **table)


def statsmodels_datasets() -> list[str]:
    import statsmodels.datasets as datasets

    return sorted(name for name in datasets.__all__ if hasattr(getattr(datasets, name), "load_pandas"))


def load_statsmodels(name: str, target: str | None, formula: str | None = None, **table: Any) -> Data:
    """A data set statsmodels ships (`statsmodels.datasets.<name>`, with its license note there);
    nothing is downloaded. `target` null: the data set's own dependent variable (or the formula's)."""
    if name not in statsmodels_datasets():
        available = ", ".join(statsmodels_datasets())
        raise ConfigError(f"data.name={name!r} is not a statsmodels data set; available: {available}")
    dataset = importlib.import_module(f"statsmodels.datasets.{name}").load_pandas()
    target = target if formula is not None else target or dataset.endog_name
    return table_data(dataset.data, f"statsmodels data set {name!r}", target, formula, **table)
