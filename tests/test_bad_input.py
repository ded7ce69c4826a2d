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
    (
        ["optimizer.lrr=0.1"],
        "optimizer.lrr is not a key of optimizer=sgd: did you mean optimizer.lr? Its keys: lr, weight_decay",
    ),
    (["+foo=1"], "foo=1 is not allowed: not a config key; the keys are data, inference, model, optimizer"),
    (
        ["optimizer.learning_rate=0.1"],
        "optimizer.learning_rate is not a key of optimizer=sgd: did you mean optimizer.lr?",
    ),
    (
        ["trainer.epochs=5"],
        "trainer.epochs is not a key of trainer: did you mean trainer.max_epochs? Its keys: max_epochs,",
    ),
    (["optimizer=adam", "optimizer.momentum=0.5"], "(momentum is a key of optimizer=rmsprop, sgd)"),
    (["+sed=1"], "sed=1 is not allowed: not a config key; the keys are data, inference, model, optimizer"),
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


# Formulas and weights on a CSV (tests/test_formula.py compares the estimates with statsmodels).
TABLE = "y,x1,x2,region,w,bad_w,gap_w\n" + "".join(
    f"{(i * 7) % 11 + 0.5 * i},{i % 5},{(i * 3) % 7},{'nsw'[i % 3]},{1 + i % 4},{-1 if i == 3 else 1},"
    f"{'' if i == 4 else 2}\n"
    for i in range(30)
)
CSV = ["+experiment=estimate", "data.path=table.csv"]
FORMULA_CATALOG = [
    (["data.formula='y ~ x1 + nope'"], "data.formula='y ~ x1 + nope': 'nope' is not a column of data.path="),
    (
        ["data.formula='y ~ x1 +'"],
        "data.formula='y ~ x1 +' is not a formula: operator `+` has no term on its right",
    ),
    (["data.formula='y ~ 0'"], "data.formula='y ~ 0' has no regressors: write at least one term after `~`"),
    (["data.formula='~ x1'"], "data.formula='~ x1' needs one column to explain on the left of `~`"),
    (["data.formula='y ~ x1'", "data.weights=bad_w"], "data.weights='bad_w': 1 rows of data.path="),
    (
        ["data.formula='y ~ x1'", "data.weights=gap_w"],
        "has 1 rows with a missing or infinite value in 'gap_w'; clean",
    ),
    (
        ["data.target=y", "data.features=[x1]", "data.weights=bad_w"],
        "data.weights='bad_w': 1 rows of data.path=",
    ),
    (["data.formula='y ~ x1'", "data.weights=nope"], "data.weights='nope' is not a column of data.path="),
    (
        ["data.formula='y ~ x1 - 1'", "data.intercept=true"],
        "data.intercept=true disagrees with data.formula=",
    ),
    (
        ["data.formula='y ~ x1'", "model.bias=true"],
        "model.bias=True is not allowed: data.formula decides the inter",
    ),
    (
        ["data.formula='y ~ x1'", "data.features=[x1]"],
        "data.features and data.formula both choose the regressors",
    ),
    (
        ["data.formula='y ~ x1'", "data.target=x2"],
        "data.target='x2' disagrees with data.formula='y ~ x1', which",
    ),
    (
        ["data.formula='y ~ x1'", "data.absorb=region", "model=logistic"],
        "data.absorb='region': absorbing fixed effects (the within transformation) is valid for model=linear",
    ),
    (
        ["data.formula='y ~ x1 + C(region)'", "data.absorb=region"],
        "data.absorb='region' and C(region) in data.formula='y ~ x1 + C(region)' both take out the fixed",
    ),
    (["data.formula='y ~ x1'", "data.absorb=nope"], "data.absorb='nope' is not a column of data.path="),
    (["data.formula='region ~ x1'"], "the left-hand side 'region' must be one numeric column"),
    (["data.formula='y ~ np.log(x1)'"], "gives infinite values (6 in 'np.log(x1)'; e.g. np.log of 0)"),
    (
        ["data.formula='y ~ x1'", "data.formla=x"],
        "data.formla is not a key of data=csv: did you mean data.formula?",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"), FORMULA_CATALOG, ids=[" ".join(c[0]) for c in FORMULA_CATALOG]
)
def test_a_bad_formula_or_weight_column_is_one_line_and_exit_2(cli, tmp_path, overrides, message):
    (tmp_path / "table.csv").write_text(TABLE)
    test_bad_input_is_one_line_and_a_nonzero_exit_with_nothing_running(
        cli, tmp_path, [*CSV, *overrides], message
    )


PRECHECKED = {  # found by the precheck: the config, the CSV's first rows and its weights column
    "unknown column": ["data.formula='y ~ x1 + nope'"],
    "syntax error": ["data.formula='y ~ x1 +'"],
    "no regressors": ["data.formula='y ~ 0'"],
    "negative weight": ["data.formula='y ~ x1'", "data.weights=bad_w"],
    "missing weight": ["data.formula='y ~ x1'", "data.weights=gap_w"],
    "absorb column": ["data.formula='y ~ x1'", "data.absorb=nope"],
    "key typo": ["optimizer.learning_rate=0.1"],
}
HEAVY = ("torch", "mlflow", "optuna", "formulaic", "pandas")  # formulaic and pandas: most of a second


@pytest.mark.parametrize("overrides", PRECHECKED.values(), ids=PRECHECKED.keys())
def test_formula_and_weight_mistakes_are_found_before_torch_mlflow_and_optuna(tmp_path, overrides):
    """What the process had imported when the precheck ended it (exit 2): none of the heavy ones."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    (tmp_path / "table.csv").write_text(TABLE)
    code = (
        "import sys\nfrom src import cli\n"
        "try:\n    cli.precheck(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        f"    print(exit.code, *sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *CSV, *overrides],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert proc.stdout.split() == ["2"], proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")


@pytest.mark.parametrize("sweep", [[], ["--multirun", "optimizer=sgd,adam"]], ids=["run", "multirun"])
def test_a_store_file_that_is_not_a_database_is_one_line_and_no_job_runs(cli, tmp_path, sweep):
    """A sweep whose parent run cannot be made stops before its first job rather than running its
    jobs unparented (Hydra only warns about a callback's error)."""
    (tmp_path / "notes.db").write_text("my notes, not a database\n")
    proc = cli(*sweep, "tracking.uri=sqlite:///notes.db", "trainer.max_epochs=2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"{tmp_path / 'notes.db'} is not an SQLite database; name a new file" in lines[0]
    assert (tmp_path / "notes.db").read_text() == "my notes, not a database\n"  # left as it was
    assert "epoch" not in proc.stdout.lower() and not list(tmp_path.glob("multirun/*/.hydra")), proc.stdout


def test_a_sweep_whose_parent_run_cannot_be_made_stops_before_its_first_job(cli, tmp_path):
    """A store MLflow fails to open (here no MySQL driver, or no server on port 9): Hydra would only
    warn about the callback's error and run the jobs unparented; the sweep stops in one line, exit 1."""
    proc = cli("--multirun", "optimizer=sgd,adam", "tracking.uri=mysql://nobody@127.0.0.1:9/none")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Warning" not in proc.stderr and "epoch" not in proc.stdout.lower(), proc.stdout
    assert not (tmp_path / "multirun").exists()  # no job started


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=basic"]], ids=["batched", "basic"])
def test_a_later_jobs_bad_value_stops_the_sweep_before_its_first_job(cli, tmp_path, launcher):
    """Every job is composed before any runs: by the batched launcher (the default, whose sweeper then
    skips Hydra's second composition) or by Hydra's sweeper's check (the basic launcher)."""
    proc = cli("--multirun", "seed=1,2,abc", "trainer.max_epochs=2", *launcher)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == "error: seed: Value 'abc' of type 'str' could not be converted to Integer"
    assert not list(tmp_path.glob("multirun/*/*/0")), "a job ran"
    # the one run: the sweep's parent, ended FAILED
    assert [r.info.status for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")] == ["FAILED"]
