"""A formula's syntax (data.formula), checked with the rest of the config: before torch is imported,
so a typo in a formula answers as fast as a typo in a key; and, from a CSV's header, its first rows and
its weights column, a column the formula names but the file lacks and weights that are negative or
missing (`check_file`, called by src/cli.py's precheck). The common mistakes are found by Python's own
parser and csv module (`quick_read`): formulaic imports pandas and scipy, most of a second. What the
formula means on all the data (transformations, missing values) is src/data/formula.py's, which checks
all of it again."""

from __future__ import annotations

import ast
import csv
import keyword
import math
import re
import warnings
from typing import Any

from src.errors import ConfigError

MAX_COLUMNS = 2000  # a dense design wider than this is refused (each Newton step solves k × k)


def one_line(text: str) -> str:
    """formulaic's message without its colours and markers, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m|[⧛⧚]", "", text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def no_target(where: str) -> ConfigError:
    return ConfigError(f"{where} needs one column to explain on the left of `~`, e.g. 'y ~ x1 + C(region)'")


def no_regressors(where: str) -> ConfigError:
    return ConfigError(
        f"{where} has no regressors: write at least one term after `~` "
        "(a column, np.log(x), I(x**2), C(group), x1:x2; `1` for the intercept alone)"
    )


# Where formulaic's grammar goes beyond Python's: backticks, %in%, {python}, [..], parts (`|`, which
# may end a formula), a `.` that is not in a number or an attribute, a name that starts with a digit.
BEYOND_PYTHON = re.compile(r"[`%{}\[\]|@$\\]|(?<!\w)\.|\.(?!\w)|\b\d+[^\W\d]")
OPERATOR = r"(\*\*|[-+*/:^])"


def quick_read(formula: str) -> tuple[str, list[str]] | None:
    """The left-hand column and the columns the right-hand side names (its terms, and the first
    argument of a call such as C(firm) or np.log(x)), read by Python's own parser where the formula
    keeps to the grammar formulaic shares with Python; None where it does not (left to formulaic).
    The mistakes it raises, formulaic refuses too (tests/test_formula_quick.py compares them)."""
    where = f"data.formula={formula!r}"
    words = re.findall(r"[^\W\d]\w*", formula)
    if formula.count("~") != 1 or BEYOND_PYTHON.search(formula) or any(map(keyword.iskeyword, words)):
        return None
    lhs, rhs = (side.strip() for side in formula.split("~"))
    if not lhs:
        raise no_target(where)
    if re.fullmatch(r"0|-\s*1|0\s*-\s*1", rhs):
        raise no_regressors(where)
    try:
        left = ast.parse(lhs, mode="eval").body
        right = ast.parse(rhs.replace(":", "*"), mode="eval").body  # `:` reads as Python's `*`
    except SyntaxError as exc:
        raise ConfigError(f"{where} is not a formula: {unreadable(rhs, exc)}") from None
    if not isinstance(left, ast.Name):
        return None  # np.log(y) ~ x: formulaic's to judge
    return left.id, named_columns(right)


def unreadable(rhs: str, exc: SyntaxError) -> str:
    """Why Python's parser could not read the right-hand side, in a formula's words."""
    if rhs.count("(") != rhs.count(")"):
        return "its parentheses do not pair up"
    if end := re.search(OPERATOR + r"\s*$", rhs):
        return f"operator `{end.group(1)}` has no term on its right"
    if start := re.match(r"\s*(\*\*|[*/:^])", rhs):
        return f"operator `{start.group(1)}` has no term on its left"
    if pair := re.search(OPERATOR + r"\s*(\*\*|[*/:^])", rhs):
        return f"operator `{pair.group(2)}` follows operator `{pair.group(1)}` with no term between"
    return f"{rhs!r} cannot be read at character {exc.offset} (an operator missing between two terms?)"


def named_columns(node: ast.expr) -> list[str]:
    """The names a right-hand side uses as columns: its terms, and the first argument of each call."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.BinOp):
        return named_columns(node.left) + named_columns(node.right)
    if isinstance(node, ast.UnaryOp):
        return named_columns(node.operand)
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name):
        return [node.args[0].id]
    return []


def parsed(formula: str) -> tuple[str, bool]:
    """The left-hand side and whether the right-hand side has an intercept; a syntax error, or a
    formula without exactly one left-hand side, is a ConfigError."""
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    where = f"data.formula={formula!r}"
    try:
        spec = Formula(formula)
    except FormulaicError as exc:
        raise ConfigError(f"{where} is not a formula: {one_line(str(exc))}") from None
    if not hasattr(spec, "lhs") or len(spec.lhs) != 1:
        raise no_target(where)
    (target,) = (str(term) for term in spec.lhs)
    terms = [str(term) for term in spec.rhs]
    if not terms:
        raise no_regressors(where)
    return target, "1" in terms


def terms(formula: str) -> list[str]:
    """The right-hand side's terms as formulaic writes them (`C(firm)`, `x1:x2`, `1`)."""
    from formulaic import Formula

    return [str(term) for term in Formula(formula).rhs]


def check_absorb(data: Any, model_target: str, cov: str | None) -> None:
    """data.absorb=<column>: the within transformation, valid for least squares only, on the full
    sample, with the fixed effects out of the formula; HC2/HC3 need the dummies' leverage."""
    column = data.get("absorb")
    if column is None:
        return
    where = f"data.absorb={column!r}"
    if data.get("formula") is None:
        raise ConfigError(
            f"{where} needs data.formula='y ~ x1 + x2' (the regressors besides the fixed effects)"
        )
    if model_target != "src.models.LinearRegression":
        raise ConfigError(
            f"{where}: absorbing fixed effects (the within transformation) is valid for model=linear "
            "only; a logit's fixed effects do not difference out: put C(...) in data.formula (at most "
            f"{MAX_COLUMNS} columns), or cluster on {column} without its dummies"
        )
    if data.get("train_prop") != 1.0 or data.get("val_prop") != 0.0:
        raise ConfigError(
            f"{where} absorbs the group means of the full sample: set data.train_prop=1.0 "
            "data.val_prop=0.0 (+experiment=estimate does)"
        )
    if cov in ("HC2", "HC3"):
        raise ConfigError(
            f"inference.cov={cov} needs each row's leverage in the design with the dummies of {column}; "
            f"with {where} choose classical, HC0, HC1 or cluster"
        )
    twice = [t for t in terms(data.formula) if re.fullmatch(rf"C\(\s*{re.escape(column)}\s*(,.*)?\)", t)]
    if twice:
        raise ConfigError(
            f"{where} and {twice[0]} in data.formula={data.formula!r} both take out the fixed effects of "
            f"{column}: give one (absorb them, or keep the dummies)"
        )


def unknown_column(message: str, where: str, source: str, columns: list[str]) -> ConfigError | None:
    """formulaic's error for a name the data lack, in our words; None for any other error."""
    missing = re.search(r"`([^`]+)` is not present in the dataset", message)
    if missing is None:
        return None
    return not_a_column(where, missing.group(1), source, columns)


def not_a_column(where: str, name: str, source: str, columns: list[str]) -> ConfigError:
    return ConfigError(f"{where}: {name!r} is not a column of {source}; available: {', '.join(columns)}")


def csv_columns(file: str) -> list[str] | None:
    """A CSV's header as pandas reads it (None: no such file, or not one to read here)."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle))
    except (OSError, UnicodeDecodeError, StopIteration, csv.Error):
        return None


def check_file(data: Any, cluster: str | None) -> None:
    """A CSV's formula columns and weights, from its header and the weights' own column, by the
    standard library, before torch (and formulaic) is imported; anything this cannot judge is left
    to `check_rows` and the run, which checks everything."""
    from hydra.utils import to_absolute_path

    path, formula, weights, absorb = (data.get(k) for k in ("path", "formula", "weights", "absorb"))
    if path is None or not str(path).lower().endswith(".csv") or (formula is None and weights is None):
        return
    file = to_absolute_path(str(path))
    source = f"data.path={file}"
    columns = csv_columns(file)
    if columns is None:
        return  # the run says what is wrong with the file
    read = quick_read(formula) if formula is not None else None
    for name in [read[0], *read[1]] if read else []:
        if name not in columns:
            raise not_a_column(f"data.formula={formula!r}", name, source, columns)
    for key, column in (("inference.cluster", cluster), ("data.absorb", absorb)):
        if column is not None and column not in columns:
            raise ConfigError(
                f"{key}={column!r} is not a column of {source}; available: {', '.join(columns)}"
            )
    if weights is not None:
        labels = [cluster, absorb] if formula is not None else None
        check_weight_column(file, source, columns, weights, labels, data.get("drop_missing", False))


def check_rows(data: Any) -> None:
    """The formula evaluated by formulaic on a CSV's first rows: a name the file lacks that the
    standard library could not read (`2a`, `{x + 1}`); only that is judged here."""
    from hydra.utils import to_absolute_path

    path, formula = data.get("path"), data.get("formula")
    if path is None or not str(path).lower().endswith(".csv") or formula is None:
        return
    import pandas as pd
    from formulaic import model_matrix
    from formulaic.errors import FormulaicError

    file = to_absolute_path(str(path))
    try:
        head = pd.read_csv(file, nrows=100)
    except Exception:  # no such file, not a CSV: the run says which
        return
    columns = [str(c) for c in head.columns]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_matrix(formula, head, na_action="ignore")
    except FormulaicError as exc:
        error = unknown_column(one_line(str(exc)), f"data.formula={formula!r}", f"data.path={file}", columns)
        if error is not None:
            raise error from None
    except Exception:  # a transformation failing on these rows: the run judges all of them
        return


# The strings pandas.read_csv reads as missing (pandas._libs.parsers.STR_NA_VALUES).
MISSING = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>"}
MISSING |= {"N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


def check_weight_column(
    file: str, source: str, columns: list[str], weights: str, labels: list[str | None] | None, drop: bool
) -> None:
    """data.weights: a column of the file, present and finite in each row (unless drop_missing, or,
    without a formula, where the run counts every column's gaps together), >= 0, not all 0. `labels`:
    the formula's cluster and absorb columns, whose gaps the run counts with the weights'."""
    if weights not in columns:
        raise ConfigError(
            f"data.weights={weights!r} is not a column of {source}; available: {', '.join(columns)}"
        )
    named = [c for c in (labels or []) if c is not None and c in columns] + [weights]
    where = [columns.index(c) for c in named]
    with open(file, newline="", encoding="utf-8-sig") as handle:
        rows = [
            [row[i] if i < len(row) else "" for i in where] for row in list(csv.reader(handle))[1:] if row
        ]
    try:  # a weight that is neither a number nor missing: not numeric, the run says so
        w = [math.nan if row[-1] in MISSING else float(row[-1]) for row in rows]
    except ValueError:
        return
    bad = sum(
        not abs(x) < math.inf or any(v in MISSING for v in row[:-1]) for x, row in zip(w, rows, strict=True)
    )
    if drop or (bad and labels is None):
        return
    if bad:
        raise ConfigError(
            f"{source} has {bad} rows with a missing or infinite value in "
            f"{' or '.join(map(repr, named))}; clean them, or set data.drop_missing=true to drop those rows"
        )
    if negative := [x for x in w if x < 0]:
        raise ConfigError(
            f"data.weights={weights!r}: {len(negative)} rows of {source} have a negative weight "
            f"(e.g. {negative[0]:g}); weights must be >= 0"
        )
    if not any(x > 0 for x in w):
        raise ConfigError(f"data.weights={weights!r}: every weight is 0; at least one must be > 0")
