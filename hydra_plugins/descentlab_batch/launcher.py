"""`hydra/launcher=batched`: Hydra's basic launcher, with the jobs trained as one batch.

Hydra hands a launcher every job of a sweep (or of a sweeper's batch) at once. This one composes
each job's config as the basic launcher does, and builds the runs of the jobs that pick the same
config groups (optimizer, schedule, model, data: they differ only in values), then groups those that
can share a batch (src/batch.py: the same data shape and batch size; no resume=<run>).
For each group it opens each job (run dir, saved config, `on_job_start`, its MLflow run), trains all
of them in one stacked computation (src/loop/batched.py), then closes each in its own Hydra context
(result, artifacts, summary, `on_job_end`) and returns one JobReturn per job, as `run_job` would. A
job in a group of one runs alone, with Hydra's own `run_job`. Each job snapshots in its own run dir
as a single run does; `resume=auto` continues each from its own. Our Optuna sweeper
(hydra_plugins/descentlab_sweeper) hands it a trial's further seeds (`hydra.sweeper.repeats`) at
once, and with `hydra.launcher.trials_together=true` `hydra.sweeper.n_jobs` trials at once; each job
reports to, and is pruned by, its own trial.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple, cast

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _flush_loggers,
    _save_config,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)


class Job(NamedTuple):
    """A job's composed config and the JobReturn `run_job` would give it. (A NamedTuple: Hydra's
    plugin scan runs this module outside sys.modules, where @dataclass cannot resolve it.)"""

    config: DictConfig
    task_cfg: DictConfig  # the config without `hydra`, as the task gets it
    hydra_cfg: DictConfig
    hydra_view: DictConfig  # what `HydraConfig.instance().set_config(config)` makes (a read-only copy)
    ret: JobReturn
    output_dir: str
    chdir: bool


class BatchedLauncher(Launcher):
    runs_in_this_process = True  # so the Optuna sweeper runs no jobs in threads (they share a cwd)
    composes_every_job_first = True  # so the default sweeper need not compose them to check them

    def __init__(self, trials_together: bool = False, **params: Any) -> None:
        # The Optuna sweeper asks n_jobs trials at once and launches them in one call (opt-in:
        # measured slower than one trial at a time, docs/batched.md#optuna-trials).
        self.trains_trials_together = trials_together
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        if len(job_overrides) == 1:  # nothing to share a batch with (an Optuna trial, a one-job sweep)
            return [self.run_alone(self.job_config(job_overrides[0], initial_job_idx))]
        jobs = [self.prepared(config) for config in self.job_configs(job_overrides, initial_job_idx)]
        # Only jobs that pick the same config groups (the same method, schedule, model and data) and
        # differ in values share a batch: each row then does the same work, so its even share of the
        # batch's seconds is its own cost, and a comparison of methods times each method alone.
        alike: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for i, job in enumerate(jobs):
            choices = job.config.hydra.runtime.choices
            key = tuple(sorted((k, str(v)) for k, v in choices.items() if not k.startswith("hydra/")))
            alike.setdefault(key, []).append(i)
        if all(len(members) == 1 for members in alike.values()):
            log.info("the jobs run one at a time: no two pick the same config groups")
        returns: dict[int, JobReturn] = {}
        for members in alike.values():
            returns |= self.launch_alike(jobs, members, initial_job_idx)
        return [returns[i] for i in range(len(jobs))]

    def launch_alike(self, jobs: Sequence[Job], members: list[int], first: int) -> dict[int, JobReturn]:
        """Jobs `members` (they pick the same config groups): those that can share a batch train as
        one, the others alone. Their JobReturns by job index."""
        from src import batch

        def numbers(indices: Sequence[int]) -> str:
            return ", ".join(f"#{first + i}" for i in indices)

        rows, reason = self.built([jobs[i] for i in members]) if len(members) > 1 else ([], None)
        if reason is not None:
            log.info("%s run one at a time: %s", numbers(members), reason)
        groups = batch.groups(rows) if rows else [[k] for k in range(len(members))]
        returns: dict[int, JobReturn] = {}
        for group in groups:
            indices = [members[k] for k in group]
            if len(group) == 1:
                returns[indices[0]] = self.run_alone(jobs[indices[0]].config)
                continue
            log.info("%d jobs train as one batch: %s", len(group), numbers(indices))
            ran = self.run_batch([jobs[i] for i in indices], [rows[k] for k in group])
            returns.update(zip(indices, ran, strict=True))
        return returns

    def job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return config

    def job_configs(self, job_overrides: Sequence[Sequence[str]], first_idx: int) -> list[DictConfig]:
        """Every job's config. Hydra composes each job from scratch (≈ 0.2 s a job); a job whose
        overrides differ from the first job's only in plain values (seed=3, optimizer.lr=0.1: no
        config group, no hydra key, no + or ~) is the first job's config with those values set by
        Hydra's own `_apply_overrides_to_config`, and its task overrides and override_dirname
        written as Hydra writes them."""
        parser = OverridesParser.create()
        first = self.job_config(job_overrides[0], first_idx)
        base = parser.parse_overrides(list(job_overrides[0]))
        configs = [first]
        for idx, overrides in enumerate(job_overrides[1:], start=first_idx + 1):
            parsed = parser.parse_overrides(list(overrides))
            patched = self.patched(first, base, parsed, idx)
            configs.append(patched if patched is not None else self.job_config(overrides, idx))
        return configs

    @staticmethod
    def patched(
        first: DictConfig, base: list[Override], parsed: list[Override], idx: int
    ) -> DictConfig | None:
        """The first job's config with this job's differing values, or None where that would not be
        what Hydra composes."""
        if [o.key_or_group for o in parsed] != [o.key_or_group for o in base]:
            return None
        changed = [o for o, b in zip(parsed, base, strict=True) if o.input_line != b.input_line]
        choices = first.hydra.runtime.choices
        for o in parsed:
            if o.is_hydra_override() or o.type != OverrideType.CHANGE or o.package is not None:
                return None
        if any(o.key_or_group in choices or o.is_sweep_override() for o in changed):
            return None
        config = copy.deepcopy(first)
        ConfigLoaderImpl._apply_overrides_to_config(changed, config)
        naming = config.hydra.job.config.override_dirname
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.task = [o.input_line for o in parsed]
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=parsed,
                kv_sep=naming.kv_sep,
                item_sep=naming.item_sep,
                exclude_keys=naming.exclude_keys,
            )
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return config

    def run_alone(self, config: DictConfig) -> JobReturn:
        assert self.config is not None and self.hydra_context is not None and self.task_function
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def prepared(self, config: DictConfig) -> Job:
        """What `run_job` sets up before the task: the run dir in the config, the JobReturn."""
        HydraConfig.instance().set_config(config)
        output_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        HydraConfig.instance().set_config(config)
        hydra_view = cast(DictConfig, HydraConfig.instance().cfg)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        hydra_cfg = cast(DictConfig, copy.deepcopy(HydraConfig.instance().cfg))
        ret = JobReturn(cfg=task_cfg, hydra_cfg=hydra_cfg)
        ret.overrides = list(config.hydra.overrides.task)
        Path(output_dir).mkdir(parents=True, exist_ok=True)  # its log file is written from the start
        chdir = bool(config.hydra.job.chdir)
        ret.working_dir = output_dir if chdir else os.getcwd()
        return Job(config, task_cfg, hydra_cfg, hydra_view, ret, output_dir, chdir)

    def in_job(self, job: Job) -> ExitStack:
        """Job `job`'s context, as `run_job` gives its task: its Hydra config, working dir, log file
        and `hydra.job.env_set`; left, the launcher's own again."""
        stack = ExitStack()
        previous, cwd = HydraConfig.instance().cfg, os.getcwd()
        HydraConfig.instance().cfg = cast(Any, job.hydra_view)  # set_config's copy, made in `prepared`
        stack.callback(os.chdir, cwd)
        stack.callback(lambda: setattr(HydraConfig.instance(), "cfg", previous))
        stack.callback(_flush_loggers)
        if job.chdir:
            os.chdir(job.output_dir)
        configure_log(job.config.hydra.job_logging, job.config.hydra.verbose)
        stack.enter_context(env_override(job.config.hydra.job.env_set))
        return stack

    def built(self, jobs: Sequence[Job]) -> tuple[list[Any], str | None]:
        """Each job's run, built in its context; why none can share a batch (None: some may)."""
        from src import batch
        from src.errors import ConfigError

        rows = []
        for job in jobs:
            with self.in_job(job):
                if reason := batch.config_problem(job.task_cfg):
                    return [], reason
                try:
                    rows.append(batch.built(job.task_cfg))
                except ConfigError as exc:  # reported by its own job, run alone
                    return [], f"a job's config is refused ({exc})"
        return rows, None

    def start(self, job: Job) -> None:
        """`run_job`'s steps before the task: the run dir, the saved config, on_job_start."""
        assert self.hydra_context is not None and self.task_function is not None
        config = job.config
        if config.hydra.output_subdir is not None:
            hydra_output = Path(config.hydra.runtime.output_dir) / str(config.hydra.output_subdir)
            _save_config(job.task_cfg, "config.yaml", hydra_output)
            _save_config(job.hydra_cfg, "hydra.yaml", hydra_output)
            _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
        self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)

    def end(self, job: Job, value: Any, failed: bool) -> JobReturn:
        """`run_job`'s steps after the task: the JobReturn, on_job_end."""
        assert self.hydra_context is not None
        job.ret.return_value = value
        job.ret.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        job.ret.task_name = JobRuntime.instance().get("name")
        self.hydra_context.callbacks.on_job_end(config=job.config, job_return=job.ret)
        return job.ret

    def run_batch(self, jobs: Sequence[Job], rows: Sequence[Any]) -> list[JobReturn]:
        from src import batch

        for job, row in zip(jobs, rows, strict=True):
            with self.in_job(job):
                self.start(job)
                batch.open_row(row)
        try:
            batch.ready(rows)
            results = batch.train_rows(rows)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):  # a Stopped: say how to go on
                assert self.config is not None
                error.hint = batch.resume_hint(Path(str(self.config.hydra.sweep.dir)).absolute())  # type: ignore[attr-defined]
            for job, row in zip(jobs, rows, strict=True):
                with self.in_job(job):
                    batch.abandon([row], error)
            raise
        reported: list[Any] = []
        for job, row, result in zip(jobs, rows, results, strict=True):
            with self.in_job(job):  # sent without waiting: MLflow writes while the next row reports
                try:
                    reported.append(batch.report_row(row, result))
                except Exception as exc:
                    reported.append(exc)
        returns = []
        for job, row, result, estimates in zip(jobs, rows, results, reported, strict=True):
            with self.in_job(job):
                try:
                    if isinstance(estimates, Exception):
                        batch.abandon([row], estimates)
                        raise estimates
                    returns.append(self.end(job, batch.close_row(row, result, estimates), failed=False))
                except Exception as exc:
                    returns.append(self.end(job, exc, failed=True))
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns
