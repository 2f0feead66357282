"""Imports every built-in dataset builder so that it registers itself (order = default build order)."""

# Each module calls tasks.data.build.register_builder(...) at import time.
