"""The project's expected errors: bad input or configuration a user can fix.

Library code raises :class:`InputError` (a ``ValueError``) when a file, row or value is wrong;
its message names the file, the row or value and the fix. Stage scripts run their ``main``
through :func:`echodfkd.cli.run`, which prints such an error as one line and exits with status 1;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or configuration: the message names the file/row/value and what to do."""
