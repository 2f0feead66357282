"""The SUPERB FBANK baseline: Kaldi-compatible 80-bin log-mel filterbanks, 25 ms window, 10 ms hop.

Computed with `torchaudio.compliance.kaldi.fbank`, the backend of s3prl's `fbank` upstream.
s3prl's exact baseline adds first and second deltas and per-utterance CMVN (240 dims); here that is
`deltas=2, cmvn=True`. The default is the plain 80-dim log-mel because per-utterance CMVN makes the
time mean of every clip zero, so clip-level tasks (mean pooling) see nothing - which is why SUPERB's
FBANK scores near chance on keyword spotting. A test checks `deltas=2, cmvn=True` against s3prl.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor

from .base import Upstream, UpstreamOutput
from .errors import OptionError
from .registry import register_upstream

__all__ = ["FbankUpstream"]

WIN = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms


class FbankUpstream(Upstream):
    def __init__(self, n_mels: int = 80, deltas: int = 0, cmvn: bool = False):
        super().__init__()
        if deltas not in (0, 1, 2):
            raise OptionError(f"fbank option deltas={deltas!r}: choose 0, 1 or 2")
        if not 8 <= n_mels <= 128:
            raise OptionError(f"fbank option n_mels={n_mels!r}: choose a value in 8..128")
        self.n_mels, self.deltas, self.cmvn = n_mels, deltas, bool(cmvn)
        self.sample_rate = 16000
        self.downsample_rate = HOP
        self.first_frame_center = WIN / 2 / self.sample_rate
        self.hidden_sizes = [n_mels * (1 + deltas)]
        self.compute_deltas = torchaudio.transforms.ComputeDeltas(win_length=5)

    def num_frames(self, num_samples: int) -> int:
        return 1 + (max(num_samples, WIN) - WIN) // HOP  # Kaldi's snip_edges framing

    def _one(self, wav: Tensor) -> Tensor:
        if wav.numel() < WIN:  # Kaldi framing yields no frame for < 25 ms; pad to one frame
            wav = torch.nn.functional.pad(wav, (0, WIN - wav.numel()))
        x = torchaudio.compliance.kaldi.fbank(
            wav.view(1, -1), num_mel_bins=self.n_mels, frame_length=25.0, frame_shift=10.0,
            sample_frequency=self.sample_rate,
        )  # [T, n_mels]
        feats = [x]
        for _ in range(self.deltas):
            feats.append(self.compute_deltas(feats[-1].T.unsqueeze(0)).squeeze(0).T)
        x = torch.cat(feats, dim=-1)
        if self.cmvn:
            x = (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + 1e-10)
        return x

    def encode(self, wavs: list[Tensor]) -> UpstreamOutput:
        feats = [self._one(w) for w in wavs]
        lengths = torch.tensor([f.shape[0] for f in feats])
        return UpstreamOutput((torch.nn.utils.rnn.pad_sequence(feats, batch_first=True),), lengths)


@register_upstream("fbank", description="80-bin Kaldi log-mel filterbank, 25 ms / 10 ms (SUPERB FBANK baseline)")
def fbank(ckpt=None, n_mels: int = 80, deltas: int = 0, cmvn: bool = False) -> FbankUpstream:
    if ckpt is not None:
        raise OptionError("fbank has no weights; drop --ckpt")
    return FbankUpstream(n_mels=n_mels, deltas=deltas, cmvn=cmvn)
