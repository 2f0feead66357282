"""Every audio representation behind one embedding API.

    import upstreams
    upstreams.names()                      # ['fbank', 'random', 'm2d', 'm2dx', 'score', ...]
    model = upstreams.load("m2d", ckpt=None, **options)
    out = model([wav1, wav2])              # 1-D float waveforms at model.sample_rate, any lengths
    out.hidden_states                      # one [B, T, D] tensor per layer
    out.lengths                            # [B] valid frames
    model.scene_embeddings([wav1, wav2])   # [B, D]
"""

from .base import Upstream, UpstreamOutput
from .errors import CheckpointError, OptionError, UnknownUpstreamError, UpstreamError
from .registry import UpstreamInfo, info, load, names, register_upstream

__all__ = [
    "Upstream",
    "UpstreamOutput",
    "UpstreamInfo",
    "register_upstream",
    "names",
    "info",
    "load",
    "UpstreamError",
    "UnknownUpstreamError",
    "CheckpointError",
    "OptionError",
]
