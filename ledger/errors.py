"""Exceptions of the ledger layer.

Every failure a user can cause is a ``LedgerError`` with a one-line message, so the CLI
can print it and exit 2 instead of showing a traceback.
"""

from __future__ import annotations


class LedgerError(Exception):
    """A failure with a message fit for a user: bad input, missing deployment, refusal."""


class BadInput(LedgerError):
    """A malformed id, hex string, role name or option value."""


class ChainUnavailable(LedgerError):
    """The node could not be started or reached."""


class DeploymentMissing(LedgerError):
    """No deployment record for this chain."""


class CompilationError(LedgerError):
    """solc refused the sources or could not be run."""


class TransactionRefused(LedgerError):
    """The contract reverted; ``error`` names the custom error, ``args`` its arguments."""

    def __init__(self, function: str, error: str, args: dict[str, object], message: str):
        super().__init__(message)
        self.function = function
        self.error = error
        self.args_by_name = args


class JournalError(LedgerError):
    """The embedded chain's journal could not be written: what it held before is kept."""
