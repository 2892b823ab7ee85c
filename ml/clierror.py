"""The one error type every ``spondyscan`` command raises for a user's mistake.

Science commands (:mod:`ml.cli`) and service commands (``backend``) alike raise
:class:`CliError`; the entry point prints its message as one line and exits with status 2,
without a traceback.
"""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: printed as one sentence, exit status 2, no traceback."""
