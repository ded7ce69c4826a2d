"""Data choices: simulated sources, CSV / Parquet files, bundled data sets, and every bad-data case."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from src.errors import ConfigError
from src.train import build
from tests.helpers import all_runs

N = 200


def wages() -> pd.DataFrame:
    """A small wage table: numeric columns, a 0/1 dummy and a text column."""
    rng = np.random.default_rng(0)
    educ = rng.integers(8, 21, N).astype(float)
    exper = rng.uniform(0, 40, N)
    female = rng.integers(0, 2, N)
    wage = 1 + 0.5 * educ + 0.1 * exper - 0.8 * female + rng.normal(0, 1, N)
    name = [f"person{i}" for i in range(N)]
    return pd.DataFrame({"wage": wage, "educ": educ, "exper": exper, "female": female, "name": name})


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "wages.csv"
    wages().to_csv(path, index=False)
    return path


def build_error(make, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(make(*overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------ files through the CLI
@pytest.mark.slow
@pytest.mark.parametrize(
    ("file", "extra"),
    [("wages.csv", ()), ("wages.parquet", ("hydra.job.chdir=true",))],  # chdir: still the launch dir
)
def test_a_csv_or_parquet_file_runs_from_the_cli(cli, tmp_path, quiet_config, monkeypatch, file, extra):
    frame = wages()
    if file.endswith(".parquet"):
        frame.to_parquet(tmp_path / file)
    else:
        frame.to_csv(tmp_path / file, index=False)
    args = ("data=csv", f"data.path={file}", "data.target=wage", "trainer.max_epochs=15", *extra)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(*args, MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED"
    gaps = [m.value for m in MlflowClient(uri).get_metric_history(run.info.run_id, "opt_gap")]
    assert len(gaps) == 15 and min(gaps) > -1e-5 and gaps[-1] < gaps[0]
    assert "ref_error" in run.data.metrics

    # The logged reference is least squares on the same training split, from statsmodels.
    import statsmodels.api as sm

    monkeypatch.chdir(tmp_path)
    train = build(quiet_config(*args[:3])).data.train  # float32, as the run
    ols = sm.OLS(train.y.double().numpy(), train.X.double().numpy()).fit()
    assert run.data.metrics["reference_loss"] == pytest.approx(ols.ssr / len(train), rel=1e-9)


BAD_FILES = {
    "empty.csv": b"",
    "junk.parquet": b"this is not a parquet file",
    "gaps.csv": b"wage,educ\n" + b"10,12\n,14\n11,nan\n12,inf\n13,16\n" * 5,
    "grades.csv": b"grade,gpa\n" + b"1,3.1\n2,2.5\n1,3.9\n2,2.2\n" * 20,
}


CSV = ("data=csv", "data.target=wage")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((*CSV, "data.path=missing.csv"), "missing.csv: no such file"),
        ((*CSV, "data.path=empty.csv"), "empty.csv: the file is empty"),
        ((*CSV, "data.path=junk.parquet"), "junk.parquet: cannot read it as Parquet"),
        (("data=csv", "data.path=wages.csv", "data.target=salary"), "data.target='salary' is not a column"),
        ((*CSV, "data.path=wages.csv", "data.features=[educ,name]"), "column 'name' of data.path="),
        ((*CSV, "data.path=gaps.csv"), "has missing or infinite values (5 in 'wage', 10 in 'educ')"),
        (
            (*CSV, "data.path=wages.csv", "trainer.batch_size=500"),
            "trainer.batch_size=500 is not allowed: the training split has 140 rows",
        ),
        (
            ("data=csv", "data.path=grades.csv", "data.target=grade", "model=logistic"),
            "model=logistic needs a 0/1 target, but y takes 2 values (1, 2)",
        ),
        (("model=logistic",), "model=logistic needs a 0/1 target, but y takes 1000 values"),
        (CSV, "data.path=None is not allowed: give the file, data.path=<file.csv>"),
        (("data=csv", "data.path=wages.csv"), "data.target=None is not allowed: name the column to predict"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_no_run(cli, tmp_path, table, args, expected):
    for name, content in BAD_FILES.items():
        (tmp_path / name).write_bytes(content)
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") == []  # refused before any run started


# ---------------------------------------------------------------------------- the rest, in-process
def test_every_other_numeric_column_is_a_feature_after_the_intercept(quiet_config, table):
    cfg = quiet_config("data=csv", f"data.path={table}", "data.target=wage", "data.standardize=false")
    data = build(cfg).data
    frame = wages().set_index("wage")
    assert data.n_features == 4  # const, educ, exper, female; `name` is text
    assert torch.equal(data.train.X[:, 0], torch.ones(len(data.train)))
    # float32 by default: match each row's wage to the table's within rounding.
    for X, y in ((data.train.X, data.train.y), (data.test.X, data.test.y)):
        rows = np.abs(frame.index.to_numpy()[:, None] - y.double().numpy()).argmin(0)
        expected = frame.iloc[rows][["educ", "exper", "female"]].to_numpy()
        np.testing.assert_allclose(X[:, 1:].double().numpy(), expected, rtol=1e-6)


def test_standardization_uses_training_rows_only(quiet_config, table):
    cfg = quiet_config("data=csv", f"data.path={table}", "data.target=wage", "trainer.dtype=float64")
    data = build(cfg).data
    frame = wages().set_index("wage")[["educ", "exper", "female"]]  # wage values are distinct keys
    raw_train = frame.loc[data.train.y.numpy()].to_numpy()
    mean, std = raw_train.mean(0), raw_train.std(0)  # ddof=0
    for split in (data.train, data.val, data.test):
        raw = frame.loc[split.y.numpy()].to_numpy()
        np.testing.assert_allclose(split.X[:, 1:].numpy(), (raw - mean) / std, rtol=1e-12, atol=1e-12)
    assert not np.allclose(frame.to_numpy().mean(0), mean)  # the full-sample mean differs


def test_drop_missing_drops_exactly_the_bad_rows(quiet_config, tmp_path):
    frame = wages()
    frame.loc[[3, 50], "educ"] = np.nan
    frame.loc[7, "exper"] = np.inf
    frame.to_csv(tmp_path / "w.csv", index=False)
    base = ("data=csv", f"data.path={tmp_path / 'w.csv'}", "data.target=wage")
    assert "(2 in 'educ', 1 in 'exper')" in build_error(quiet_config, *base)
    data = build(quiet_config(*base, "data.drop_missing=true")).data
    assert len(data.train) + len(data.val) + len(data.test) == N - 3
    assert torch.isfinite(data.train.X).all()


@pytest.mark.parametrize(
    ("content", "overrides", "expected"),
    [
        (b"wage,educ\n", [], "has no rows (columns: wage, educ)"),
        (None, ["data.features=[educ,tenure]"], "data.features: 'tenure' not a column of"),
        (None, ["data.target=name"], "column 'name' of data.path="),
        (None, ["data.features=[wage,educ]"], "data.features contains the target 'wage'"),
        (
            b"wage,educ\n1,2\n",
            ["data.train_prop=0.3"],
            "1 rows are too few for train_prop=0.3, val_prop=0.15",
        ),
        (
            b"wage,a,b,c\n1,1,0,1\n2,0,1,1\n3,2,1,3\n4,1,3,4\n5,5,1,6\n6,0,0,0\n7,1,1,2\n8,3,1,4\n",
            ["data.train_prop=1", "data.val_prop=0"],
            "the design is singular on the training split (8 rows, rank 3 of 4 columns): 'c' is a linear "
            "combination of 'const', 'a', 'b'; drop it from data.features",
        ),
        (
            b"wage,educ,g\n1,2,x\n2,3,x\n3,5,x\n4,4,x\n5,1,x\n6,0,x\n",
            ["inference.cov=cluster", "inference.cluster=g"],
            "inference.cluster='g' puts all 4 training rows in one group; clustered standard errors need",
        ),
        (
            b"wage,educ,one\n1,2,1\n2,3,1\n3,5,1\n4,4,1\n5,1,1\n6,0,1\n",
            [],
            "'one' is constant on the training",
        ),
        (None, ["data.path=wages.xlsx"], "unknown file type '.xlsx'; allowed: .csv, .parquet, .pq"),
        (None, ["model.hidden=[8,0]", "model=mlp"], "model.hidden[1]=0 is not allowed: must be >= 1"),
        (b"wage,educ,educ\n1,2,3\n", [], "has repeated column names: 'educ'; rename them"),
        (
            b"wage;educ\n1;2\n",
            [],
            "available: wage;educ (the header holds ;s: data.path must be comma-separated",
        ),
        (b"wage\teduc\n1\t2\n", [], "(the header holds tabs: data.path must be comma-separated"),
        (None, ["data.features=[]"], "data.features=[] is not allowed: name at least one column, or null"),
    ],
)
def test_bad_data_in_process(quiet_config, table, tmp_path, content, overrides, expected):
    path = table
    if content is not None:
        path = tmp_path / "other.csv"
        path.write_bytes(content)
    message = build_error(quiet_config, "data=csv", f"data.path={path}", "data.target=wage", *overrides)
    assert expected in message


def test_relative_path_is_relative_to_the_launch_directory(quiet_config, table, monkeypatch):
    monkeypatch.chdir(table.parent)
    assert build(quiet_config("data=csv", "data.path=wages.csv", "data.target=wage")).data.n_features == 4


# ------------------------------------------------------------------------- simulated and bundled sets
def test_logistic_data_are_bernoulli_draws_with_the_logit_probability(quiet_config):
    data = build(quiet_config("data=logistic", "data.n=20000", "trainer.dtype=float64")).data
    X = torch.cat([data.train.X, data.val.X, data.test.X])
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    assert set(y.unique().tolist()) == {0.0, 1.0} and data.theta is not None
    p = torch.sigmoid(X @ data.theta)
    # y − p has mean 0 and variance mean(p(1 − p)): within 4 standard errors, also given x.
    for weight in (torch.ones_like(p), X[:, 0]):
        se = math.sqrt(float((weight**2 * p * (1 - p)).sum()))
        assert abs(float((weight * (y - p)).sum())) < 4 * se


def test_nonlinear_data_follow_the_sine_curve(quiet_config):
    data = build(quiet_config("data=nonlinear", "data.noise_std=0", "model=mlp")).data
    assert data.theta is None  # nothing a linear model could recover
    assert data.train.y.abs().max() <= 1 and data.train.y.std() > 0.3


def test_bundled_fair_is_the_statsmodels_table(quiet_config):
    from statsmodels.datasets import fair

    raw = fair.load_pandas().data
    data = build(quiet_config("data=fair", "data.standardize=false", "trainer.dtype=float64")).data
    assert len(data.train) + len(data.val) + len(data.test) == len(raw) == 6366
    assert data.n_features == 1 + 8
    assert float(data.train.y.sum() + data.val.y.sum() + data.test.y.sum()) == pytest.approx(
        raw.affairs.sum()
    )


def test_unknown_statsmodels_data_set_lists_the_available_ones(quiet_config):
    message = build_error(quiet_config, "data=fair", "data.name=penguins")
    assert "data.name='penguins' is not a statsmodels data set; available: " in message
    assert "longley" in message and "spector" in message


@pytest.mark.slow
def test_bundled_spector_runs_by_name_as_a_logit_and_reports_opt_gap(cli, tmp_path):
    proc = cli("data=spector", "trainer.max_epochs=20")
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = all_runs(uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["choice.data"] == "spector" and run.data.tags["choice.model"] == "logistic"
    assert run.data.params["trainer.batch_size"] == "full"  # 22 training rows: one full batch
    gaps = [m.value for m in MlflowClient(uri).get_metric_history(run.info.run_id, "opt_gap")]
    # Gradient descent with η below 2/L on a convex smooth loss: the gap falls every epoch.
    assert len(gaps) == 20 and all(0 < b < a for a, b in pairwise(gaps))
    assert run.data.metrics["reference_loss"] > 0
    assert "opt_gap = " in proc.stdout + proc.stderr
