"""The project's exception hierarchy and the exit codes of the command contract, defined once.

Library code raises these; only `migrate.cli` turns them into a message and an exit code.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes (ARCHITECTURE.md, "Command contract")."""

    SUCCESS = 0
    FAILURE = 1
    USAGE = 2
    DIFFERENCES = 3
    INTERRUPTED = 130


class MigrateError(Exception):
    """An expected failure with a message fit for the user: what is wrong and what to do."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.report: Any = None  # what the job completed before it stopped (a model.Report), if anything

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(MigrateError):
    """Bad options, environment or plan file: nothing was attempted."""

    exit_code = ExitCode.USAGE


class ConnectionFailed(MigrateError):
    """A server (PostgreSQL, S3, registry, AWS API) could not be reached or refused us."""


class PreflightError(MigrateError):
    """A precondition does not hold (non-empty target, missing extension...); nothing was written."""


class ToolError(MigrateError):
    """An external program (pg_dump, pg_restore, buildah...) is missing or failed."""


class CopyFailed(MigrateError):
    """The copy started but did not complete; the message names what failed."""


class Interrupted(MigrateError):
    """Ctrl-C or SIGTERM (an ECS task being stopped)."""

    exit_code = ExitCode.INTERRUPTED
