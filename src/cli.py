"""Turn any failure into one line on stderr and a non-zero exit (HYDRA_FULL_ERROR=1: the traceback)."""

from __future__ import annotations

import dataclasses
import difflib
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from src import signals
from src.errors import CallbackConfigError, CallbackError, ConfigError
from src.redaction import install_log_redaction, redact

USAGE_ERROR = 2  # the input was wrong: nothing ran
RUN_ERROR = 1  # the run itself failed
FULL_ERROR = "HYDRA_FULL_ERROR"  # =1: Hydra's own report, with the traceback


def one_line(exc: BaseException) -> str:
    """A single line saying what was wrong and what is allowed."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{group}={name} is not a choice; available: {', '.join(sorted(exc.options))}"
    cause = exc.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and (known := unknown_key(cause)):
        return known
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        msg = cause.msg.splitlines()[0] if cause.msg else str(cause).splitlines()[0]
        return f"{cause.full_key}: {msg}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def unknown_key(cause: ConfigKeyError | ConfigAttributeError) -> str | None:
    """A misspelt key of a config group: the group's keys and the closest, in the user's words (the
    group's choice, not the schema's class name): `optimizer.learning_rate is not a key of
    optimizer=sgd; did you mean optimizer.lr? ...`."""
    from src.config.schemas import SCHEMAS

    schema, full_key = cause.object_type, str(cause.full_key or "")
    if not (dataclasses.is_dataclass(schema) and full_key and cause.key is not None):
        return None
    parent, _, key = full_key.rpartition(".")
    keys = [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]
    group = parent.split(".")[0]
    choice = next((n for n, c in SCHEMAS.get(group, {}).items() if c is schema), None)
    where = f"{parent}={choice}" if choice and parent == group else parent or "the config"
    close = closest(key, keys)
    hint = f": did you mean {parent + '.' if parent else ''}{close}? Its" if close else "; its"
    elsewhere = sorted(
        n for n, c in SCHEMAS.get(group, {}).items() if key in {f.name for f in dataclasses.fields(c)}
    )
    other = f" ({key} is a key of {group}={', '.join(elsewhere)})" if elsewhere and parent == group else ""
    return f"{full_key} is not a key of {where}{hint} keys: {', '.join(keys)}{other}"


def closest(key: str, keys: list[str]) -> str | None:
    """The key most likely meant: a near spelling (lrr: lr), the initials of a long name
    (learning_rate: lr), or a name it is part of (epochs: max_epochs)."""
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    initials = "".join(part[:1] for part in key.split("_"))
    within = [k for k in keys if len(key) >= 3 and (key in k or k in key) and len(k) >= 3]
    return next(iter([*close, *([initials] if initials in keys else []), *within]), None)


def choices() -> str:
    """The config groups a user picks from, for --help (conf/config.yaml's hydra.help.template):
    Hydra's $APP_CONFIG_GROUPS lists every group, the internal schema/* ones too, with no filter."""
    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():  # resolved outside a Hydra app (no --help there)
        return ""
    loader = hydra.config_loader()
    groups = sorted(set(loader.list_groups("")) - {"hydra", "schema"})
    return "".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}\n" for g in groups)


CONF = Path(__file__).resolve().parents[1] / "conf"
ANSWERED_HERE = ("--help", "-h")  # Hydra's own flags (--multirun, --cfg, --info, ...) go to Hydra


def precheck(argv: list[str]) -> None:
    """The command line's config, composed and checked before torch, MLflow and Optuna are imported
    (seconds): a misspelt key or a value out of range ends here, as cli's one line and exit 2, and
    `--help` is answered here. Anything else (a sweep, Hydra's flags) goes on to the run, which
    checks the same config again; so does any failure other than a config error."""
    if any(arg in ANSWERED_HERE for arg in argv):
        help_only([arg for arg in argv if not arg.startswith("-")])
    if any(arg.startswith("-") for arg in argv) or os.environ.get(FULL_ERROR) == "1":
        return  # Hydra's flags are Hydra's; HYDRA_FULL_ERROR=1 asks for its traceback
    import hydra

    from src import config
    from src.config.formulas import check_file, check_rows

    config.register()
    overrides = [arg for arg in argv if not arg.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with hydra.initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = hydra.compose("config", overrides=overrides)
            check_file(cfg.data, cfg.inference.cluster)  # the CSV's columns and weights, no pandas
            config.validate(cfg)
            check_rows(cfg.data)  # the formula on the CSV's first rows, by formulaic
    except (ConfigError, HydraException, OmegaConfBaseException) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except Exception:  # not a config error: the run reports it as it always has
        return


def help_only(overrides: list[str]) -> None:
    """conf/config.yaml's hydra.help, filled in as Hydra's --help does, without importing the run and
    without Hydra's listing of every group (it copies the whole config repository per group: 40 s)."""
    import string

    import hydra
    from hydra.core.config_store import ConfigStore

    from src import config

    config.register()
    OmegaConf.register_new_resolver(
        "app_choices", lambda: quick_choices(ConfigStore.instance()), replace=True
    )
    with hydra.initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = hydra.compose("config", overrides=overrides, return_hydra_config=True)
    template = str(cfg.hydra.help.template)
    with open_dict(cfg):
        del cfg["hydra"]
    print(string.Template(template).safe_substitute(CONFIG=OmegaConf.to_yaml(cfg)))
    sys.exit(0)


def quick_choices(store: Any) -> str:
    """`choices()` from the files: each conf/<group>/*.yaml, and the recipes of `+experiment=`."""
    groups = {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in CONF.iterdir() if d.is_dir()}
    groups.pop("hydra", None)
    groups["experiment"] = sorted(name.removesuffix(".yaml") for name in store.list("experiment"))
    return "".join(f"{g}: {', '.join(names)}\n" for g, names in sorted(groups.items()))


class _WithoutHydraJobLine:
    """stderr, less the "Error executing job with overrides: ..." line Hydra writes before re-raising."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Error executing job with overrides:"):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def run(main: Callable[[], Any]) -> None:
    """Call a @hydra.main function, reporting errors as one line unless HYDRA_FULL_ERROR=1 is set."""
    signals.install()  # from here on a signal is a stop request, honoured at a safe point
    install_log_redaction()  # no password in a log line, whoever logs it
    OmegaConf.register_new_resolver("app_choices", choices, replace=True)
    if os.environ.get(FULL_ERROR) == "1":  # the caller asked for Hydra's own report: leave it be
        signals.check()
        main()
        signals.check()
        return
    # Hydra has no public switch for either: it hands an error to its caller only when
    # HYDRA_FULL_ERROR=1 (else it prints its own report and exits 1), and it writes "Error executing
    # job with overrides: ..." to stderr itself just before re-raising a job's error. So for the length
    # of the call we set the variable and drop that one line, then restore exactly what was there:
    # the caller's value (or its absence) and the caller's stderr.
    before = os.environ.get(FULL_ERROR)
    os.environ[FULL_ERROR] = "1"
    stderr, sys.stderr = sys.stderr, _WithoutHydraJobLine(sys.stderr)
    try:
        signals.check()  # a signal during the imports
        main()
        signals.check()  # a signal during Hydra's teardown, after the run ended
    except KeyboardInterrupt as exc:  # a Stopped at a safe point, or a second signal's at once
        print(getattr(exc, "reason", "interrupted") + getattr(exc, "hint", ""), file=sys.stderr)
        sys.exit(signals.INTERRUPTED)
    except (ConfigError, CallbackConfigError, HydraException, OmegaConfBaseException) as exc:
        print(f"error: {redact(one_line(exc))}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except (Exception, CallbackError) as exc:
        cause = exc.__cause__ if isinstance(exc, CallbackError) and exc.__cause__ else exc
        print(f"error: {type(cause).__name__}: {redact(one_line(cause))}", file=sys.stderr)
        sys.exit(RUN_ERROR)
    finally:
        sys.stderr = stderr
        if before is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = before
        # The process ends now: the interpreter's exit would walk the whole heap (torch, MLflow,
        # SQLAlchemy, every run's config) for cycles nobody waits for, 0.8 s of a run and 2 s of a
        # sweep (measured). Objects go on being freed by their counts; atexit handlers still run.
        gc.freeze()
