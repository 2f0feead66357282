"""Downstream heads. Clip-level heads take pooled per-layer features `[B, L, D]`.

SUPERB's keyword-spotting head is s3prl's Featurizer (softmax-weighted layer sum) -> Linear
projector (256) -> mean over time -> Linear. Every step after the weighted sum is linear, so mean
pooling commutes with the projector and the whole head computed on time-pooled per-layer features
is *exactly* the head on frames (tests/test_heads.py checks this against s3prl's own modules).
That lets the frozen protocols cache one pooled row per clip instead of every frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LinearHead", "WeightedLayerHead", "FinetuneClassifier", "MLPHead"]


class LinearHead(nn.Module):
    """EVAR's linear evaluation: one Linear on standardised features of one layer."""

    def __init__(self, dim: int, num_classes: int, layer: int = -1):
        super().__init__()
        self.layer = layer
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """`[B, L, D]` (or `[B, D]`) -> logits `[B, C]`."""
        if x.dim() == 3:
            x = x[:, self.layer]
        return self.linear(x)


class WeightedLayerHead(nn.Module):
    """SUPERB KS head: softmax layer weights (init 0, as s3prl's Featurizer) -> Linear(D, 256) -> Linear(256, C)."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, projector_dim: int = 256):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.projector = nn.Linear(dim, projector_dim)
        self.linear = nn.Linear(projector_dim, num_classes)

    def layer_weights(self) -> list[float]:
        return [round(float(w), 6) for w in torch.softmax(self.weights.detach(), dim=0)]

    def weighted_sum(self, x: Tensor) -> Tensor:
        """`[..., L, D]` -> `[..., D]`."""
        w = torch.softmax(self.weights, dim=0)
        return (x * w[:, None]).sum(-2)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.projector(self.weighted_sum(x)))


class FinetuneClassifier(nn.Module):
    """Upstream (trainable) -> last layer -> optional SpecAugment-style masking -> mean over time
    -> BatchNorm without affine (the standardisation of the linear protocol, learned from batches
    as in MAE's linear probe) -> Linear."""

    def __init__(self, upstream: nn.Module, num_classes: int, layer: int = -1,
                 time_mask: int = 0, freq_mask: int = 0):
        super().__init__()
        self.upstream = upstream
        self.layer = layer
        dim = int(upstream.hidden_sizes[layer])
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, num_classes)
        import torchaudio

        # s3prl applies SpecAugment to upstream features as well (downstream/specaug.py)
        self.time_mask = torchaudio.transforms.TimeMasking(time_mask) if time_mask else None
        self.freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask) if freq_mask else None

    def forward(self, wavs: list[Tensor]) -> Tensor:
        out = self.upstream(wavs)
        h = out.hidden_states[self.layer]  # [B, T, D]
        if self.training and (self.time_mask or self.freq_mask):
            hm = h.transpose(1, 2)  # [B, D, T]: D plays the role of frequency
            if self.freq_mask:
                hm = self.freq_mask(hm)
            if self.time_mask:
                hm = self.time_mask(hm)
            h = hm.transpose(1, 2)
        mask = (torch.arange(h.shape[1], device=h.device)[None] < out.lengths.to(h.device)[:, None]).to(h.dtype)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return self.linear(self.norm(pooled))


class MLPHead(nn.Module):
    """HEAR 2021's downstream predictor (hear-eval-kit `FullyConnectedPrediction` with its 2021 grid's fixed
    values): per hidden layer Linear(hidden_dim) -> BatchNorm1d -> Dropout -> ReLU, then a Linear projection.
    `init` is `xavier_uniform` or `xavier_normal`, applied to every weight with the gain of the activation
    before it (linear for the first layer, ReLU after); biases keep PyTorch's default initialisation."""

    INITS = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}

    def __init__(self, dim: int, num_classes: int, hidden_layers: int = 1, hidden_dim: int = 1024,
                 dropout: float = 0.1, init: str = "xavier_uniform", layer: int = -1):
        super().__init__()
        if init not in self.INITS:
            raise ValueError(f"init must be one of {', '.join(self.INITS)}, got {init!r}")
        self.layer = layer
        fill, gain = self.INITS[init], nn.init.calculate_gain("linear")
        modules: list[nn.Module] = []
        for _ in range(hidden_layers):
            linear = nn.Linear(dim, hidden_dim)
            fill(linear.weight, gain=gain)
            modules += [linear, nn.BatchNorm1d(hidden_dim), nn.Dropout(dropout), nn.ReLU()]
            dim, gain = hidden_dim, nn.init.calculate_gain("relu")
        self.hidden = nn.Sequential(*modules)
        self.projection = nn.Linear(dim, num_classes)
        fill(self.projection.weight, gain=gain)

    def forward(self, x: Tensor) -> Tensor:
        """`[B, L, D]` (or `[B, D]`) -> logits `[B, C]`."""
        if x.dim() == 3:
            x = x[:, self.layer]
        return self.projection(self.hidden(x))
