"""Imports every built-in dataset builder so that it registers itself (order = default build order)."""

# Each module calls tasks.data.build.register_builder(...) at import time.
from . import esc50_builder  # noqa: F401,E402
from . import icbhi_builder  # noqa: F401,E402
from . import librispeech_builder  # noqa: F401,E402
from . import quesst14_builder  # noqa: F401,E402
from . import speech_commands_builder  # noqa: F401,E402
from . import pretrain_builder  # noqa: F401,E402
