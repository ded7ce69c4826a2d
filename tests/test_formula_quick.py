"""The formula mistakes found without formulaic (src/config/formulas.py's `quick_read`, which lets a
mistake answer before pandas and scipy are imported) against formulaic itself: a formula it refuses,
formulaic refuses too, and the columns it reads are the columns formulaic needs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix
from formulaic.errors import FormulaicError

from src.config.formulas import parsed, quick_read
from src.errors import ConfigError

REFUSED = [
    "y ~ x1 +", "y ~ x1 -", "y ~ x1:", "y ~ x1 **", "y ~ * x1", "y ~ x1 + * x2", "y ~ (x1", "y ~ x1)",
    "y ~ x1 x2", "y ~ C(x1", "~ x1", " ~ x1 + x2", "y ~ 0", "y ~ -1", "y ~ 0 - 1",
]  # fmt: skip
READ = {  # formula: the columns it reads (the first argument of a call, not what is inside I(x2**2))
    "y ~ x1": {"y", "x1"},
    "y ~ x1 + x2 - 1": {"y", "x1", "x2"},
    "y ~ 0 + x1": {"y", "x1"},
    "y ~ x1:x2 + x1*x2": {"y", "x1", "x2"},
    "y ~ np.log(x1) + I(x2**2)": {"y", "x1"},
    "y ~ C(g) + C(g, contr.treatment)": {"y", "g"},
    "y ~ (x1 + x2)**2": {"y", "x1", "x2"},
    "y ~ x1 + + x2": {"y", "x1", "x2"},
    "y ~ center(x1) + scale(x2)": {"y", "x1", "x2"},
    "y ~ 1": {"y"},
}
LEFT_TO_FORMULAIC = [
    "y ~ .", "y ~ `x 1`", "y ~ x1 %in% g", "y ~ {x1 + 1}", "y ~ 2a", "y ~ x1..x2", "y ~ x1 |", "lambda ~ x1",
    "np.log(y) ~ x1", "y ~ x1 ~ x2",
]  # fmt: skip


@pytest.mark.parametrize("formula", REFUSED)
def test_what_the_quick_reading_refuses_formulaic_refuses(formula):
    with pytest.raises(ConfigError) as quick:
        quick_read(formula)
    with pytest.raises(ConfigError) as thorough:
        parsed(formula)
    kind = re.compile(r"is not a formula|has no regressors|needs one column to explain")
    assert kind.findall(str(quick.value)) == kind.findall(str(thorough.value)) != []


def frame(columns: set[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = {c: rng.uniform(1, 2, 20) for c in columns}
    if "g" in columns:
        data["g"] = np.array(list("abcd") * 5)
    return pd.DataFrame(data)


@pytest.mark.parametrize(("formula", "read"), READ.items())
def test_the_columns_it_reads_are_columns_formulaic_needs(formula, read):
    target, columns = quick_read(formula)  # type: ignore[misc]
    assert {target, *columns} == read
    everything = read | {"x2"}
    model_matrix(formula, frame(everything))  # all there: formulaic evaluates it
    for missing in read:  # and cannot do without any one it reads
        with pytest.raises(FormulaicError, match=f"`{missing}`|'{missing}'"):
            model_matrix(formula, frame(everything - {missing}))


@pytest.mark.parametrize("formula", LEFT_TO_FORMULAIC)
def test_beyond_pythons_grammar_it_says_nothing(formula):
    assert quick_read(formula) is None
