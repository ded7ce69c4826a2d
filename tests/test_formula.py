"""Formulas, weights and fixed effects (issue 26) against statsmodels' formula API, term by term.

statsmodels reads formulas with patsy, descentlab with formulaic; both write the terms the same way
(`Intercept`, `np.log(income)`, `I(age ** 2)`, `C(region)[T.south]`, `x1:x2`), so the tables are
compared by term name. Estimates to 1e-8 (OLS, WLS) and 1e-6 (logit), standard errors to 1e-6.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from src.config import Cov
from src.data import formula as formulas
from src.errors import ConfigError
from src.estimation import inference
from src.loop import fit
from src.train import build
from tests.helpers import make_config, run_cli

FORMULA = "y ~ np.log(income) + age + I(age**2) + C(region) + x1:x2"
LOGIT = "buy ~ np.log(income) + age + C(region) + x1:x2"


def firms(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Workers in 40 firms: log income, a quadratic in age, a region, an interaction, firm shocks."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.uniform(1, 10, n),
            "age": rng.integers(20, 60, n).astype(float),
            "region": rng.choice(["north", "south", "west"], n),
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "firm": rng.integers(0, 40, n),
            "w": rng.uniform(0.5, 2.0, n),
        }
    )
    shock = rng.normal(scale=0.5, size=40)[frame.firm]
    index = np.log(frame.income) + 0.1 * frame.age - 0.001 * frame.age**2 + (frame.region == "south") * 0.5
    frame["y"] = 1 + index + frame.x1 * frame.x2 + shock + rng.normal(size=n)
    latent = index - index.mean() + 0.5 * frame.x1 * frame.x2 + shock
    frame["buy"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-latent))).astype(int)
    return frame


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = firms()
    path = tmp_path_factory.mktemp("formula") / "firms.csv"
    frame.to_csv(path, index=False)
    return path, pd.read_csv(path)  # what statsmodels reads: the file, as descentlab does


def estimates(path: Path, *overrides: str, cov: Cov = Cov.classical) -> inference.Estimates:
    """The estimates of a `+experiment=estimate` run on `path`."""
    cfg = make_config(
        "+experiment=estimate", "tracking=none", "trainer.progress=false", f"data.path={path}", *overrides
    )
    run = build(cfg)
    result = fit(run)
    assert result.stop_reason == "converged"
    table = inference.estimate(run.model, run.data, run.reference, cov, 0.0, result.stop_reason)
    assert table is not None
    return table


def estimate(path: Path, *overrides: str, cov: Cov = Cov.classical) -> pd.DataFrame:
    """The table of a `+experiment=estimate` run on `path`, indexed by term."""
    return pd.DataFrame(estimates(path, *overrides, cov=cov).table).set_index("term")


def statsmodels_cov(cov: Cov, groups: pd.Series) -> dict[str, Any]:
    if cov is Cov.cluster:
        return {"cov_type": "cluster", "cov_kwds": {"groups": groups}}
    return {"cov_type": "nonrobust" if cov is Cov.classical else cov.value}


def assert_same(ours: pd.DataFrame, theirs: Any, rtol: float) -> None:
    """Every term of statsmodels' fit, by name: the estimate to `rtol`, the standard error to 1e-6."""
    assert sorted(ours.index) == sorted(theirs.params.index)
    ours = ours.loc[theirs.params.index]
    np.testing.assert_allclose(ours.estimate, theirs.params, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(ours.std_error, theirs.bse, rtol=1e-6)
    np.testing.assert_allclose(ours.p_value, theirs.pvalues, rtol=1e-5, atol=1e-300)


@pytest.mark.parametrize("cov", [Cov.classical, Cov.HC1, Cov.cluster])
def test_ols_on_a_formula_is_statsmodels_ols_term_by_term(csv, cov):
    path, frame = csv
    cluster = ["inference.cov=cluster", "inference.cluster=firm"] if cov is Cov.cluster else []
    ours = estimate(path, f"data.formula='{FORMULA}'", *cluster, cov=cov)
    theirs = smf.ols(FORMULA, frame).fit(**statsmodels_cov(cov, frame.firm))
    assert "C(region)[T.south]" in ours.index and "I(age ** 2)" in ours.index  # patsy's names
    assert_same(ours, theirs, rtol=1e-8)


@pytest.mark.parametrize("cov", [Cov.classical, Cov.cluster])
def test_logit_on_a_formula_is_statsmodels_logit_term_by_term(csv, cov):
    path, frame = csv
    cluster = ["inference.cov=cluster", "inference.cluster=firm"] if cov is Cov.cluster else []
    ours = estimate(path, "model=logistic", f"data.formula='{LOGIT}'", *cluster, cov=cov)
    theirs = smf.logit(LOGIT, frame).fit(
        disp=0, method="newton", tol=1e-14, **statsmodels_cov(cov, frame.firm)
    )
    assert_same(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("cov", [Cov.classical, Cov.HC1, Cov.cluster])
def test_weights_are_statsmodels_wls(csv, cov):
    path, frame = csv
    cluster = ["inference.cov=cluster", "inference.cluster=firm"] if cov is Cov.cluster else []
    ours = estimate(path, f"data.formula='{FORMULA}'", "data.weights=w", *cluster, cov=cov)
    theirs = smf.wls(FORMULA, frame, weights=frame.w).fit(**statsmodels_cov(cov, frame.firm))
    assert_same(ours, theirs, rtol=1e-8)


def test_weights_without_a_formula_are_statsmodels_wls(csv):
    path, frame = csv
    ours = estimate(path, "data.target=y", "data.features=[x1,x2,age]", "data.weights=w")
    X = sm.add_constant(frame[["x1", "x2", "age"]])
    assert_same(ours.rename(index={"const": "const"}), sm.WLS(frame.y, X, weights=frame.w).fit(), rtol=1e-8)


@pytest.mark.parametrize("cov", [Cov.classical, Cov.HC1, Cov.cluster])
def test_weighted_logit_is_statsmodels_glm_with_freq_weights(csv, cov):
    path, frame = csv
    cluster = ["inference.cov=cluster", "inference.cluster=firm"] if cov is Cov.cluster else []
    ours = estimate(path, "model=logistic", f"data.formula='{LOGIT}'", "data.weights=w", *cluster, cov=cov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "cov_type not fully supported with freq_weights": checked here
        theirs = smf.glm(LOGIT, frame, family=sm.families.Binomial(), freq_weights=frame.w).fit(
            tol=1e-14, **statsmodels_cov(cov, frame.firm)
        )
    assert_same(ours, theirs, rtol=1e-6)
    unweighted = smf.logit(LOGIT, frame).fit(disp=0, method="newton", tol=1e-14)
    assert not np.allclose(ours.loc[unweighted.params.index].estimate, unweighted.params, rtol=1e-3)


@pytest.mark.parametrize(
    ("overrides", "name", "convention"),
    [
        ([], "OLS on 600 rows", None),
        (["data.weights=w"], "WLS on 600 rows", "weights 'w': minimizes sum w (y - x b)^2, statsmodels' WLS"),
        (["model=logistic"], "logit (MLE) on 600 rows", None),
        (
            ["model=logistic", "data.weights=w"],
            "weighted logit (MLE) on 600 rows",
            "are frequency weights: a row of weight w counts as w rows, statsmodels' GLM(family=Binomial(), "
            "freq_weights=w)",
        ),
    ],
)
def test_the_table_names_its_estimator_and_weighting(csv, overrides, name, convention):
    footer = estimates(csv[0], "data.formula='buy ~ x1 + age'", *overrides).footer
    assert footer[0].startswith(f"{name} (the full sample); covariance: classical")
    assert (convention is None) == (not any("weights" in line for line in footer))
    assert convention is None or convention in footer[1]


def test_firm_fixed_effects_with_firm_clustered_errors(csv):
    path, frame = csv
    f = "y ~ x1 + np.log(income) + C(firm)"
    ours = estimate(
        path, f"data.formula='{f}'", "inference.cov=cluster", "inference.cluster=firm", cov=Cov.cluster
    )
    theirs = smf.ols(f, frame).fit(**statsmodels_cov(Cov.cluster, frame.firm))
    assert "C(firm)[T.39]" in ours.index
    assert_same(ours, theirs, rtol=1e-8)


@pytest.fixture(scope="module")
def many_firms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """2,000 workers in 200 firms whose effects correlate with x1 (so the dummies matter), 30 regions."""
    rng = np.random.default_rng(3)
    n, groups = 2000, 200
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "firm": rng.integers(0, groups, n),
            "region": rng.integers(0, 30, n),
            "w": rng.uniform(0.5, 2.0, n),
        }
    )
    effect = rng.normal(size=groups)[frame.firm]
    frame["x1"] += effect
    frame["y"] = 1 + 0.5 * frame.x1 - 0.3 * frame.x2 + effect + rng.normal(size=n)
    path = tmp_path_factory.mktemp("absorb") / "firms.csv"
    frame.to_csv(path, index=False)
    return path, pd.read_csv(path)


@pytest.mark.parametrize(
    ("weights", "cov", "cluster"),
    [
        (False, Cov.classical, None),
        (True, Cov.HC1, None),
        (True, Cov.cluster, "firm"),
        (False, Cov.cluster, "region"),
    ],
)
def test_absorbed_fixed_effects_are_statsmodels_with_the_dummies(many_firms, weights, cov, cluster):
    """data.absorb=firm (the within transformation) gives the slopes and standard errors of OLS / WLS
    with 200 C(firm) dummies: only the degrees of freedom must count the groups."""
    path, frame = many_firms
    f = "y ~ x1 + x2 + x1:x2"
    chosen = [f"inference.cov={cov.value}", *([f"inference.cluster={cluster}"] if cluster else [])]
    weighted = ["data.weights=w"] if weights else []
    ours = estimates(path, f"data.formula='{f}'", "data.absorb=firm", *weighted, *chosen, cov=cov)
    table = pd.DataFrame(ours.table).set_index("term")
    dummies = f"{f} + C(firm)"
    fitted = smf.wls(dummies, frame, weights=frame.w) if weights else smf.ols(dummies, frame)
    theirs = fitted.fit(**statsmodels_cov(cov, frame[cluster] if cluster else frame.firm))
    assert list(table.index) == ["x1", "x2", "x1:x2"]
    slopes = table.index
    np.testing.assert_allclose(table.estimate, theirs.params[slopes], rtol=1e-8)
    np.testing.assert_allclose(table.std_error, theirs.bse[slopes], rtol=1e-8)
    np.testing.assert_allclose(table.p_value, theirs.pvalues[slopes], rtol=1e-6)
    assert any("fixed effects of 'firm' absorbed (200 groups" in line for line in ours.footer)
    if cov is Cov.classical:
        assert f"t({int(theirs.df_resid)})" in ours.footer[0]  # 2000 - 3 - 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=logistic"], "is valid for model=linear only; a logit's fixed effects do not difference out"),
        (["data.train_prop=0.7", "data.val_prop=0.15"], "absorbs the group means of the full sample"),
        (["inference.cov=HC3"], "inference.cov=HC3 needs each row's leverage in the design with the dummies"),
        (["data.formula='y ~ x1 + C(firm)'"], "and C(firm) in data.formula='y ~ x1 + C(firm)' both take out"),
    ],
)
def test_absorbing_is_refused_where_it_does_not_hold(many_firms, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        estimates(many_firms[0], "data.formula='y ~ x1'", "data.absorb=firm", *overrides)


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_minus_one_drops_the_intercept_as_in_statsmodels(csv, standardize):
    """Standardizing then only scales: centring would bring back the intercept the formula left out."""
    path, frame = csv
    f = "y ~ x1 + np.log(income) + x1:x2 - 1"
    ours = estimate(path, f"data.formula='{f}'", f"data.standardize={standardize}")
    theirs = smf.ols(f, frame).fit()
    assert "Intercept" not in ours.index and "const" not in ours.index
    assert_same(ours, theirs, rtol=1e-8)


def test_drop_missing_drops_the_rows_statsmodels_drops(tmp_path):
    frame = firms(n=300, seed=1)
    frame.loc[[3, 50, 51], "income"] = np.nan
    frame.loc[7, "region"] = None
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    frame = pd.read_csv(tmp_path / "gaps.csv")
    with pytest.raises(ConfigError, match="4 of 300 rows have a missing value"):
        estimate(tmp_path / "gaps.csv", f"data.formula='{FORMULA}'")
    ours = estimate(tmp_path / "gaps.csv", f"data.formula='{FORMULA}'", "data.drop_missing=true")
    assert_same(ours, smf.ols(FORMULA, frame).fit(), rtol=1e-8)


def test_a_design_too_wide_is_refused_naming_the_term(csv, monkeypatch):
    monkeypatch.setattr(formulas, "MAX_COLUMNS", 20)
    with pytest.raises(
        ConfigError, match=r"makes 41 columns \(C\(firm\) alone 39; 600 rows\): more than 20"
    ) as e:
        estimate(csv[0], "data.formula='y ~ x1 + C(firm)'")
    assert "absorb it, data.absorb=firm" in str(e.value) and "model=logistic: cluster on it" in str(e.value)


def test_a_split_says_its_table_is_not_the_estimators(csv, quiet_config):
    """With a validation split, the printed table's notes say which parameters it reports."""
    from src.train import notes

    cfg = quiet_config("data=csv", f"data.path={csv[0]}", "data.formula='y ~ x1'", "optimizer=newton")
    run = build(cfg)
    result = fit(run)
    (note,) = notes(run, result)
    assert f"epoch {result.best_epoch}, the best on the validation split" in note
    assert "not the estimator on the whole sample" in note and "+experiment=estimate" in note


@pytest.mark.slow
def test_the_readme_command_prints_and_writes_the_statsmodels_table(tmp_path):
    """README's "Estimate your data": one command, a CSV, a formula, firm-clustered errors."""
    frame = firms()
    frame.to_csv(tmp_path / "firms.csv", index=False)
    frame = pd.read_csv(tmp_path / "firms.csv")
    f = "y ~ np.log(income) + age + I(age**2) + C(region) + x1:x2"
    proc = run_cli(
        tmp_path, "+experiment=estimate", "data.path=firms.csv", f"data.formula='{f}'",
        "inference.cov=cluster", "inference.cluster=firm", "tracking=none",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    run_dir = tmp_path / "outputs" / "run"
    assert f"run directory: {run_dir}" in out
    theirs = smf.ols(f, frame).fit(**statsmodels_cov(Cov.cluster, frame.firm))
    ours = pd.read_csv(run_dir / "estimates.csv").set_index("term")
    assert_same(ours, theirs, rtol=1e-8)
    text = (run_dir / "estimates.txt").read_text()
    assert text in out  # the printed table is the file
    se = theirs.bse["np.log(income)"]
    places = 1 - int(np.floor(np.log10(se)))  # the SE's second significant digit
    assert f"{theirs.params['np.log(income)']:.{places}f}" in text and f"{se:.{places}f}" in text
    assert "cluster (40 groups)" in text
    tex = (run_dir / "estimates.tex").read_text()
    assert r"C(region)[T.south] &" in tex and r"\bottomrule" in tex
