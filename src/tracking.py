"""Everything MLflow: one run per training job, one parent run per --multirun.

A tracker is a loop callback and a context manager. `MlflowTracker` talks to MLflow through an
explicit `MlflowClient` (no fluent active-run stack, so jobs sharing a process never collide) and
buffers per-epoch metrics into `log_batch` calls, since a synchronous `log_metric` costs ≈6 ms.
Whatever happens, the run ends FINISHED, FAILED (error tagged) or KILLED; it is never left RUNNING.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src import mlflow_model, signals
from src.data import Data
from src.errors import ConfigError
from src.loop import EpochMetrics, FitResult
from src.mlflow_sidecar import Sidecar, SidecarError
from src.mlflow_store import PROCESS_TAG, end_run, open_experiment, quiet_migrations, this_process

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from src.inference import Estimates

DEFAULT_URI = "sqlite:///mlflow.db"
# Passed to a --multirun's jobs through Hydra's `hydra.job.env_set` (see `pass_to_jobs`):
PARENT_RUN_ENV = "DESCENTLAB_PARENT_RUN_ID"  # the run a job's run nests under
SWEPT_ENV = "DESCENTLAB_SWEPT"  # the keys a --multirun varies, comma-separated: they name its runs
SWEEP_TAG = "descentlab.sweep_dir"  # on a sweep's parent run
REPEATS_TAG = "descentlab.repeats"  # on an Optuna trial's run whose seeds are its children
SQLITE_WRITERS = 6  # concurrent writers one sqlite store was tested with (tests/test_parallel.py)
MODEL_ARTIFACT = "model/model.pt"


log = logging.getLogger(__name__)
quiet_migrations()  # for the stores this process opens itself (a sweep's parent run, the plugin)


def tracking_uri(uri: str | None = None) -> str:
    """The store: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db. A relative sqlite path
    means the directory the command was launched from, also when Hydra runs the job elsewhere."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).is_absolute():
        uri = f"sqlite:///{launch_dir() / path}"
    return uri


STORE_FORMS = (
    "sqlite:///path, http(s)://host:port (an mlflow server), postgresql://user@host/db, "
    "mysql://..., or file:///path with MLFLOW_ALLOW_FILE_STORE=true"
)
PROBE_TIMEOUT = 5.0  # seconds to wait for a tracking server's /health before giving up


def checked_store(uri: str, given: str | None) -> str:
    """`uri` if MLflow can use it, else a ConfigError naming tracking.uri (or $MLFLOW_TRACKING_URI,
    where it came from) and the accepted forms. A server is asked for /health first, so that an
    unreachable one fails in seconds, not after MLflow's minutes of retries."""
    key = "tracking.uri" if given else "tracking.uri (from $MLFLOW_TRACKING_URI)"
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise ConfigError(
            f"{key}={uri}: MLflow's file store needs MLFLOW_ALLOW_FILE_STORE=true; or use sqlite:///path"
        )
    well_formed = {
        "sqlite": uri.startswith("sqlite:///"),
        "http": bool(parts.hostname),
        "https": bool(parts.hostname),
        "postgresql": bool(parts.hostname or parts.query),
        "mysql": bool(parts.hostname),
        "mssql": bool(parts.hostname),
        "file": True,  # allowed above
    }
    if not well_formed.get(scheme, False):
        raise ConfigError(f"{key}={uri} is not a tracking store MLflow can use; use {STORE_FORMS}")
    if scheme in ("http", "https"):
        health = f"{uri.rstrip('/')}/health"
        try:
            urllib.request.urlopen(health, timeout=PROBE_TIMEOUT).close()
        except urllib.error.HTTPError:
            pass  # something answers (a proxy's login page, say): let MLflow say what it thinks
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"{key}={uri}: no tracking server answered GET {health} within {PROBE_TIMEOUT:g} s "
                f"({reason}); start one (mlflow server) or use another store"
            ) from None
    return uri


def launch_dir() -> Path:
    return Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()


UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of a run, or of an experiment's runs table. `workflowType=machine_learning`
    opens the runs table rather than MLflow 3's GenAI overview (which a browser otherwise remembers)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def compare_link(uri: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's compare page of these runs (their params, metrics and parallel coordinates)."""
    from urllib.parse import quote

    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI
    runs, experiments = quote(json.dumps(list(run_ids))), quote(json.dumps([experiment_id]))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&workflowType=machine_learning"


def ui_hint(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The link, and for a local store the `mlflow ui` command that serves it."""
    link = ui_link(uri, experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        return link
    return f"mlflow ui --backend-store-uri {uri}  then open  {link}"


def client_and_experiment(uri: str | None, experiment: str) -> tuple[MlflowClient, str]:
    """The store's client and the experiment's id; the runs of dead processes found there are ended."""
    return open_experiment(checked_store(tracking_uri(uri), uri), experiment)  # checked: before MLflow


def child_runs(client: MlflowClient, parent_id: str) -> list[Run]:
    """The runs nested directly under `parent_id` (tag mlflow.parentRunId)."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_id}'"
    return list(client.search_runs([experiment_id], query, max_results=10_000))


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


def uses_mlflow(config: DictConfig) -> bool:
    """Whether the config's `tracking` is an MlflowTracker (or a subclass), not `tracking=none`."""
    from hydra.utils import get_class

    node = config.get("tracking")
    return node is not None and "_target_" in node and issubclass(get_class(node._target_), MlflowTracker)


class NullTracker:
    """`tracking=none`: records nothing."""

    run_id: str | None = None
    where: str | None = None

    def __init__(self, cfg: DictConfig, **ignored: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def log_result(self, result: FitResult, model: torch.nn.Module) -> None:
        pass

    def log_estimates(self, estimates: Estimates) -> None:
        pass

    def log_dataset(self, data: Data) -> None:
        pass


# Settings about recording and running, not about what is computed; `config.yaml` keeps them all.
NOT_PARAMS = (
    "resume",
    "warm_start",
    "tracking",
    "trainer.progress",
    "trainer.checkpoint_every",
    "trainer.device",
    "trainer.grad_variance",  # whether a metric is logged
    "trainer.divergence_threshold",  # a guard that names a failed run (stop_reason), not a setting
)
GROUPS = ("optimizer", "schedule", "data", "model")  # logged by their choice, not their `_target_`


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys, e.g. {'optimizer.lr': '0.1'}; Hydra's `_x_` flags dropped."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" or not (key.startswith("_") and key.endswith("_")):
                    walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


def params(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    """What a reader compares runs by: each group's choice (`optimizer: nesterov`) and the values the
    run was computed with; no `_target_`, nothing null, no bookkeeping (NOT_PARAMS)."""
    out = {group: choice(cfg, choices, group) for group in GROUPS if group in cfg}
    for key, value in flatten(cfg).items():
        if key == "trainer.batch_size" and value == "None":
            value = "full"  # the whole training split: a value to compare by, as in run names
        dropped = key.endswith("._target_") or value == "None"
        if not dropped and not any(key == k or key.startswith(f"{k}.") for k in NOT_PARAMS):
            out[key] = value
    return out


def source_tags() -> dict[str, str]:
    """MLflow's own Source, User and Description fields: the entry point, the user, the command line."""
    cli = sys.argv[0].endswith(str(Path("src", "train.py")))  # `python -m src.train`, not a notebook
    command = " ".join(
        shlex.quote(a) for a in (["python", "-m", "src.train"] if cli else sys.argv[:1]) + sys.argv[1:]
    )
    tags = {
        "mlflow.source.name": "src.train" if cli else sys.argv[0],
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),
        "mlflow.note.content": command,
    }
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


def git_commit() -> str | None:
    try:
        repo = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def hydra_context() -> tuple[dict[str, str], list[str], Path | None]:
    """The group choices, the command-line overrides and the output dir of the current Hydra job."""
    if not HydraConfig.initialized():
        return {}, [], None
    hydra = HydraConfig.get()
    choices = {g: str(c) for g, c in hydra.runtime.choices.items() if not g.startswith("hydra") and c}
    return choices, list(hydra.overrides.task), Path(hydra.runtime.output_dir)


def choice(cfg: DictConfig, choices: dict[str, str], group: str) -> str:
    """The group's choice (`nesterov`); outside Hydra, its target's name (`sgd` for torch.optim.SGD)."""
    target = str(cfg[group].get("_target_", group))
    return choices.get(group) or target.rsplit(".", 1)[-1].lower()


SHORT_KEYS = {
    "trainer.batch_size": "bs",
    "data.condition_number": "κ",
    "regularization.l2": "α",
    "optimizer.momentum": "β",
    "schedule.step_size": "step",
}


def short_number(value: float) -> str:
    """3 significant digits; exponents as 6.8e-3 and 1e4 outside [0.01, 10^4)."""
    rounded = float(f"{value:.3g}")
    if rounded == int(rounded) and abs(rounded) < 1e4:
        return str(int(rounded))
    if 1e-2 <= abs(rounded) < 1e4:
        return f"{rounded:g}"
    mantissa, exponent = f"{rounded:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def short_value(key: str, value: Any) -> str:
    if value is None:
        return "full" if key == "trainer.batch_size" else "none"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return short_number(value)
    return str(value)


def run_name(optimizer: str, values: dict[str, Any], trial: int | None = None) -> str:
    """The optimizer, then each value that tells the run apart (`lbfgs κ=1e4`, `adam lr=6.8e-3 bs=16
    #4`), by key: a group's choice bare, any other value as `short key=3 significant digits`."""
    words = [optimizer]
    for key, value in values.items():
        if key in GROUPS:
            words += [] if key == "optimizer" else [str(value)]
        elif key != "seed":
            words.append(f"{SHORT_KEYS.get(key, key.rsplit('.', 1)[-1])}={short_value(key, value)}")
    if trial is not None:
        words.append(f"#{trial}")
    if "seed" in values:  # last: a trial's repeats read `adam lr=1e-3 #4 seed=1`
        words.append(f"seed={values['seed']}")
    return " ".join(words)


def swept_keys(overrides: Sequence[str]) -> list[str]:
    """The keys of a --multirun's sweep overrides (`optimizer=sgd,adam`, `lr=tag(log, ...)`), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return list(dict.fromkeys(o.key_or_group for o in parsed if o.is_sweep_override()))


def own_keys(overrides: Sequence[str]) -> list[str]:
    """A single run's command-line keys that say what it is (not where it is recorded)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keys = [o.key_or_group for o in parsed if not o.is_delete()]
    return [k for k in keys if k != "experiment" and not any(k.startswith(b) for b in NOT_PARAMS)]


class MlflowTracker:
    """Metrics are buffered and written at each snapshot and at the end (`flush`), so MLflow's
    history always matches what a resume continues from: a resumed run never logs an epoch twice.

    MLflow itself runs in a sidecar process (src/mlflow_sidecar.py): this tracker says what is logged
    and sends it there in order, without waiting. Only the run's id waits, when first asked for (the
    first snapshot, usually long after MLflow has created the run); leaving the run waits until every
    write is done, so when a run returns, its record is complete and ended, and an error of any write
    is raised then."""

    def __init__(
        self,
        experiment: str,
        cfg: DictConfig,
        uri: str | None = None,
        tags: dict[str, str] | None = None,
        resume_run_id: str | None = None,
        snapshot_path: Path | None = None,
        plot_metric: str = "val_loss",  # these two are for a sweep's comparison (MultirunParent)
        sort_by: str = "best_val_loss",
    ) -> None:
        self.given_uri = uri
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.cfg = cfg
        self.extra_tags = tags or {}
        self.resume_run_id = resume_run_id  # continue this run (same id, later steps)
        self.snapshot_path = snapshot_path  # logged as an artifact when the run ends, if written
        self.key = uuid.uuid4().hex  # the run's name in the sidecar, before MLflow gives it an id
        self._opened: Future[tuple[str, str]] | None = None  # its experiment's id and its id
        self.name: str | None = None
        self._pending: list[tuple[str, float, int, int]] = []

    @property
    def run_id(self) -> str | None:
        return None if self._opened is None else self._opened.result()[1]

    @property
    def where(self) -> str | None:
        """How to see the run in the MLflow UI."""
        if self._opened is None:
            return None
        experiment_id, run_id = self._opened.result()
        return ui_hint(self.uri, experiment_id, run_id)

    def _send(self, function: str, *args: Any, **kwargs: Any) -> None:
        self.sidecar.send(function, self.key, *args, **kwargs)

    def _copy(self, path: Path) -> str:
        """A copy that stays as it is until the sidecar has uploaded it (the original may change)."""
        copy = self.scratch / f"{len(list(self.scratch.iterdir()))}" / path.name
        copy.parent.mkdir()
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
        return str(copy)

    def __enter__(self) -> MlflowTracker:
        choices, overrides, self.output_dir = hydra_context()
        checked_store(self.uri, self.given_uri)  # a bad store fails now, before training
        self.sidecar = Sidecar.get()
        self.scratch = Path(tempfile.mkdtemp(prefix="descentlab-mlflow-"))  # removed at the end
        where = {"uri": self.uri, "experiment": self.experiment, "cwd": os.getcwd(), "env": mlflow_env()}
        if self.resume_run_id is not None:
            tags = {PROCESS_TAG: this_process(), **self.extra_tags}
            self._opened = self.sidecar.ask("reopen_run", self.key, where, self.resume_run_id, tags)
            return self
        tags = {f"choice.{group}": c for group, c in choices.items()}
        tags["overrides"] = " ".join(overrides)
        tags[PROCESS_TAG] = this_process()
        if commit := git_commit():
            tags["mlflow.source.git.commit"] = commit
        tags |= source_tags()
        if parent := job_env(PARENT_RUN_ENV):
            tags["mlflow.parentRunId"] = parent
        tags.update(self.extra_tags)
        self.name = self._name(choices, overrides)
        logged = list(params(self.cfg, choices).items())
        config_yaml = OmegaConf.to_yaml(self.cfg, resolve=True)
        self._opened = self.sidecar.ask("open_run", self.key, where, self.name, tags, logged, config_yaml)
        return self

    def _name(self, choices: dict[str, str], overrides: list[str]) -> str:
        """Named by the keys its sweep varies (and its Optuna trial), else by its own overrides."""
        trial = self.extra_tags.get("optuna.trial")
        keys = [k for k in (job_env(SWEPT_ENV) or "").split(",") if k]
        if not keys and trial is None:
            keys = own_keys(overrides)
            keys += [] if "optimizer.lr" in keys else ["optimizer.lr"]
        values = {
            k: choice(self.cfg, choices, k) if k in GROUPS else OmegaConf.select(self.cfg, k, default=None)
            for k in keys
        }
        return run_name(choice(self.cfg, choices, "optimizer"), values, None if trial is None else int(trial))

    def log_dataset(self, data: Data) -> None:
        """The data as the run's MLflow dataset input: name, digest, source, rows per split."""
        digest = hashlib.sha256()
        for split in (data.train, data.val, data.test):
            digest.update(split.X.cpu().numpy().tobytes())
            digest.update(split.y.cpu().numpy().tobytes())
        node = self.cfg.data
        if node.get("path"):  # a user's CSV or Parquet file
            path = Path(str(node.path)).expanduser()
            path = path if path.is_absolute() or not HydraConfig.initialized() else launch_dir() / path
            name, source_type, source = path.name, "local", json.dumps({"uri": str(path.resolve())})
        else:
            generator = str(node.get("_target_", "")).rsplit(".", 1)[-1]
            name = str(node.get("name") or generator.removeprefix("simulate_"))
            origin = f"statsmodels.datasets.{name}" if node.get("name") else f"src.data.{generator}"
            source_type, source = "code", json.dumps({"tags": {"mlflow.source.name": origin}})
        profile = {
            "train_rows": len(data.train),
            "val_rows": len(data.val),
            "test_rows": len(data.test),
            "features": data.n_features,
        }
        self._send("log_dataset", name, digest.hexdigest()[:8], source_type, source, json.dumps(profile))

    def _log(self, key: str, value: float | None, step: int) -> None:
        if value is not None and math.isfinite(value):
            self._pending.append((key, value, int(time.time() * 1000), step))

    def flush(self) -> None:
        self._send("log_metrics", self._pending)
        self._pending = []

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        for key, value in dataclasses.asdict(metrics).items():
            if key != "epoch":
                self._log(key, value, metrics.epoch)

    def log_estimates(self, estimates: Estimates) -> None:
        """The table of estimates as `estimates.csv`, the standardization that maps it to the data's
        units as `standardization.csv`, and the convergence certificate as metrics."""
        from src.inference import ARTIFACT, to_csv

        for key, value in estimates.certificate.items():
            self._log(key, value, 0)
        self.flush()
        self._send("log_text", to_csv(estimates.table), ARTIFACT)
        if estimates.standardization is not None:
            self._send("log_text", to_csv(estimates.standardization), "standardization.csv")
        self._send("set_tag", "converged", str(estimates.converged).lower())

    def log_result(self, result: FitResult, model: torch.nn.Module) -> None:
        """The run's outcome: its figures, stop reason, loss curve and model."""
        # Run-level results at step 0: one point each, which MLflow's charts draw as bars.
        for key in ("best_val_loss", "best_epoch", "test_loss", "epochs", "wall_time"):
            self._log(key, float(getattr(result, key)), 0)  # test_loss nan (no test split): skipped
        if result.param_error is not None:
            self._log("best_param_error", result.param_error, 0)
        self._log("reference_loss", result.reference_loss, 0)  # skipped when None
        self.flush()
        self._send("set_tag", "stop_reason", result.stop_reason)
        out = self.output_dir or self.scratch
        history = [(m.epoch, m.train_loss, m.val_loss) for m in result.history]
        png = str(out / "loss_curve.png")  # drawn there by the sidecar (matplotlib is its import)
        self._send("log_loss_curve", history, result.best_epoch, result.stop_reason, png)
        checkpoint = {
            "state_dict": model.state_dict(),
            "model": OmegaConf.to_yaml(self.cfg.model, resolve=True),
            "in_features": int(next(model.parameters()).shape[-1]),
        }
        torch.save(checkpoint, out / "model.pt")  # the run dir's copy, for warm_start=<run dir>
        self._send("log_model", str(mlflow_model.save(checkpoint, self.scratch / "model")))
        if self.output_dir is not None and (self.output_dir / ".hydra").is_dir():
            self._send("log_artifacts", self._copy(self.output_dir / ".hydra"), ".hydra")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is None:
            return
        status, error = "FINISHED", None
        try:
            if self._pending:
                self.flush()
            if self.snapshot_path is not None and self.snapshot_path.is_file():
                self._send("log_artifacts", self._copy(self.snapshot_path), "snapshot")
        finally:
            if exc_type is not None:
                killed = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
                status, error = "KILLED" if killed else "FAILED", f"{exc_type.__name__}: {exc}"
            stop_reason = exc.reason if isinstance(exc, signals.Stopped) else None  # which signal
            self._end(status, error, stop_reason, raising=exc_type is None)

    def _end(self, status: str, error: str | None, stop_reason: str | None, raising: bool) -> None:
        """End the run in MLflow and wait until everything sent is written. An error of an earlier
        write is raised here (the run then ends FAILED), unless the run already failed of its own."""
        try:
            self._send("terminate", status, error, stop_reason)
            self.sidecar.barrier()
            self._opened.result()  # type: ignore[union-attr]  # the run could not be created
        except SidecarError:
            self._end_here(status, error, stop_reason)
            raise
        except Exception:
            if raising:
                raise
            log.warning("MLflow run %s: a write failed", self.key, exc_info=True)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _end_here(self, status: str, error: str | None, stop_reason: str | None) -> None:
        """The sidecar died: end the run from this process (an error's cost only), never RUNNING.
        Its id may not have come back: then it is this process's RUNNING run of this name."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        ids = {self.resume_run_id} - {None}
        if not ids and (found := client.get_experiment_by_name(self.experiment)) is not None:
            query = f"tags.`{PROCESS_TAG}` = '{this_process()}' and attributes.status = 'RUNNING'"
            runs = client.search_runs([found.experiment_id], query)
            ids = {r.info.run_id for r in runs if r.info.run_name == self.name}
        status = "FAILED" if status == "FINISHED" else status
        for run_id in ids:
            end_run(client, str(run_id), status, error or f"SidecarError: {self.sidecar.ended}", stop_reason)


def mlflow_env() -> dict[str, str]:
    """This process's MLFLOW_* variables, which MLflow reads (the sidecar may have started earlier)."""
    return {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")}
