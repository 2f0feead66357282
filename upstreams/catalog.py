"""Imports the built-in upstream modules so their `@register_upstream` decorators run (order = listing order)."""

from . import fbank  # noqa: F401
from .m2d import factories  # noqa: F401
from .score import factories as _score_factories  # noqa: F401,E402
