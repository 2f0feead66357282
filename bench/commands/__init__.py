"""One module per `bench` sub-command; each exposes `add_parser(subparsers)` and sets `func`."""

COMMANDS = ("list", "data", "run", "cache", "pretrain", "leaderboard", "quickstart", "reproduce", "sweep", "export")


def output_errors(advice: str):
    """Context manager: a full disk or a permission refused mid-run becomes one user-error line (exit 2) naming
    the file and `advice`, instead of a traceback. Other OS errors (bugs, missing inputs) pass through."""
    import contextlib
    import errno

    codes = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

    @contextlib.contextmanager
    def guard():
        from bench.errors import UserError

        try:
            yield
        except OSError as exc:
            if exc.errno not in codes:
                raise
            raise UserError(f"{exc.filename or 'a file'}: {exc.strerror or exc}; {advice}") from None

    return guard()
