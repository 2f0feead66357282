"""Errors a user can fix: unknown upstream, missing or mismatched checkpoint, bad option."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base class; the message is one line saying what is wrong and what to do."""


class UnknownUpstreamError(UpstreamError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(UpstreamError):
    pass


class OptionError(UpstreamError, TypeError):
    pass
