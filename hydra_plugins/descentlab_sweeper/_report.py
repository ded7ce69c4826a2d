"""What a sweep leaves behind: a summary line, `optimization_results.yaml` (the official plugin's
file), Optuna's plots, the trials' MLflow runs, and the study handed to the sweep's parent run."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf

from src.sweep import groups, parent, studies
from src.tracking.names import run_name
from src.tracking.store import REPEATS_TAG, child_runs, end_killed, end_run
from src.tracking.uris import tracking_uri

if TYPE_CHECKING:
    from ._plan import Plan

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
LOSS_AXES = ("optimization_history", "intermediate_values")  # plots whose y axis is the objective
MAX_LEGEND = 12  # more trials in a plot's legend would squash the plot itself
PARETO_PLOTS = ("pareto_front",)  # multi-objective: Optuna's Pareto plot (two or three objectives)


def best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial of a single-objective study, if there is one."""
    if len(study.directions) > 1 or not study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
    ):
        return None
    return study.best_trial


def summarize(study: optuna.Study, counts: Counter[str]) -> str:
    finished = sum(counts.values())
    line = (
        f"{finished} finished trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed"
    )
    trial = best(study)
    if trial is not None:
        line += f"; best value {trial.value:.6g} (trial {trial.number}) with {trial.params}"
    elif len(study.directions) > 1:
        line += f"; {len(study.best_trials)} Pareto-optimal trials ({', '.join(names(study))})"
    return line


def names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"value_{i}" for i in range(len(study.directions))]


def opening_lines(study: optuna.Study, storage: str) -> list[str]:
    """hydra-optuna-sweeper's first lines, which scripts read."""
    return [
        f"Study name: {study.study_name}",
        f"Storage: {studies.redact(storage)}",
        f"Sampler: {type(study.sampler).__name__}",
        f"Directions: {[d.name.lower() for d in study.directions]}",
    ]


def upstream_lines(study: optuna.Study) -> list[str]:
    """hydra-optuna-sweeper's closing lines: the best trial, or the Pareto front."""
    if len(study.directions) > 1:
        front = study.best_trials
        return [f"Number of Pareto solutions: {len(front)}"] + [
            f"    Values: {t.values}, Params: {t.params}" for t in front
        ]
    trial = best(study)
    if trial is None:
        return []
    return [f"Best parameters: {trial.params}", f"Best value: {trial.value}"]


def say_full(plan: Plan) -> None:
    """A study that already holds its n_trials: one loud line; the sweep ends with nothing run."""
    assert plan.status is not None
    best = f", {plan.status.best}" if plan.status.best else ""
    log.warning(
        "study %s in %s is full: it holds %d finished trials of n_trials=%d%s, so this command runs "
        "nothing; raise hydra.sweeper.n_trials to extend it, set hydra.sweeper.study_name for a new "
        "study, or hydra.sweeper.storage=null for a fresh study of this command only",
        plan.study_name,
        studies.redact(plan.storage),
        plan.status.finished,
        plan.n_trials,
        best,
    )


def pareto_lines(study: optuna.Study) -> list[str]:
    """The Pareto front, one line per trial, best first by the first objective."""
    if len(study.directions) == 1:
        return []
    front = sorted(study.best_trials, key=lambda t: t.values)
    return [
        f"  Pareto trial {t.number}: "
        + ", ".join(f"{n}={v:.6g}" for n, v in zip(names(study), t.values, strict=True))
        + f" with {t.params}"
        for t in front
    ]


def save_results(study: optuna.Study, storage: str, counts: Counter[str], path: Path) -> None:
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": studies.redact(storage),
        "trials": dict(counts),
    }
    if len(study.directions) > 1:
        results["objectives"] = names(study)
        results["solutions"] = [
            {"params": t.params, "values": t.values, "trial": t.number}
            for t in sorted(study.best_trials, key=lambda t: t.values)
        ]
    elif (trial := best(study)) is not None:
        results.update(best_params=trial.params, best_value=trial.value, best_trial=trial.number)
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), path)


def spans_decades(study: optuna.Study) -> bool:
    """Whether the objective (and what the trials reported) is positive and spans more than a decade."""
    trials = study.get_trials(deepcopy=False)
    values = [t.values[0] for t in trials if len(study.directions) == 1 and t.values]
    values += [v for t in trials for v in t.intermediate_values.values()]
    positive = [v for v in values if v > 0]
    return bool(positive) and len(positive) == len(values) and max(positive) / min(positive) > 10


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's matplotlib plots as PNGs, named by the objective (`best_val_loss`, or its log10
    where it spans decades, so the parallel coordinates and importances see its scale); a plot the
    study cannot draw yet is skipped with a warning."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    chosen: tuple[str, ...] = PARETO_PLOTS if len(study.directions) > 1 else PLOTS
    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        chosen = tuple(n for n in chosen if n != "intermediate_values")  # nothing was reported
    for name in chosen:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings on every call
                axes = plot(study, name)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
            saved.append(folder / f"{name}.png")
        except Exception as error:  # e.g. importances need two complete trials
            log.warning("no %s plot: %s", name, error)
    return saved


def plot(study: optuna.Study, name: str) -> Any:
    """One of Optuna's plots, made readable: the objective by its name, a log axis (or log10 of the
    objective) where it spans decades, every trial in a colour that shows on white, the legend
    where it hides nothing. Optuna's plots set the ggplot style for the whole process: the style is
    restored on return, whoever calls."""
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        return styled_plot(study, name)


def styled_plot(study: optuna.Study, name: str) -> Any:
    import math

    from optuna.visualization import matplotlib as plots

    objective, log_scale = names(study)[0], spans_decades(study)
    draw = getattr(plots, f"plot_{name}")
    if name in ("parallel_coordinate", "param_importances") and log_scale:
        axes = draw(study, target=lambda t: math.log10(t.values[0]), target_name=f"log10 {objective}")
    elif name in PLOTS and name != "intermediate_values":
        axes = draw(study, target_name=objective)
    else:
        axes = draw(study)
    if log_scale and name in LOSS_AXES:  # losses spanning decades
        axes.set_yscale("log")
    if name == "parallel_coordinate":
        visible_colours(axes)
    elif name == "param_importances":
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # beside the bars
    elif name == "intermediate_values":
        axes.set(xlabel="epoch", ylabel="val_loss (reported to the pruner)")
        if len(axes.get_lines()) > MAX_LEGEND:  # a legend of every trial would squash the plot
            axes.get_legend().remove()
    return axes


def visible_colours(axes: Any) -> None:
    """Optuna colours the trials' lines from white-ending Blues: keep the dark 70% of it, so the
    worst trial is still a visible line."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap

    for ax in axes.figure.axes:
        for collection in ax.collections:
            if isinstance(collection, LineCollection) and collection.get_array() is not None:
                blues = collection.get_cmap()
                reverse = blues.name.endswith("_r")
                stops = np.linspace(0.0, 0.7, 256) if reverse else np.linspace(0.3, 1.0, 256)
                collection.set_cmap(ListedColormap(plt.get_cmap(blues.name)(stops)))


class StudyRuns:
    """The trials' MLflow runs under the sweep's parent run, and what the study hands the parent.

    The parent run belongs to src.sweep.parent (its Hydra callback creates the run before the sweep,
    passes its id to the jobs and ends it): the sweeper finds it there and hands it the study's
    name, settings, counts, best trial and files to record. Here: the trials' states, and with
    repeats each trial's own run. Nothing happens without a parent (`tracking=none`, a store the
    callback could not open, another app).
    """

    def __init__(self, config: DictConfig, study_name: str) -> None:
        self.study_name = study_name
        self.run_id = parent.sweep_parent(config)
        if self.run_id is not None:
            self.uri = tracking_uri(config.tracking.get("uri"))
        self.optimizer = str(config.hydra.runtime.choices.get("optimizer", "optimizer"))

    def start(self) -> None:
        if self.run_id is None:
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        parent.record_study_name(self.client, self.run_id, self.study_name)

    def _trial_runs(self, number: int) -> list[Any]:
        """The trial's run (its job's, or with repeats the trial's own), found by the parent's id,
        not the study's name, which may hold any character."""
        assert self.run_id is not None
        return self.client.search_runs(
            [self.client.get_run(self.run_id).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`optuna.trial` = '{number}'",
        )

    def start_trial(self, trial: optuna.Trial, repeats: int) -> str | None:
        """With repeats: the trial's own run (named by its parameters), under which its seeds nest."""
        if self.run_id is None:
            return None
        optimizer = str(trial.params.get("optimizer", self.optimizer))
        tags = {
            "mlflow.parentRunId": self.run_id,
            parent.STUDY_TAG: self.study_name,
            "optuna.trial": str(trial.number),
            REPEATS_TAG: str(repeats),
        }
        experiment = self.client.get_run(self.run_id).info.experiment_id
        name = run_name(optimizer, trial.params, trial.number)
        run = self.client.create_run(experiment, run_name=name, tags=tags)
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        return str(run.info.run_id)

    def end_trial(self, run_id: str | None, completed: bool, objectives: list[str]) -> None:
        """The trial's run gets what its seeds add up to, as a group of repeats does
        (src.sweep.groups.record_group): the trial's params, and n, mean and 95% interval of each
        objective, test_loss, epochs and wall_time over the seeds; and ends."""
        if run_id is None:
            return
        seeds = child_runs(self.client, run_id)
        groups.record_group(self.client, run_id, seeds, groups.summarized(objectives))
        end_run(self.client, run_id, "FINISHED" if completed else "FAILED")

    def link(self, trial: optuna.Trial) -> None:
        """The trial's MLflow run id as its user attribute `mlflow_run_id` (the trial's own run
        with repeats, else its job's run)."""
        if self.run_id is None or "mlflow_run_id" in trial.user_attrs:
            return
        runs = self._trial_runs(trial.number)
        if runs:
            trial.set_user_attr("mlflow_run_id", runs[0].info.run_id)

    def tag_child(self, number: int, state: str, killed: bool = False) -> None:
        """Tag the trial's job run with its final state (and end it if its process was killed)."""
        if self.run_id is None:
            return
        for run in self._trial_runs(number):
            self.client.set_tag(run.info.run_id, "optuna.state", state)
            if killed and run.info.status == "RUNNING":
                why = f"its process died (trial {number} had no heartbeat)"
                end_killed(self.client, run.info.run_id, why)

    def finish(self, study: optuna.Study, storage: str, counts: Counter[str], files: list[Path]) -> None:
        """Hand the finished study to the parent run's owner: its settings, counts, best trial or
        Pareto front, and its files."""
        if self.run_id is None:
            return
        settings = {
            "study_name": study.study_name,
            "sampler": type(study.sampler).__name__,
            "pruner": type(study.pruner).__name__,
            "storage": studies.redact(storage),
            "directions": "/".join(d.name.lower() for d in study.directions),
            "objectives": "/".join(names(study)),
        }
        trial, top = best(study), None
        if trial is not None:
            assert trial.value is not None
            top = parent.BestTrial(
                trial.number, trial.value, trial.params, trial.user_attrs.get("mlflow_run_id")
            )
        parent.record_study(
            self.client,
            self.run_id,
            settings=settings,
            counts={state: counts[state] for state in ("complete", "pruned", "fail")},
            best=top,
            pareto_trials=len(study.best_trials) if len(study.directions) > 1 else None,
            files=files,
        )
