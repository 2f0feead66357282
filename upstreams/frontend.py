"""Log-mel front end of M2D: a stateless function plus a thin module that stores settings and stats.

M2D (Niizumi et al., TASLP 2024): 16 kHz, n_fft 400, window 400, hop 160, 80 mel bins 50-8000 Hz,
log(power + eps), then standardised with corpus statistics (default mean -7.1, std 4.2) that are
stored with the weights. Each waveform is transformed on its own so that the reflect-padding of the
STFT happens at that waveform's own edges: features never depend on what it was batched with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchaudio
from torch import Tensor, nn

__all__ = ["LogMelConfig", "log_mel", "num_mel_frames", "LogMel"]

EPS = torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 50.0
    f_max: float = 8000.0

    def to_dict(self) -> dict:
        return asdict(self)


def num_mel_frames(num_samples: int, hop_length: int = 160) -> int:
    """Frames of a centred STFT: one per hop plus one."""
    return num_samples // hop_length + 1


def log_mel(wav: Tensor, mel: torchaudio.transforms.MelSpectrogram) -> Tensor:
    """`(time,)` waveform -> `(n_mels, frames)` log-mel power, un-normalised.

    Clips shorter than half a window cannot be reflect-padded; they are zero-extended first and the
    result cut back to `num_mel_frames(len(wav))`, so every clip of >= 1 sample has a defined output.
    """
    n = wav.shape[-1]
    min_len = mel.spectrogram.n_fft // 2 + 1
    if n < min_len:
        wav = torch.nn.functional.pad(wav, (0, min_len - n))
    return (mel(wav) + EPS).log()[..., : num_mel_frames(n, mel.spectrogram.hop_length)]


class LogMel(nn.Module):
    """Batch of variable-length waveforms -> normalised log-mel `[B, n_mels, max_frames]` + frame counts.

    Frames past an item's length are filled with 0, the normalised mean, so padding looks like
    average audio rather than like silence at log(eps).
    """

    def __init__(self, config: LogMelConfig = LogMelConfig(), mean: float = -7.1, std: float = 4.2):
        super().__init__()
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
            power=2.0,
        )
        self.register_buffer("norm_stats", torch.tensor([mean, std], dtype=torch.float32))

    def unnormalised(self, wavs: list[Tensor]) -> tuple[Tensor, Tensor]:
        feats = [log_mel(w, self.mel) for w in wavs]
        lengths = torch.tensor([f.shape[-1] for f in feats], dtype=torch.long)
        out = feats[0].new_zeros(len(feats), self.config.n_mels, int(lengths.max()))
        for i, f in enumerate(feats):
            out[i, :, : f.shape[-1]] = f
        return out, lengths

    def normalise(self, x: Tensor, lengths: Tensor) -> Tensor:
        mean, std = self.norm_stats[0], self.norm_stats[1]
        x = (x - mean) / std
        mask = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        return x * mask[:, None, :].to(x.dtype)

    def forward(self, wavs: list[Tensor]) -> tuple[Tensor, Tensor]:
        x, lengths = self.unnormalised(wavs)
        return self.normalise(x, lengths), lengths
