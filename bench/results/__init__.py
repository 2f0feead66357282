"""Results: records (one JSON per run), seed statistics, the leaderboard, plots, the claims report, the HTML page."""
