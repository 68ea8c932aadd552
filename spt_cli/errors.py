"""User-facing errors: one line naming the problem and the fix, and an exit code."""

from __future__ import annotations


class SptError(Exception):
    """An error caused by the user's input or environment, shown as one line without traceback.

    The message names the problem and, where there is one, the fix.
    """

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(SptError):
    """Invalid configuration (unknown choice, bad value). Exit code 2, like argparse."""

    exit_code = 2


class DataError(SptError):
    """Missing, malformed or inconsistent data files."""

    exit_code = 3


class RuntimeFailure(SptError):
    """A run that cannot go on (non-finite loss, unwritable output, ...)."""

    exit_code = 4
