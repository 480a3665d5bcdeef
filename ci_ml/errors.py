"""One error root for the whole package; the CLI maps each branch to an exit code.

Library code raises these and nothing else escapes to the user: the single
handler in ``ci_ml.cli`` prints ``error: <message>`` on one line and exits with
the class's ``exit_code``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_USAGE = 2
EXIT_TOOL = 3
EXIT_INTERRUPTED = 130


class CiMlError(Exception):
    """Root of every error ci-ml reports to a user."""

    exit_code: int = EXIT_TOOL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(CiMlError):
    """Bad usage, configuration or input: the user can fix it (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration file is missing, unparsable or fails the schema."""


class InputError(UsageError):
    """A data file, model file or other input the user pointed at is unusable."""


class ToolError(CiMlError):
    """An external tool (bandit, pip-audit, trivy, docker...) is missing or failed (exit 3).

    The gate fails closed on this: a scan that did not run is never a clean scan.
    """

    exit_code = EXIT_TOOL


class BlockedError(CiMlError):
    """A gate or a policy blocked (exit 1). Raised only where a command has no decision to print."""

    exit_code = EXIT_BLOCKED
