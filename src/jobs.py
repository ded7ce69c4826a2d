"""Hydra's job plumbing, in one place: what a --multirun passes its jobs (through `hydra.job.env_set`,
whatever the launcher), and what the current job knows of Hydra (its choices, overrides, directories)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

if TYPE_CHECKING:
    pass

# Passed to a --multirun's jobs through Hydra's `hydra.job.env_set` (see `pass_to_jobs`):
PARENT_RUN_ENV = "DESCENTLAB_PARENT_RUN_ID"  # the run a job's run nests under
SWEPT_ENV = "DESCENTLAB_SWEPT"  # the keys a --multirun varies, comma-separated: they name its runs


ENV_SET = "hydra.job.env_set."


def pass_to_jobs(config: DictConfig, env: dict[str, str]) -> None:
    """`env` for every job of a --multirun, whatever its launcher (a thread, a process, a SLURM
    node): Hydra composes each job's config from the multirun's `hydra.overrides.hydra` and the job's
    own overrides, so a `hydra.job.env_set` override appended there reaches each job's config (and a
    job's own override of the same key, a sweeper's, wins)."""
    for key, value in env.items():
        if "'" in value or "\\" in value:  # run ids and config keys: quoted as they are
            raise ValueError(f"{key}={value!r}: no quotes or backslashes in a value passed to jobs")
    with open_dict(config.hydra.overrides), read_write(config.hydra.overrides):
        config.hydra.overrides.hydra.extend([f"++{ENV_SET}{k}='{v}'" for k, v in env.items()])


def passed_to_jobs(config: DictConfig) -> dict[str, str]:
    """What `pass_to_jobs` gave a --multirun's jobs, read from its config (for a sweeper)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.hydra))
    return {
        o.key_or_group.removeprefix(ENV_SET): str(o.value())
        for o in parsed
        if o.key_or_group.startswith(ENV_SET)
    }


def job_env(key: str) -> str | None:
    """A value the job's `hydra.job.env_set` holds (its multirun's, or its sweeper's), from the
    job's config; None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    value = HydraConfig.get().job.env_set.get(key)
    return None if value is None else str(value)


def launch_dir() -> Path:
    return Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()


def hydra_context() -> tuple[dict[str, str], list[str], Path | None]:
    """The group choices, the command-line overrides and the output dir of the current Hydra job."""
    if not HydraConfig.initialized():
        return {}, [], None
    hydra = HydraConfig.get()
    choices = {g: str(c) for g, c in hydra.runtime.choices.items() if not g.startswith("hydra") and c}
    return choices, list(hydra.overrides.task), Path(hydra.runtime.output_dir)
