"""The harness, laid out by stage of the flow: `commands/` (the CLI) -> `study/` (plans of stages, done-markers,
executors, ledger) -> `run.py` (one evaluation) -> `protocols/` (what scores a task) and `results/` (records,
leaderboard, plots, report); `cache.py` and `extract.py` hold the frozen features all protocols share."""

__version__ = "0.1.0"
