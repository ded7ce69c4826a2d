"""The bad-input catalog: each case exits non-zero with its one line and leaves no RUNNING run.

The README's "Common errors" lists these messages. Data-file cases live in tests/test_data.py.
"""

from __future__ import annotations

import pytest

from tests.helpers import all_runs

CATALOG = [
    # unknown choices, keys and types
    (["optimizer=nope"], "optimizer=nope is not a choice; available: adagrad, adam, adamw, gd, lbfgs"),
    (["schedule=nope"], "schedule=nope is not a choice; available: constant, cosine, exponential"),
    (["optimizer.lrr=0.1"], "optimizer.lrr: Key 'lrr' not in 'SGDConf'"),
    (["+foo=1"], "foo=1 is not allowed: not a config key; the keys are data, inference, model, optimizer"),
    (["optimizer.lr=abc"], "optimizer.lr: Value 'abc' of type 'str' could not be converted to Float"),
    (["seed=abc"], "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (["trainer.sampling=sometimes"], "trainer.sampling: Invalid value 'sometimes', expected one of [shuffle"),
    (["trainer.dtype=float16"], "trainer.dtype: Invalid value 'float16', expected one of [float32, float64]"),
    # values out of range
    (["optimizer.lr=-1"], "optimizer.lr=-1.0 is not allowed: must be > 0"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is not allowed: must be a finite number"),
    (["trainer.max_time=-inf"], "trainer.max_time=-inf is not allowed: must be a finite number"),
    (
        ["seed=99999999999999999999"],
        "seed=99999999999999999999 is not allowed: must be in [-9223372036854775808, ",
    ),
    (
        ["optimizer=momentum", "optimizer.momentum=1.5"],
        "optimizer.momentum=1.5 is not allowed: must be in [0, 1)",
    ),
    (
        ["optimizer=adam", "optimizer.betas=[0.9,1.5]"],
        "optimizer.betas[1]=1.5 is not allowed: must be in [0, 1)",
    ),
    (["optimizer=newton", "optimizer.damping=-1"], "optimizer.damping=-1.0 is not allowed: must be >= 0"),
    (
        ["optimizer=preconditioned", "optimizer.preconditioner=magic"],
        "optimizer.preconditioner='magic' is not",
    ),
    (["schedule=step", "schedule.gamma=0"], "schedule.gamma=0.0 is not allowed: must be in (0, 1]"),
    (["schedule=robbins_monro", "schedule.kappa=0"], "schedule.kappa=0.0 is not allowed: must be > 0"),
    (["regularization.l2=-1"], "regularization.l2=-1.0 is not allowed: must be >= 0"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 is not allowed: must be >= 1, or null for the full"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed: must be >= 1"),
    (["trainer.patience=0"], "trainer.patience=0 is not allowed: must be >= 1"),
    (["trainer.checkpoint_every=0"], "trainer.checkpoint_every=0 is not allowed: must be >= 1 epochs"),
    (["trainer.device=tpu"], "trainer.device='tpu' is not allowed: must be 'cpu' or 'cuda[:N]'"),
    # conflicting or inconsistent options
    (["data.train_prop=0.95"], "train_prop + val_prop = 1.1 must be <= 1 (the rest is the test split)"),
    (["data.val_prop=-0.1"], "data.val_prop=-0.1 is not allowed: must be in [0, 1)"),
    (["data.n=2"], "data.n=2 is not allowed: must be >= 3"),
    (
        ["data=ill_conditioned", "data.condition_number=0.5"],
        "data.condition_number=0.5 is not allowed: must be >= 1",
    ),
    # the tracking store
    (
        ["tracking.uri=garbage"],
        "tracking.uri=garbage is not a tracking store MLflow can use; use sqlite:///path",
    ),
    (
        ["tracking.uri=foo://bar"],
        "tracking.uri=foo://bar is not a tracking store MLflow can use; use sqlite:///",
    ),
    (
        ["tracking.uri=file:///tmp/x"],
        "tracking.uri=file:///tmp/x: MLflow's file store needs MLFLOW_ALLOW_FILE_",
    ),
    (
        ["tracking.uri=http://127.0.0.1:9"],
        "tracking.uri=http://127.0.0.1:9: no tracking server answered GET http://127.0.0.1:9/health",
    ),
    # standard errors and designs (more, with data files, in tests/test_data.py)
    (["inference.cov=HC5"], "inference.cov: Invalid value 'HC5', expected one of [classical, HC0, HC1"),
    (
        ["inference.cov=cluster"],
        "inference.cluster=None is not allowed: inference.cov=cluster needs the column",
    ),
    (
        ["inference.cluster=x"],
        "inference.cluster='x' is not allowed: is only used with inference.cov=cluster",
    ),
    (
        ["inference.cov=cluster", "inference.cluster=x"],
        "inference.cluster='x' is not allowed: needs a table of data (data=csv, or a statsmodels data set",
    ),
    (
        ["data=fair", "inference.cov=cluster", "inference.cluster=nope"],
        "inference.cluster='nope' is not a column of statsmodels data set 'fair'; available: rate_marriage",
    ),
    (["data=fair", "data.features=[age,age]"], "data.features lists 'age' more than once: the design would"),
    (["model=mlp", "inference.cov=HC1"], "inference.cov=HC1: no standard errors: MLP is not an estimator"),
    (
        ["regularization.l2=0.1", "inference.cov=classical"],
        "inference.cov=classical: no standard errors: regularization.l2=0.1 penalizes the estimate",
    ),
    (["resume=no/such/dir"], "resume=no/such/dir: no such run dir, and not an MLflow run id (32 hex digits)"),
    (
        ["warm_start=0123456789abcdef0123456789abcdef"],
        "warm_start=0123456789abcdef0123456789abcdef is neither",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), CATALOG, ids=[" ".join(c[0]) for c in CATALOG])
def test_bad_input_is_one_line_and_a_nonzero_exit_with_nothing_running(cli, tmp_path, overrides, message):
    proc = cli(*overrides)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert all(r.info.status != "RUNNING" for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}"))
