"""Compare runs from MLflow: a table sorted by best val loss, and the val-loss curves overlaid (what
a --multirun's parent run, src/sweep/parent.py, ends with), and the config keys two runs differ in.

Runs that differ only in `seed` are repeats of one configuration: the table then shows each group's
n, mean and 95% t-interval, the plot each group's mean curve with its band, and each configuration
is compared with the best one seed by seed (paired; src/repeats.py computes all of it).

python -m src.compare                          # the latest sweep, in any experiment
python -m src.compare --experiment lesson-x    # the latest sweep of one experiment
python -m src.compare --experiment x --all     # every run of an experiment
python -m src.compare --parent <run_id>        # the runs of one sweep
python -m src.compare --diff RUN_A RUN_B       # the config keys whose values differ
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from src.repeats import Paired, finite, interval, paired, seed_of, spread
from src.tracking.names import flatten, relative_to_best, separating_digits, short_number
from src.tracking.store import CONFIG_ARTIFACT, REPEATS_TAG, STUDY_TAG, SWEEP_TAG, child_runs
from src.tracking.uris import tracking_uri, ui_hint

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
SEED = re.compile(r"(^| )seed=\S+")
MAX_LEGEND = 12  # more entries would hide the plot; the table lists every run
SUMMARY = ("best_val_loss", "test_loss", "epochs")  # what a group of repeats reports intervals of


def sweep_runs(client: MlflowClient, parent_id: str) -> list[Run]:
    """A sweep's training runs: its children, and for an Optuna trial with repeats, the trial's seeds."""
    out: list[Run] = []
    for run in child_runs(client, parent_id):
        out += child_runs(client, run.info.run_id) if REPEATS_TAG in run.data.tags else [run]
    return out


def experiment_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """The experiment's training runs (sweep parents and trials with repeats left out)."""
    runs = client.search_runs([experiment_id], max_results=10_000)
    return [r for r in runs if SWEEP_TAG not in r.data.tags and REPEATS_TAG not in r.data.tags]


def latest_parent(client: MlflowClient, experiment_ids: Sequence[str]) -> Run | None:
    parents = client.search_runs(
        list(experiment_ids), f"tags.`{SWEEP_TAG}` != ''", order_by=["attributes.start_time DESC"]
    )
    return parents[0] if parents else None


def latest_parent_with_runs(client: MlflowClient, experiment_ids: Sequence[str]) -> Run | None:
    parents = client.search_runs(
        list(experiment_ids),
        f"tags.`{SWEEP_TAG}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    return next((p for p in parents if sweep_runs(client, p.info.run_id)), None)


def no_jobs(parent: Run) -> str:
    """What a sweep with no runs did, in one line (sweeps made before an Optuna sweep with a full
    study stopped making a parent run, or killed before their first job)."""
    study = parent.data.tags.get(STUDY_TAG)
    why = (
        f"its Optuna study {study} ran no trial (a study that already holds n_trials runs nothing)"
        if study
        else "it was stopped before its first job"
    )
    run = parent.info
    return f"sweep {run.run_id} ({run.run_name}) has no runs: {why}; status {run.status}"


def swept(run: Run) -> str:
    """The run's own command-line overrides, less the `+experiment=` that every job of a lesson shares."""
    overrides = run.data.tags.get("overrides", "").split()
    return " ".join(o for o in overrides if not o.startswith("+experiment="))


@dataclass
class Group:
    """Runs that differ only in `seed` (or a single run)."""

    name: str
    runs: list[Run]

    def values(self, metric: str) -> list[float]:
        return finite(self.runs, metric)


def group(runs: Iterable[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        name = SEED.sub("", run.info.run_name or run.info.run_id[:8]).strip()
        key = f"{SEED.sub('', swept(run)).strip()}|{name}"
        groups.setdefault(key, Group(name, [])).runs.append(run)
    return list(groups.values())


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, lo, hi = interval(values)
    if math.isnan(lo):
        return short_number(mean)
    return f"{short_number(mean)} [{short_number(lo)}, {short_number(hi)}]"


def _sort_key(metric: str) -> Callable[[Group], float]:
    def key(g: Group) -> float:
        values = g.values(metric)
        return spread(values).mean if values else math.inf

    return key


def summary(runs: list[Run], sort_by: str = "best_val_loss") -> pd.DataFrame:
    """One row per run, or per group of repeats (n, then mean [95% CI] of each summary metric),
    best first by `sort_by`; cells as printed."""
    import pandas as pd

    groups = sorted(group(runs), key=_sort_key(sort_by))
    metrics = list(dict.fromkeys([sort_by, *SUMMARY]))
    if any(len(g.runs) > 1 for g in groups):
        rows = [[g.name, str(len(g.runs)), *(_cell(g.values(m)) for m in metrics)] for g in groups]
        return pd.DataFrame(rows, columns=["run", "n", *metrics])
    rows = []
    ranked = [g.values(sort_by)[0] if g.values(sort_by) else math.nan for g in groups]
    digits = separating_digits(ranked)
    for g, value in zip(groups, ranked, strict=True):
        run = g.runs[0]
        wall = run.data.metrics.get("wall_time")
        status = run.data.tags.get("stop_reason", run.info.status.lower())
        cells = [_cell(g.values(m)) for m in metrics]
        cells[0] = "-" if math.isnan(value) else short_number(value, digits)  # digits that tell rows apart
        wall_s = "-" if wall is None else f"{wall:.2f}"
        rows.append([g.name, *cells, relative_to_best(value, ranked[0]), status, wall_s])
    return pd.DataFrame(rows, columns=["run", *metrics, "vs_best", "stop_reason", "wall_s"])


def table(runs: list[Run], sort_by: str = "best_val_loss") -> str:
    """`summary` as text: left-aligned columns two spaces apart."""
    frame = summary(runs, sort_by)
    # pandas right-aligns text cells: pad each to its column's width (+1: pandas adds one space)
    widths = {c: 1 + max(len(c), *frame[c].str.len()) for c in frame.columns}
    formatters = {c: f"{{:<{w}}}".format for c, w in widths.items()}
    text = frame.to_string(index=False, justify="left", formatters=formatters)
    return "\n".join(line.rstrip() for line in text.splitlines())


def paired_comparison(
    runs: list[Run], metric: str = "best_val_loss", maximize: bool = False
) -> list[tuple[Group, Paired]]:
    """Each configuration repeated over seeds against the best one (by mean `metric`), paired by
    seed (src/repeats.py); none when fewer than two configurations have two seeds or more."""
    repeated = [g for g in group(runs) if len(g.values(metric)) > 1]
    if len(repeated) < 2:
        return []
    best, *others = sorted(repeated, key=_sort_key(metric), reverse=maximize)

    def by_seed(g: Group) -> dict[str, float]:
        seeds = ((seed_of(r), finite([r], metric)) for r in g.runs)
        return {seed: values[0] for seed, values in seeds if seed is not None and values}

    return [(g, paired(g.name, best.name, metric, by_seed(g), by_seed(best))) for g in others]


def paired_frame(comparisons: list[tuple[Group, Paired]]) -> pd.DataFrame:
    """The comparisons as a table (paired.csv): differences in % of the best's mean, full precision."""
    import pandas as pd

    rows = [
        [p.name, p.best, p.metric, p.n, 100 * p.relative, 100 * p.low, 100 * p.high, p.p, p.verdict()]
        for _, p in comparisons
    ]
    columns = ["configuration", "best", "metric", "n", "diff_pct", "ci_low_pct", "ci_high_pct", "p_value"]
    return pd.DataFrame(rows, columns=[*columns, "verdict"])


def paired_lines(comparisons: list[tuple[Group, Paired]]) -> list[str]:
    """The verdicts under a heading, for the terminal; nothing without comparisons."""
    if not comparisons:
        return []
    metric = comparisons[0][1].metric
    head = f"paired by seed: mean difference of {metric} to the best, 95% interval, paired t-test"
    return [head, *(f"  {p.verdict()}" for _, p in comparisons)]


def overlay(
    client: MlflowClient,
    runs: list[Run],
    path: Path,
    metric: str = "val_loss",
    sort_by: str = "best_val_loss",
) -> Path:
    import matplotlib.pyplot as plt

    fig = overlay_figure(client, runs, metric, sort_by)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _curves(client: MlflowClient, runs: list[Run], metric: str) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for m in client.get_metric_history(run.info.run_id, metric):
            if math.isfinite(m.value):
                by_step.setdefault(m.step, []).append(m.value)
    return dict(sorted(by_step.items()))


def overlay_figure(
    client: MlflowClient, runs: list[Run], metric: str = "val_loss", sort_by: str = "best_val_loss"
) -> Figure:
    """One line per run, or per group of repeats its mean with a 95% t-band (best first), against
    epoch. Where the values span more than a decade the axis is logarithmic, and a group's line and
    band are those of log10 of the values (the geometric mean), so a band never crosses zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = sorted(group(runs), key=_sort_key(sort_by))
    curves = [_curves(client, g.runs, metric) for g in groups]
    values = [v for c in curves for vs in c.values() for v in vs]
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 10
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors  # type: ignore[attr-defined]
    repeated = any(len(g.runs) > 1 for g in groups)
    with plt.style.context("default"):  # whatever style another library left behind
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (g, curve) in enumerate(zip(groups, curves, strict=True)):
            if not curve:
                continue
            geometric = log and len(g.runs) > 1
            scale = (lambda v: math.log10(v)) if geometric else (lambda v: v)
            stats = [interval([scale(v) for v in vs]) for vs in curve.values()]
            back = (lambda v: 10**v) if geometric else (lambda v: v)
            mean = [back(m) for m, _, _ in stats]
            color = colors[i % len(colors)]
            label = g.name if len(g.runs) == 1 else f"{g.name} (n={len(g.runs)})"
            ax.plot(list(curve), mean, color=color, label=label if i < MAX_LEGEND else None, lw=1.4)
            if len(g.runs) > 1:
                lo = [back(m if math.isnan(lo) else lo) for m, lo, _ in stats]
                hi = [back(m if math.isnan(hi) else hi) for m, _, hi in stats]
                ax.fill_between(list(curve), lo, hi, color=color, alpha=0.2, linewidth=0)
        if log:
            ax.set_yscale("log")
        band = f" ({'geometric ' if log else ''}mean, 95% band over seeds)" if repeated else ""
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} by epoch{band}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 2.5, 7.5
        ax.grid(True, which="major", alpha=0.3)
        if len(groups) > MAX_LEGEND:
            ax.plot([], [], " ", label=f"+ {len(groups) - MAX_LEGEND} more (see the table)")
        # Outside the axes, right of them: savefig(bbox_inches="tight") widens the image to fit it.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    return fig


def config_diff(client: MlflowClient, run_a: str, run_b: str) -> list[tuple[str, str, str]]:
    """(key, value in A, value in B) for each key of the runs' resolved configs that differs."""
    from omegaconf import OmegaConf

    configs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run_id in enumerate((run_a, run_b)):
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, f"{tmp}/{i}")
            cfg = OmegaConf.load(path)
            assert isinstance(cfg, DictConfig)
            configs.append(flatten(cfg))
    a, b = configs
    return [(k, a.get(k, "-"), b.get(k, "-")) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _parser() -> argparse.ArgumentParser:
    description = " ".join(__doc__.split("\n\n")[0].split())  # the docstring's first paragraph, whole
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=description)
    parser.add_argument("--experiment", help="MLflow experiment name (default: any)")
    parser.add_argument("--parent", help="a sweep's parent run id (default: the latest sweep)")
    parser.add_argument("--all", action="store_true", help="every run of the experiment, not one sweep")
    parser.add_argument(
        "--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    )
    parser.add_argument("--metric", default="val_loss", help="the per-epoch metric to overlay")
    parser.add_argument("--sort", default="best_val_loss", help="the run-level metric to sort by")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="where to write the PNG")
    parser.add_argument("--diff", nargs=2, metavar=("RUN_A", "RUN_B"), help="config keys that differ")
    return parser


def _print_diff(client: MlflowClient, runs: list[str], parser: argparse.ArgumentParser) -> None:
    from mlflow.exceptions import MlflowException

    try:
        differences = config_diff(client, *runs)
    except (MlflowException, OSError) as exc:
        parser.exit(2, f"error: --diff {' '.join(runs)}: {str(exc).splitlines()[0]}\n")
    for key, a, b in differences:
        print(f"{key}: {a} -> {b}")
    if not differences:
        print("the two runs have the same config")


def _chosen(
    client: MlflowClient, args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[list[Run], Run | None, str]:
    """The runs the arguments name, their sweep's parent run (None with --all), their experiment id."""
    from mlflow.exceptions import MlflowException

    experiments = list(client.search_experiments())
    if args.experiment is not None:
        experiments = [e for e in experiments if e.name == args.experiment]
        if not experiments:
            names = ", ".join(e.name for e in client.search_experiments())
            parser.exit(2, f"error: no experiment '{args.experiment}'; available: {names}\n")
    ids = [e.experiment_id for e in experiments]
    if args.all and args.experiment is None:
        parser.exit(2, "error: --all needs --experiment NAME\n")
    parent = None
    if not args.all:
        try:
            parent = client.get_run(args.parent) if args.parent else latest_parent(client, ids)
        except MlflowException as exc:
            parser.exit(2, f"error: --parent {args.parent}: {str(exc).splitlines()[0]}\n")
    if parent is not None:
        return sweep_runs(client, parent.info.run_id), parent, parent.info.experiment_id
    return (experiment_runs(client, ids[0]) if ids else []), None, ids[0] if ids else ""


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(args.uri)
    client = MlflowClient(uri)
    if args.diff:
        _print_diff(client, args.diff, parser)
        return
    runs, parent, experiment_id = _chosen(client, args, parser)
    if not runs and parent is not None:
        print(no_jobs(parent))
        older = None if args.parent else latest_parent_with_runs(client, [experiment_id])
        if older is None:
            return
        print(f"the latest sweep with runs: {older.info.run_id} ({older.info.run_name})")
        runs, parent = sweep_runs(client, older.info.run_id), older
    if not runs:
        where = f"sweep {parent.info.run_id}" if parent else f"experiment '{args.experiment}'"
        parser.exit(1, f"error: no runs in {where}\n")
    if parent is not None:
        experiment = client.get_experiment(experiment_id).name
        print(f"sweep {parent.info.run_id} ({parent.info.run_name}) in experiment '{experiment}'")
    print(table(runs, args.sort))
    for line in paired_lines(paired_comparison(runs, args.sort)):
        print(line)
    print(f"wrote {overlay(client, runs, args.out, args.metric, args.sort)}")
    print(f"MLflow UI: {ui_hint(uri, experiment_id)}")


if __name__ == "__main__":
    main()
