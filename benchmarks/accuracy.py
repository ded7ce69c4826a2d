"""Accuracy on the NIST StRD linear-regression suite: digits of the certified estimates and standard
errors that Newton, L-BFGS and the run's exact reference θ* reach, beside statsmodels'.

    python -m benchmarks.accuracy        # or `nox -s accuracy`

Each data set (benchmarks/data/nist/, NIST's files with their certified values in the header) is
fitted through the product as a user would: a CSV of y and the predictors (x, x², …, x^k for the
polynomial models), `data=csv`, the full sample, natural units (`data.standardize=false`), float64,
`data.intercept=false` for the two through-origin sets. Digits are the log relative error,
LRE = −log10(|est − cert| / |cert|) (−log10 |est| where the certified value is 0), capped at 15
(NIST certifies 15 significant digits), the worst over the parameters.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

NIST = Path(__file__).resolve().parent / "data" / "nist"
SUITE = (
    "Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
    "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5",
)  # fmt: skip
CAP = 15.0  # NIST's certified values carry 15 significant digits
PARAMETER = re.compile(r"^\s*B(\d+)\s+(\S+)\s+(\S+)\s*$")


@dataclass(frozen=True)
class Certified:
    name: str
    y: np.ndarray
    X: np.ndarray  # the predictors as the model uses them, without the intercept's column
    intercept: bool
    estimates: np.ndarray  # B0 (the intercept, if any), B1, …
    std_errors: np.ndarray

    def frame_csv(self, path: Path) -> Path:
        """y, x1..xk as a CSV that round-trips every float64 exactly."""
        columns = ["y", *(f"x{j + 1}" for j in range(self.X.shape[1]))]
        rows = np.column_stack([self.y, self.X])
        lines = [",".join(columns), *(",".join(repr(float(v)) for v in row) for row in rows)]
        path.write_text("\n".join(lines) + "\n")
        return path


def load(name: str) -> Certified:
    """A StRD file: its certified parameters (lines `Bj estimate sd`) and the data after its last
    `Data:` line; a single x with more parameters than columns is a polynomial in x."""
    lines = (NIST / f"{name}.dat").read_text().splitlines()
    found = [m for line in lines if (m := PARAMETER.match(line))]
    indices = [int(m[1]) for m in found]
    estimates = np.array([float(m[2]) for m in found])
    std_errors = np.array([float(m[3]) for m in found])
    start = max(i for i, line in enumerate(lines) if line.strip().startswith("Data:"))
    data = np.array([[float(v) for v in line.split()] for line in lines[start + 1 :] if line.strip()])
    y, x = data[:, 0], data[:, 1:]
    intercept = 0 in indices
    k = len(indices) - intercept
    X = np.column_stack([x[:, 0] ** j for j in range(1, k + 1)]) if x.shape[1] == 1 else x
    return Certified(name, y, X, intercept, estimates, std_errors)


def lre(estimate: np.ndarray, certified: np.ndarray) -> float:
    """The worst log relative error over the parameters (absolute where the certified value is 0)."""
    error = np.abs(np.asarray(estimate, dtype=float) - certified)
    scale = np.where(certified == 0, 1.0, np.abs(certified))
    with np.errstate(divide="ignore"):
        digits = -np.log10(error / scale)
    return float(np.min(np.clip(np.nan_to_num(digits, nan=0.0, posinf=CAP), 0.0, CAP)))


@dataclass(frozen=True)
class Row:
    """One fit's digits of the certified estimates and standard errors (and its own verdict)."""

    estimates: float
    std_errors: float
    converged: bool | None = None  # the run's `converged` (None: not a run)
    digits_vs_reference: float | None = None  # the run's certificate: digits of agreement with θ*


def fit(data: Certified, optimizer: str, *overrides: str) -> tuple[Row, Row]:
    """The run's row and its exact reference θ*'s row (standard errors evaluated at θ*)."""
    from torch.nn.utils import vector_to_parameters

    from src.estimation import inference
    from src.loop import fit as run_fit
    from src.train import build, compose, settings

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            "tracking=none", "data=csv", f"data.path={data.frame_csv(Path(tmp) / 'data.csv')}",
            "data.target=y", f"data.intercept={str(data.intercept).lower()}", "data.standardize=false",
            "data.train_prop=1.0", "data.val_prop=0.0", "trainer.dtype=float64",
            "trainer.progress=false", f"optimizer={optimizer}", *overrides,
        )  # fmt: skip
        run = build(cfg)
    result = run_fit(run)
    estimates = inference.estimate(
        run.model, run.data, run.reference, None, 0.0, result.stop_reason, settings(cfg, run)
    )
    assert estimates is not None and run.reference is not None
    table = estimates.table
    row = Row(
        lre(np.array(table["estimate"]), data.estimates),
        lre(np.array(table["std_error"]), data.std_errors),
        estimates.converged,
        estimates.certificate["estimate_digits"],
    )
    vector_to_parameters(run.reference.theta.to(torch.float64), run.model.parameters())
    at_reference = inference.estimate(run.model, run.data, run.reference, None, 0.0, "converged")
    assert at_reference is not None
    reference = Row(
        lre(np.array(at_reference.table["estimate"]), data.estimates),
        lre(np.array(at_reference.table["std_error"]), data.std_errors),
    )
    return row, reference


def statsmodels_row(data: Certified) -> Row:
    import statsmodels.api as sm

    X = np.column_stack([np.ones(len(data.y)), data.X]) if data.intercept else data.X
    ols = sm.OLS(data.y, X).fit()
    return Row(lre(ols.params, data.estimates), lre(ols.bse, data.std_errors))


def condition(data: Certified) -> float:
    X = np.column_stack([np.ones(len(data.y)), data.X]) if data.intercept else data.X
    return float(np.linalg.cond(X))


def cells(row: Row, verdict: bool = True) -> str:
    shown = f"{row.estimates:>10.1f} {row.std_errors:>5.1f}"
    return f"{shown} {str(row.converged).lower():>5}" if verdict else shown


def table() -> list[str]:
    """The suite's digits, one line per data set."""
    head = " | ".join(
        [
            f"{'data set':<9} {'cond(X)':>8}",
            f"{'Newton est':>10} {'se':>5} {'conv':>5}",
            f"{'L-BFGS est':>10} {'se':>5} {'conv':>5}",
            f"{'theta* est':>10} {'se':>5}",
            f"{'statsmodels':>11} {'se':>5}",
        ]
    )
    lines = [head, "-" * len(head)]
    for name in SUITE:
        data = load(name)
        newton, reference = fit(data, "newton")
        lbfgs, _ = fit(data, "lbfgs")
        ols = statsmodels_row(data)
        line = [f"{name:<9} {condition(data):>8.1e}", cells(newton), cells(lbfgs), cells(reference, False)]
        lines.append(" | ".join([*line, f" {cells(ols, False)}"]))
    return lines


def main() -> None:
    import logging

    logging.disable(logging.INFO)  # the runs' own logs; the table is the output
    print(__doc__.splitlines()[0])
    print("\n".join(table()))
    print(f"(digits of the certified values, at most {CAP:g}; conv: the run's converged tag)")


if __name__ == "__main__":
    main()
