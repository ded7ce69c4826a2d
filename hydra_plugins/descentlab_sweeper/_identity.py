"""What a study is for: its search space, objectives and directions, kept as the study's user
attributes, so that a command reusing the name for another sweep stops before anything runs
instead of feeding the old study (or finding it full and doing nothing without a word)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from src.sweep import studies

from . import _warm

KEYS = ("search_space", "objectives", "directions")  # the study user attributes that name a sweep


def written(dist: BaseDistribution) -> str:
    """A distribution as Hydra's sweep syntax writes it, e.g. `tag(log, interval(0.0001, 0.1))`."""
    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(map(repr, dist.choices))})"
    assert isinstance(dist, FloatDistribution | IntDistribution)
    integer = isinstance(dist, IntDistribution)
    if dist.step is not None and not (integer and dist.step == 1):
        return f"range({dist.low}, {dist.high}, step={dist.step})"
    text = f"interval({dist.low}, {dist.high})"
    text = f"int({text})" if integer else text
    return f"tag(log, {text})" if dist.log else text


def identity(
    space: dict[str, BaseDistribution],
    custom_search_space: str | None,
    names: list[str],
    directions: list[str],
) -> dict[str, Any]:
    """The user attributes a study made by this sweep carries."""
    described = {key: written(dist) for key, dist in space.items()}
    if custom_search_space:
        described["custom_search_space"] = custom_search_space
    return {"search_space": described, "objectives": names, "directions": directions}


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs, one phrase each: `optimizer.lr was interval(0.0001, 0.1), now interval(...)`."""
    out = []
    # A study another worker has just made may not carry its space yet: nothing to compare then.
    was: dict[str, str] = stored.get("search_space", {})
    now: dict[str, str] = wanted["search_space"] if "search_space" in stored else {}
    for key in [*was, *(k for k in now if k not in was)]:
        if key not in now:
            out.append(f"{key}={was[key]} is not in this command")
        elif key not in was:
            out.append(f"{key}={now[key]} is new")
        elif was[key] != now[key]:
            out.append(f"{key} was {was[key]}, now {now[key]}")
    for key in ("objectives", "directions"):
        if key in stored and stored[key] != wanted[key]:
            out.append(f"{key} were {', '.join(stored[key])}, now {', '.join(wanted[key])}")
    return out


@dataclass(frozen=True)
class Status:
    """An existing study, seen before the sweep starts."""

    finished: int  # COMPLETE, PRUNED or FAIL, copied warm-start trials left out
    running: int
    best: str  # e.g. "best value 0.0123 (trial 7)", or ""

    def full(self, n_trials: int) -> bool:
        return self.running == 0 and self.finished >= n_trials


def existing(storage: str, study_name: str) -> optuna.Study | None:
    """The study of that name in that storage, if both exist (nothing is created)."""
    if "://" not in storage and not Path(storage).is_file():
        return None
    backend = studies.open_storage(storage)
    if study_name not in optuna.get_all_study_names(backend):
        return None
    return optuna.load_study(study_name=study_name, storage=backend, sampler=optuna.samplers.RandomSampler())


def check(storage: str, study_name: str, wanted: dict[str, Any]) -> Status | None:
    """Stop, in one line, a command that would reuse a study made for another sweep; else the
    study's state (None: no such study yet, it will be made)."""
    study = existing(storage, study_name)
    if study is None:
        return None
    stored = dict(study.user_attrs)
    stored.setdefault("directions", [d.name.lower() for d in study.directions])  # Optuna keeps these
    diffs = differences(stored, wanted)
    if diffs:
        raise HydraException(
            f"study {study_name} in {studies.redact(storage)} belongs to another sweep: {'; '.join(diffs)}. "
            "A study keeps its search space, objectives and directions: set hydra.sweeper.study_name=<new "
            "name> for a new study, or hydra.sweeper.storage=null for a fresh study of this command only"
        )
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials if not _warm.copied(t)]
    finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for s in states)
    best = ""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(study.directions) == 1 and complete:
        top = study.best_trial
        best = f"best value {top.value:.6g} at trial {top.number}" if math.isfinite(top.value or 0) else ""
    elif complete:
        best = f"{len(study.best_trials)} Pareto-optimal trials"
    return Status(finished, states.count(TrialState.RUNNING), best)


def record(study: optuna.Study, wanted: dict[str, Any]) -> None:
    """A new study (or one made before studies said what they are for) records its identity."""
    for key in KEYS:
        if key not in study.user_attrs:
            study.set_user_attr(key, wanted[key])
