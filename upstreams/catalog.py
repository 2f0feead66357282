"""Imports the built-in upstream modules so their `@register_upstream` decorators run (order = listing order)."""

from . import fbank  # noqa: F401
from .m2d import factories  # noqa: F401
