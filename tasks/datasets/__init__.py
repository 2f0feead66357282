"""Loaders for the six corpora in their native layouts (mini-benchmark and real corpora alike).

Each returns `AudioExample`s (see `base.py`); audio is read through `tasks.audio.read_audio`.
"""
