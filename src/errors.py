"""The errors a user's input can cause, apart from the schemas (src/config/__init__.py), so that any layer can
raise them without importing the config: each is reported as one line and exit 2 (src/cli.py)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value outside what is allowed; the message is one line naming key and rule."""


class CallbackConfigError(BaseException):
    """A ConfigError found in a Hydra callback, which would turn an Exception into a warning and go
    on; the CLI reports it as any ConfigError."""


class CallbackError(BaseException):
    """Any other error a Hydra callback must stop the sweep on (its cause: `__cause__`), rather than
    let Hydra warn and go on; the CLI reports the cause as any error of a run (exit 1)."""
