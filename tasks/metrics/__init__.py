"""Task metrics: pure functions of scores/predictions and references (e.g. `twv` for QbE)."""
