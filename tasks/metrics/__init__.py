"""Task metrics that need more than a one-liner (currently QUESST's term-weighted value)."""
