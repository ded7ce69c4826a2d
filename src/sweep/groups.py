"""A sweep's repeats as groups in MLflow: one run per configuration, its seeds nested under it.

Runs that differ only in `seed` are one configuration (src.compare.group). When a --multirun's runs
differ in seed, each configuration gets a group run under the sweep's parent, `sgd · 5 seeds`, with
the configuration's params (those its seeds share, less `seed`) and as metrics, columns of the runs
table, n, mean and 95% t-interval of the objective, test_loss, epochs and wall_time
(`best_val_loss_n`, `_mean`, `_ci_low`, `_ci_high`); its seed runs move under it. MLflow's runs table
nests a run under the run its tag `mlflow.parentRunId` names, so moving a run is setting that tag.

The groups are made when the sweep ends, not before: each Hydra job is told only the multirun's
parent (one value for all its jobs, whatever the launcher), and which runs share a configuration is
certain once their resolved params are known. An Optuna trial with repeats is a group from its start
(hydra_plugins/descentlab_sweeper/_repeats.py): its run gets the same record (`record_group`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from src.compare import SUMMARY, Group, group
from src.repeats import Paired, group_metrics, group_params
from src.sweep.objectives import job_results, parse
from src.tracking.store import MAX_PARAM_LENGTH, PROCESS_TAG, REPEATS_TAG, this_process

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

PARENT_TAG = "mlflow.parentRunId"
PAIRED_TAG = "paired"  # the verdict of a group against the sweep's best one
SOURCE_TAGS = ("mlflow.source.", "mlflow.user")  # the runs table's Source and User: its seeds'


def objective(config: DictConfig) -> tuple[str, bool] | None:
    """What a sweep's best is chosen by, and whether it is maximized: a study's objective (our
    Optuna sweeper), else what a job returns by default, its best_val_loss, minimized; None for a
    multi-objective study (a Pareto front, no one best)."""
    sweeper = config.hydra.sweeper
    if "objectives" not in sweeper:
        return "best_val_loss", False
    parsed = parse(sweeper.get("direction"), sweeper.get("objectives"))
    return None if parsed.multi else (job_results(parsed)[0], parsed.directions[0] == "maximize")


def summarized(objectives: Sequence[str]) -> list[str]:
    """The metrics a group records: the objectives, then SUMMARY's, val_loss_ratio (an interval the
    runs table shows without an exponent) and wall_time."""
    return list(dict.fromkeys([*objectives, *SUMMARY, "val_loss_ratio", "wall_time"]))


def record_group(client: MlflowClient, run_id: str, seeds: Sequence[Run], metrics: Sequence[str]) -> None:
    """A group's run gets its configuration's params and n, mean and 95% interval of `metrics`."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    existing = client.get_run(run_id).data.params
    params = [Param(k, v[:MAX_PARAM_LENGTH]) for k, v in group_params(seeds).items() if k not in existing]
    values = [Metric(k, v, now, 0) for k, v in group_metrics(seeds, metrics).items()]
    for i in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, metrics=values if i == 0 else [], params=params[i : i + 100])


def make_groups(
    client: MlflowClient, parent_id: str, children: Sequence[Run], metrics: Sequence[str]
) -> bool:
    """When the sweep's runs (its direct children, not an Optuna trial's own run) differ in seed: a
    group run per configuration, its seed runs moved under it. Whether it made groups."""
    runs = [r for r in children if REPEATS_TAG not in r.data.tags]
    groups = group(runs)
    if len(runs) < len(children) or all(len(g.runs) == 1 for g in groups):
        return False
    for g in groups:
        make_group(client, parent_id, g, metrics)
    return True


def make_group(client: MlflowClient, parent_id: str, seeds: Group, metrics: Sequence[str]) -> str:
    n = len(seeds.runs)
    tags = {PARENT_TAG: parent_id, REPEATS_TAG: str(n), PROCESS_TAG: this_process()}
    tags |= {k: v for k, v in seeds.runs[0].data.tags.items() if k.startswith(SOURCE_TAGS)}  # its columns
    run = client.create_run(
        seeds.runs[0].info.experiment_id,
        start_time=min(r.info.start_time for r in seeds.runs),
        run_name=f"{seeds.name} · {n} seed{'s' if n > 1 else ''}",
        tags=tags,
    )
    run_id = str(run.info.run_id)
    record_group(client, run_id, seeds.runs, metrics)
    for seed in seeds.runs:
        client.set_tag(seed.info.run_id, PARENT_TAG, run_id)
    statuses = {r.info.status for r in seeds.runs}
    status = "FINISHED" if statuses == {"FINISHED"} else "KILLED" if "KILLED" in statuses else "FAILED"
    ends = [r.info.end_time for r in seeds.runs if r.info.end_time]
    client.set_terminated(run_id, status, end_time=max(ends) if ends else None)
    return run_id


def group_run(seeds: Group, parent_id: str) -> str | None:
    """The run a group's seeds nest under (a group run, an Optuna trial's run); None if the parent."""
    found = {r.data.tags.get(PARENT_TAG) for r in seeds.runs}
    return found.pop() if len(found) == 1 and parent_id not in found else None


def record_paired(
    client: MlflowClient, parent_id: str, runs: Sequence[Run], comparisons: Sequence[tuple[Group, Paired]]
) -> None:
    """Each group run says how it compares with the best one: tag `paired` (the verdict) and metrics
    `vs_best_pct`, `vs_best_ci_low_pct`, `vs_best_ci_high_pct`, `vs_best_p`."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    if not comparisons:
        return
    first = comparisons[0][1]
    best = next(g for g in group(runs) if g.name == first.best)
    if best_id := group_run(best, parent_id):
        client.set_tag(best_id, PAIRED_TAG, f"the best mean {first.metric}: the others are compared with it")
    for seeds, result in comparisons:
        if (run_id := group_run(seeds, parent_id)) is None:
            continue
        numbers = {
            "vs_best_pct": 100 * result.relative,
            "vs_best_ci_low_pct": 100 * result.low,
            "vs_best_ci_high_pct": 100 * result.high,
            "vs_best_p": result.p,
        }
        metrics = [Metric(k, v, now, 0) for k, v in numbers.items() if v == v]  # not nan
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(PAIRED_TAG, result.verdict())])
