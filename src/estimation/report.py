"""The table of estimates where a user looks: printed, and written as files into the run directory
and to MLflow: `estimates.csv` (every column, full precision), `estimates.txt` (the printed table) and
`estimates.tex` (a LaTeX tabular, booktabs rules).

The printed table rounds each estimate where its standard error's second significant digit is
(SE 0.0123 → 3 decimals: 1.235 (0.012)), so every digit shown means something; the CSV keeps all 17.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from src.estimation.inference import ARTIFACT, Estimates, to_csv

TEXT, LATEX = "estimates.txt", "estimates.tex"
MAX_DECIMALS = 10  # beyond this (SE < 1e-9), numbers are written in scientific notation
SHOWN = ["term", "estimate", "std_error", "statistic", "p_value", "ci_low", "ci_high"]


def decimals(se: float) -> int | None:
    """Decimal places that show 2 significant digits of `se` (None: not a positive number)."""
    if not (math.isfinite(se) and se > 0):
        return None
    return max(0, 1 - math.floor(math.log10(se)))


def number(value: float, places: int | None) -> str:
    if math.isnan(value):
        return "-"
    if places is None:
        return f"{value:.10g}"
    if places > MAX_DECIMALS:
        return f"{value:.{max(1, places + math.floor(math.log10(abs(value) or 1)))}e}"
    return f"{value:.{places}f}"


def cells(estimates: Estimates) -> list[list[str]]:
    """The rows shown, as strings: the estimate, SE and CI rounded at the SE's second digit."""
    table = estimates.table
    rows = []
    for i, term in enumerate(table["term"]):
        places = decimals(table["std_error"][i])
        p, statistic = table["p_value"][i], table["statistic"][i]
        rows.append(
            [
                str(term),
                number(table["estimate"][i], places),
                number(table["std_error"][i], places),
                "-" if math.isnan(statistic) else f"{statistic:.2f}",
                "-" if math.isnan(p) else f"{p:.3g}",
                number(table["ci_low"][i], places),
                number(table["ci_high"][i], places),
            ]
        )
    return rows


def text(estimates: Estimates, notes: Sequence[str] = ()) -> str:
    """The table, right-aligned as statsmodels prints it, then what it is in words."""
    rows = [SHOWN, *cells(estimates)]
    widths = [max(len(row[j]) for row in rows) for j in range(len(SHOWN))]
    lines = [" ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([*lines, *notes, *estimates.footer])


def escape(cell: str) -> str:
    for char, replaced in (("\\", r"\textbackslash{}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        cell = cell.replace(char, replaced)
    for char in "&%$#_{}":
        cell = cell.replace(char, "\\" + char)
    return cell


def latex(estimates: Estimates, notes: Sequence[str] = ()) -> str:
    """A booktabs tabular: term, estimate, (SE), statistic, p-value, 95% CI; the footer as comments."""
    header = r"Term & Estimate & Std. error & Statistic & $p$ & \multicolumn{2}{c}{95\% CI} \\"
    body = [
        " & ".join(escape(c) if j == 0 else c for j, c in enumerate(row)) + r" \\" for row in cells(estimates)
    ]
    comments = [f"% {line}" for line in [*notes, *estimates.footer]]
    rules = [r"\begin{tabular}{lrrrrrr}", r"\toprule", header, r"\midrule"]
    return "\n".join([*comments, *rules, *body, r"\bottomrule", r"\end{tabular}", ""])


def files(estimates: Estimates, notes: Sequence[str] = ()) -> dict[str, str]:
    """Each file's name and contents."""
    return {
        ARTIFACT: to_csv(estimates.table),
        TEXT: text(estimates, notes) + "\n",
        LATEX: latex(estimates, notes),
    }


def write(estimates: Estimates, directory: Path, notes: Sequence[str] = ()) -> list[Path]:
    """The files into `directory`; their paths."""
    written = []
    for name, contents in files(estimates, notes).items():
        path = directory / name
        path.write_text(contents)
        written.append(path)
    return written
