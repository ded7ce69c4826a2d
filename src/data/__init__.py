"""Data sources and the train / validation / test split (`splits`, `simulate`, `tables`).

A data source is a Hydra `_target_` that takes its own options plus the split proportions and a
seeded torch.Generator, and returns `Data`. Everything is generated (or read) in float64 and cast
once, so a float32 and a float64 run see the same numbers.

Simulated: `simulate_linear` (the lecture's), `simulate_ill_conditioned`, `simulate_polynomial`,
`simulate_logistic`, `simulate_nonlinear`. Tables: `load_file` (CSV or Parquet) and `load_statsmodels`
(a data set statsmodels ships), both through `from_frame`, which checks every column and value
before anything is trained or logged.
"""

from src.data.files import load_file, load_statsmodels, statsmodels_datasets
from src.data.simulate import (
    simulate_ill_conditioned,
    simulate_linear,
    simulate_logistic,
    simulate_nonlinear,
    simulate_polynomial,
)
from src.data.splits import Data, Split, Standardization, check_fit, split, split_sizes

__all__ = [
    "Data",
    "Split",
    "Standardization",
    "check_fit",
    "load_file",
    "load_statsmodels",
    "simulate_ill_conditioned",
    "simulate_linear",
    "simulate_logistic",
    "simulate_nonlinear",
    "simulate_polynomial",
    "split",
    "split_sizes",
    "statsmodels_datasets",
]
