"""One module per `bench` sub-command; each exposes `add_parser(subparsers)` and sets `func`."""

COMMANDS = ("list", "data", "run", "cache", "pretrain", "leaderboard", "quickstart", "reproduce")
