"""What a trial ended as: COMPLETE with its value(s), PRUNED, or FAIL with a reason, judged from its
job's return and what the job wrote on the trial; and the line that says so."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import FrozenTrial, TrialState

from src.sweep.objectives import Objectives


def stored(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as the storage holds it now: what its job wrote, maybe from another process."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def judge(
    ret: JobReturn, attrs: Mapping[str, Any], objectives: Objectives
) -> tuple[TrialState, list[float] | None, str | None]:
    """COMPLETE with the returned value(s); PRUNED when the job stopped for the pruner; FAIL with a
    reason when the job raised, said why it failed (`attrs`, the trial's user attributes), or
    returned no finite number per objective."""
    if ret.status != JobStatus.COMPLETED:
        error = ret._return_value  # reading .return_value would re-raise it
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return TrialState.FAIL, None, f"{type(error).__name__}: {first_line}"[:1000]
    if attrs.get("fail_reason"):
        return TrialState.FAIL, None, str(attrs["fail_reason"])
    if attrs.get("stop_reason") == "pruned":
        return TrialState.PRUNED, None, None
    values, reason = objectives.values(ret.return_value)
    if values is None:
        return TrialState.FAIL, None, reason
    return TrialState.COMPLETE, values, None


def describe(
    number: int,
    state: TrialState,
    values: list[float] | None,
    reason: str | None,
    params: Mapping[str, Any],
    names: list[str],
) -> str:
    """`trial 3 COMPLETE: best_val_loss 0.0123; optimizer.lr=0.01` (or why it was pruned or failed)."""
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    detail = {
        TrialState.COMPLETE: ", ".join(f"{n} {v:.4g}" for n, v in zip(names, values or [], strict=False)),
        TrialState.PRUNED: "stopped early by the pruner",
        TrialState.FAIL: str(reason),
    }[state]
    return f"trial {number} {state.name}: {detail}; {shown}"
