"""nox sessions: `nox -s lint typecheck tests`, `nox -s train -- optimizer=nesterov`.

Sessions run in the current environment (`pip install -e ".[dev]"` first), because a fresh virtualenv
per session would download torch each time. `nox --force-venv-backend venv` isolates them instead.
"""

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


def install(session: nox.Session) -> None:
    if session.venv_backend != "none":
        session.install("-e", ".[dev]")  # torch as pyproject pins it


@nox.session
def lint(session: nox.Session) -> None:
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install(session)
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, one pytest-xdist worker per logical CPU (`auto` counts physical cores where
    psutil is installed: 1 on a 2-vCPU machine with hyper-threads); `nox -s tests -- -m "not slow"`
    for the fast tier, `-- -n 0` for one process. Extra arguments go to pytest."""
    install(session)
    session.run("pytest", "-n", "logical", *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """Table and overlay plot of the latest sweep; extra arguments go to `python -m src.compare`."""
    install(session)
    session.run("python", "-m", "src.compare", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks P1, P2, P2b, P4, P5, P6, P7, P8; `nox -s bench -- --smoke` for the quick check CI runs."""
    install(session)
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def accuracy(session: nox.Session) -> None:
    """Digits of NIST's certified estimates and standard errors (StRD linear regression, all eleven
    data sets) reached by Newton, L-BFGS and the exact reference θ*, beside statsmodels'."""
    install(session)
    session.run("python", "-m", "benchmarks.accuracy", *session.posargs)


@nox.session
def train(session: nox.Session) -> None:
    """The main job; extra arguments are Hydra overrides."""
    install(session)
    session.run("python", "-m", "src.train", *session.posargs)
