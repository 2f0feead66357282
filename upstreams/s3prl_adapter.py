"""Makes any upstream look like an s3prl 0.4.18 upstream expert, so s3prl's own `Featurizer`
(softmax-weighted sum of layers) and downstream models consume it unchanged.

s3prl's expert contract: `forward(list[wav]) -> {"hidden_states": [Tensor[B, T, D], ...], ...}` and
`get_downsample_rates(key) -> int`; the Featurizer cuts each item to `round(len(wav) / rate)`
frames and tolerates up to 5 frames of difference, which every upstream here satisfies.
"""

from __future__ import annotations

from torch import Tensor, nn

from . import s3prl_compat

__all__ = ["S3prlUpstream", "featurizer"]


class S3prlUpstream(nn.Module):
    def __init__(self, upstream: nn.Module):
        super().__init__()
        self.upstream = upstream

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return int(self.upstream.downsample_rate)

    def forward(self, wavs: list[Tensor]) -> dict:
        out = self.upstream(wavs)
        hs = list(out.hidden_states)
        return {"hidden_states": hs, "last_hidden_state": hs[-1], "_lengths": out.lengths}


def featurizer(upstream: nn.Module, device: str = "cpu", **kwargs):
    """s3prl's own `Featurizer` over `upstream` (imports s3prl through the compat shims)."""
    s3prl_compat.patch()
    from s3prl.upstream.interfaces import Featurizer

    adapter = upstream if isinstance(upstream, S3prlUpstream) else S3prlUpstream(upstream)
    return adapter, Featurizer(adapter, upstream_device=device, **kwargs)
