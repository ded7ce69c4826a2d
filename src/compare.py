"""Compare runs from MLflow: a table sorted by best val loss, and the val-loss curves overlaid.

python -m src.compare                          # the latest sweep's runs in experiment descentlab
python -m src.compare --experiment lesson-x    # every run of an experiment
python -m src.compare --parent <run_id>        # the children of one sweep
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from src.tracking import tracking_uri

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

COLUMNS = (
    "run",
    "optimizer",
    "schedule",
    "lr",
    "best_val_loss",
    "test_loss",
    "epochs",
    "stop_reason",
    "wall_s",
    "overrides",  # what tells a sweep's runs apart when the grid is not over optimizer or lr
)


def child_runs(client: MlflowClient, parent_id: str) -> list[Run]:
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_id}'"
    return list(client.search_runs([experiment_id], query, max_results=10_000))


def experiment_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """The experiment's training runs (sweep parents left out)."""
    runs = client.search_runs([experiment_id], max_results=10_000)
    return [run for run in runs if "descentlab.sweep_dir" not in run.data.tags]


def latest_parent(client: MlflowClient, experiment_id: str) -> str | None:
    parents = client.search_runs(
        [experiment_id], "tags.`descentlab.sweep_dir` != ''", order_by=["attributes.start_time DESC"]
    )
    return parents[0].info.run_id if parents else None


def swept(run: Run) -> str:
    """The run's own command-line overrides, less the `+experiment=` that every job of a lesson shares."""
    overrides = run.data.tags.get("overrides", "").split()
    return " ".join(o for o in overrides if not o.startswith("+experiment="))


def _sort_key(run: Run) -> float:
    value = run.data.metrics.get("best_val_loss", math.inf)
    return value if math.isfinite(value) else math.inf


def _number(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.4g}" if key in metrics else "-"


def rows(runs: list[Run]) -> list[dict[str, str]]:
    out = []
    for run in sorted(runs, key=_sort_key):
        metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
        out.append(
            {
                "run": run.info.run_name or run.info.run_id[:8],
                "optimizer": tags.get("choice.optimizer", params.get("optimizer._target_", "-")),
                "schedule": tags.get("choice.schedule", params.get("schedule._target_", "-")),
                "lr": params.get("optimizer.lr", "-"),
                "best_val_loss": _number(metrics, "best_val_loss"),
                "test_loss": _number(metrics, "test_loss"),
                "epochs": str(int(metrics["epochs"])) if "epochs" in metrics else "-",
                "stop_reason": tags.get("stop_reason", run.info.status.lower()),
                "wall_s": f"{metrics['wall_time']:.2f}" if "wall_time" in metrics else "-",
                "overrides": swept(run) or "-",
            }
        )
    return out


def table(runs: list[Run]) -> str:
    body = rows(runs)
    widths = {c: max([len(c)] + [len(r[c]) for r in body]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def overlay(client: MlflowClient, runs: list[Run], path: Path, metric: str = "val_loss") -> Path:
    import matplotlib.pyplot as plt

    fig = overlay_figure(client, runs, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay_figure(client: MlflowClient, runs: list[Run], metric: str = "val_loss") -> Figure:
    """One line per run (best first): the metric's history against epoch, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in sorted(runs, key=_sort_key):
        history = client.get_metric_history(run.info.run_id, metric)
        points = sorted((m.step, m.value) for m in history if m.value > 0)
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=swept(run) or run.info.run_name)
    ax.set(xlabel="epoch", ylabel=metric, yscale="log", title=f"{metric} by epoch")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="descentlab", help="MLflow experiment name")
    parser.add_argument("--parent", help="a sweep's parent run id (default: the latest sweep)")
    parser.add_argument("--all", action="store_true", help="every run of the experiment, not one sweep")
    parser.add_argument(
        "--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    )
    parser.add_argument("--metric", default="val_loss", help="the per-epoch metric to overlay")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="where to write the PNG")
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(args.uri))
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        names = ", ".join(e.name for e in client.search_experiments())
        parser.exit(2, f"error: no experiment '{args.experiment}'; available: {names}\n")
    experiment_id = experiment.experiment_id
    from mlflow.exceptions import MlflowException

    parent = None if args.all else args.parent or latest_parent(client, experiment_id)
    try:
        runs = child_runs(client, parent) if parent else experiment_runs(client, experiment_id)
    except MlflowException as exc:
        parser.exit(2, f"error: --parent {parent}: {str(exc).splitlines()[0]}\n")
    if not runs:
        where = f"sweep {parent}" if parent else f"experiment '{args.experiment}'"
        parser.exit(1, f"error: no runs in {where}\n")
    print(table(runs))
    print(f"wrote {overlay(client, runs, args.out, args.metric)}")


if __name__ == "__main__":
    main()
