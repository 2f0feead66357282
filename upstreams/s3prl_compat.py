"""Lets s3prl 0.4.18 import on torchaudio 2.11 and huggingface_hub 1.x; call `patch()` before importing s3prl.

Why this exists: s3prl 0.4.18 (the last release) calls APIs that its dependencies have removed.
- `torchaudio.set_audio_backend(...)` runs at import time in several s3prl modules; torchaudio 2.9
  removed backend selection. We install a no-op: the suite never lets s3prl read files (it hands
  s3prl tensors), so the backend choice is irrelevant.
- `torchaudio.sox_effects` is imported at module level by s3prl's dataset files (quesst14_dtw,
  speech_commands, ...). torchaudio 2.9 dropped libsox. We provide a module whose functions raise a
  clear error if ever called: importing those modules (for `match`, heads, ...) then works, while
  any attempt to make s3prl read audio itself fails loudly instead of silently differing from ours.
- `huggingface_hub.HfFolder` is imported by `s3prl.downstream.runner`; it was removed in
  huggingface_hub 1.0. We provide a minimal token holder; nothing in the suite uploads anything.
- `s3prl/__init__.py` imports `torch.utils.tensorboard`, which imports TensorFlow when it is
  installed (the test environment has it for hear-validator). TensorFlow and triton in one process
  can segfault, so `patch()` makes `import tensorflow` fail inside this process (tensorboard then
  falls back to its TF-free stub). hear-validator, which needs TensorFlow, runs as a subprocess.
"""

from __future__ import annotations

import sys
import types

__all__ = ["patch", "SoxEffectsUnavailable"]

_PATCHED = False


class SoxEffectsUnavailable(RuntimeError):
    pass


def _sox_unavailable(*_args, **_kwargs):
    raise SoxEffectsUnavailable(
        "torchaudio.sox_effects was removed in torchaudio 2.9; the suite reads audio itself "
        "(tasks.audio.read_audio) and passes tensors to s3prl - do not use s3prl's dataset classes"
    )


def _block_tensorflow() -> None:
    if "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ImportError


def patch() -> None:
    """Idempotently install the shims described in the module docstring."""
    global _PATCHED
    if _PATCHED:
        return
    _block_tensorflow()

    import torchaudio

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda *_a, **_k: None
    if not hasattr(torchaudio, "get_audio_backend"):
        torchaudio.get_audio_backend = lambda: "soundfile"
    try:
        import torchaudio.sox_effects  # noqa: F401
    except ImportError:
        sox = types.ModuleType("torchaudio.sox_effects")
        sox.apply_effects_file = _sox_unavailable
        sox.apply_effects_tensor = _sox_unavailable
        sox.effect_names = lambda: []
        sys.modules["torchaudio.sox_effects"] = sox
        torchaudio.sox_effects = sox

    try:
        import huggingface_hub
    except ImportError:
        huggingface_hub = None
    if huggingface_hub is not None and not hasattr(huggingface_hub, "HfFolder"):

        class HfFolder:
            """Stand-in for the removed token store; the suite never authenticates."""

            @staticmethod
            def get_token():
                return None

            @staticmethod
            def save_token(token):
                return None

            @staticmethod
            def delete_token():
                return None

        huggingface_hub.HfFolder = HfFolder
    _PATCHED = True
