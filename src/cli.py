"""Turn any failure into one line on stderr and a non-zero exit (HYDRA_FULL_ERROR=1: the traceback)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src import signals
from src.errors import CallbackConfigError, ConfigError
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
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        msg = cause.msg.splitlines()[0] if cause.msg else str(cause).splitlines()[0]
        return f"{cause.full_key}: {msg}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def choices() -> str:
    """The config groups a user picks from, for --help (conf/config.yaml's hydra.help.template):
    Hydra's $APP_CONFIG_GROUPS lists every group, the internal schema/* ones too, with no filter."""
    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():  # resolved outside a Hydra app (no --help there)
        return ""
    loader = hydra.config_loader()
    groups = sorted(set(loader.list_groups("")) - {"hydra", "schema"})
    return "".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}\n" for g in groups)


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
        print(getattr(exc, "reason", "interrupted"), file=sys.stderr)
        sys.exit(signals.INTERRUPTED)
    except (ConfigError, CallbackConfigError, HydraException, OmegaConfBaseException) as exc:
        print(f"error: {redact(one_line(exc))}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {redact(one_line(exc))}", file=sys.stderr)
        sys.exit(RUN_ERROR)
    finally:
        sys.stderr = stderr
        if before is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = before
