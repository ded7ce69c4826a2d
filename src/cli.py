"""Turn any failure into one line on stderr and a non-zero exit (HYDRA_FULL_ERROR=1: the traceback)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from src import signals
from src.errors import CallbackConfigError, ConfigError

USAGE_ERROR = 2  # the input was wrong: nothing ran
RUN_ERROR = 1  # the run itself failed


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
    """Call a @hydra.main function, reporting errors as one line unless HYDRA_FULL_ERROR is set."""
    signals.install()  # from here on a signal is a stop request, honoured at a safe point
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        signals.check()
        main()
        signals.check()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise, so that we can word the error
    stderr, sys.stderr = sys.stderr, _WithoutHydraJobLine(sys.stderr)
    try:
        signals.check()  # a signal during the imports
        main()
        signals.check()  # a signal during Hydra's teardown, after the run ended
    except KeyboardInterrupt as exc:  # a Stopped at a safe point, or a second signal's at once
        print(getattr(exc, "reason", "interrupted"), file=sys.stderr)
        sys.exit(signals.INTERRUPTED)
    except (ConfigError, CallbackConfigError, HydraException, OmegaConfBaseException) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        sys.exit(RUN_ERROR)
    finally:
        sys.stderr = stderr
        del os.environ["HYDRA_FULL_ERROR"]
