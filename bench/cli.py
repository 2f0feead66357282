"""`bench` command line: `bench <command> --help` documents each command.

Sub-commands live in `bench.commands.<name>` and are imported only when they exist, so the CLI
starts fast and each command owns its own arguments. User errors (unknown upstream, missing
dataset or checkpoint, bad option) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .commands import COMMANDS
from .errors import UserError, user_error_types


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Pretrain and evaluate audio representations (M2D, M2D-X, SCORE, baselines) "
        "on ASR, PR, QbE, ESC-50, Speech Commands and ICBHI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bench.commands.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.commands.{name}_cmd":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except user_error_types() as exc:
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
