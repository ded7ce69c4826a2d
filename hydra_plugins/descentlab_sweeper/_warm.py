"""Warm starts: known points evaluated first (`enqueue`), and a finished study's trials copied in
(`warm_start_from`), each once per study however often it is resumed and by however many workers
(the caller holds the study's budget lock)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from src.sweep import studies

from . import _space

log = logging.getLogger(__name__)

ENQUEUED = "descentlab.enqueued"  # study attr: the points already enqueued
WARM_STARTED = "descentlab.warm_started_from"  # study attr: the source, once its trials are in
COPIED_FROM = "warm_start_from"  # trial attr: `<study>#<number>` of a copied trial


def copied(trial: FrozenTrial) -> bool:
    """A trial copied from another study: it counts for the sampler, not for this sweep's budget."""
    return COPIED_FROM in trial.user_attrs


def enqueue(study: optuna.Study, points: list[dict[str, Any]]) -> None:
    done = list(study.user_attrs.get(ENQUEUED, []))
    new = [point for point in points if point not in done]
    for point in new:
        study.enqueue_trial(point)
    if new:
        study.set_user_attr(ENQUEUED, done + new)
        log.info("enqueued %d point(s) to evaluate first: %s", len(new), new)


def warm_start(
    study: optuna.Study, source: optuna.Study, space: dict[str, BaseDistribution], extendable: bool
) -> None:
    """Copy the source study's COMPLETE trials whose parameters fit this space; say why others do not."""
    if study.user_attrs.get(WARM_STARTED) or source.study_name == study.study_name:
        return  # copied once already (or the source is this study, resumed)
    trials, skipped = [], []
    for trial in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        reason = mismatch(trial, space, extendable)
        if reason is not None:
            skipped.append(f"trial {trial.number}: {reason}")
            continue
        distributions = {k: space.get(k, trial.distributions[k]) for k in trial.params}
        trials.append(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=distributions,
                values=trial.values,
                user_attrs={**trial.user_attrs, COPIED_FROM: f"{source.study_name}#{trial.number}"},
            )
        )
    study.add_trials(trials)
    study.set_user_attr(WARM_STARTED, f"{source.study_name} ({len(trials)} trials)")
    line = f"warm start: copied {len(trials)} complete trial(s) of study {source.study_name}"
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        line += f"; skipped {len(skipped)} whose parameters do not fit this space ({shown})"
    log.info(line)


def mismatch(trial: FrozenTrial, space: dict[str, BaseDistribution], extendable: bool) -> str | None:
    """Why a trial's parameters do not fit this space, or None."""
    missing = [k for k in space if k not in trial.params]
    if missing:
        return f"no value for {', '.join(missing)}"
    extra = [k for k in trial.params if k not in space]
    if extra and not extendable:
        return f"{', '.join(extra)} not in this space"
    for key, dist in space.items():
        if not _space.contains(dist, trial.params[key]):
            return f"{key}={trial.params[key]!r} outside {dist}"
    return None


def load_source(spec: str, storage: str, cwd: str) -> optuna.Study:
    """`<study name>` in this sweep's storage, or `<storage path or URL>[#<study name>]`."""
    location, _, name = spec.rpartition("#") if "#" in spec else (spec, "", "")
    in_same = "://" not in location and not location.endswith((".journal", ".log", ".db"))
    if in_same and not name:
        name, path = location, storage
    else:
        path = studies.resolve(location, cwd, "")  # a location, never null
    if "://" not in path and not Path(path).is_file():
        raise HydraException(f"hydra.sweeper.warm_start_from={spec}: no study storage at {path}")
    source_storage = studies.open_storage(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(source_storage, include_best_trial=False)]
    if not name and len(names) == 1:
        name = names[0]
    if name not in names:
        raise HydraException(
            f"hydra.sweeper.warm_start_from={spec}: no such study; "
            + (f"studies there: {', '.join(names)}" if names else "the storage holds no study")
            + (" (name one as <storage>#<study>)" if len(names) > 1 else "")
        )
    return optuna.load_study(study_name=name, storage=source_storage, sampler=optuna.samplers.RandomSampler())
