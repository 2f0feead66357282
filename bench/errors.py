"""Which exceptions are the user's to fix (printed as one line) rather than bugs (traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the command line: the message says what to do."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from tasks.audio import AudioReadError
    from tasks.data.build import DatasetError, DatasetNotBuiltError
    from tasks.data.debian import MissingToolError
    from upstreams.errors import UpstreamError

    return (UserError, UpstreamError, AudioReadError, DatasetNotBuiltError, DatasetError, MissingToolError,
            FileNotFoundError)
