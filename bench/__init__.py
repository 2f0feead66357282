"""The harness: CLI, run orchestration, embedding cache, result records, leaderboard and plots."""

__version__ = "0.1.0"
