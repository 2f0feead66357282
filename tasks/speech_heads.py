"""SUPERB's frame-level CTC heads for PR and ASR, as s3prl 0.4.18 defines them.

SUPERB (s3prl `downstream/ctc/libriphone.yaml`, `downstream/asr/config.yaml`):

* PR: `projector = Linear(D, 256)` -> `FrameLevel` (no hidden layer: one Linear to the labels),
  CTC with `zero_infinity`.
* ASR: `projector = Linear(D, 1024)` -> `RNNs` (2-layer bidirectional LSTM, 1024 units per
  direction, dropout 0.2, no layer norm, no projection, `total_rate: -1` = no time downsampling)
  -> Linear to the characters, CTC with `zero_infinity`.

The projector is built as s3prl's experts build it. `FrameLevel` is imported from s3prl itself
(after `upstreams.s3prl_compat.patch()`). `RNNs` is re-implemented here with s3prl's exact
definition - same constructor arguments, parameters, state-dict keys, initialisation, dropout,
layer norm, projection and time downsampling - because s3prl's `RNNLayer` runs its LSTM on packed
sequences, whose backward pass on CPU is 15-40x slower than on padded input (measured on this
machine: 256 units, 16 x 300 frames, 9.1 s packed vs 0.63 s padded). Here each direction runs on
padded input; the backward direction on sequences reversed within their own lengths, so padding
never reaches a valid frame and the outputs equal s3prl's (tests/test_speech_tasks.py loads
s3prl's module's weights into this one and compares outputs and gradients).

In front of the head sits the featurizer: `WeightedSum` (s3prl's `Featurizer`: softmax over one
weight per layer, initialised to 0; layer norm of each layer first only with `normalize`, s3prl's
`upstream_feature_normalize`, off in SUPERB) or `Standardize` (one layer, fixed train-set
mean and std: the `linear` protocol). `FrozenCTC` runs on cached frame features,
`UpstreamCTC` on waveforms through a frozen or trainable upstream.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "HeadConfig",
    "SUPERB_PR_HEAD",
    "SUPERB_ASR_HEAD",
    "s3prl_frame_level",
    "RNNLayer",
    "RNNs",
    "output_lengths",
    "CTCHead",
    "WeightedSum",
    "Standardize",
    "FrozenCTC",
    "UpstreamCTC",
]


@dataclass(frozen=True)
class HeadConfig:
    """What `CTCHead` builds: s3prl's `select` model after a `project_dim` projector.

    `rnn` holds the keyword arguments of s3prl's `RNNs` (empty for `FrameLevel`).
    """

    select: str  # "FrameLevel" | "RNNs"
    project_dim: int
    rnn: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.select not in ("FrameLevel", "RNNs"):
            raise ValueError(f"head must be FrameLevel or RNNs, got {self.select!r}")
        if self.select == "RNNs" and not self.rnn:
            raise ValueError("an RNNs head needs its s3prl RNNs settings")

    def with_rnn(self, **changes) -> "HeadConfig":
        return replace(self, rnn={**self.rnn, **changes})

    def as_dict(self) -> dict:
        return asdict(self)


SUPERB_PR_HEAD = HeadConfig("FrameLevel", 256)
SUPERB_ASR_HEAD = HeadConfig(
    "RNNs",
    1024,
    {
        "module": "LSTM",
        "bidirection": True,
        "dim": [1024, 1024],
        "dropout": [0.2, 0.2],
        "layer_norm": [False, False],
        "proj": [False, False],
        "sample_rate": [1, 1],
        "sample_style": "concat",
        "total_rate": -1,
    },
)


def s3prl_frame_level() -> type[nn.Module]:
    """s3prl's `downstream.model.FrameLevel`, imported through the compat shims."""
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    try:
        from s3prl.downstream.model import FrameLevel
    except ImportError as exc:
        raise ImportError(
            "the PR head is s3prl 0.4.18's own FrameLevel: pip install 's3prl==0.4.18' "
            f"(or this package's [interop] extra) ({exc})"
        ) from exc
    return FrameLevel


def _downsample(x: Tensor, lengths: Tensor, rate: int, style: str) -> tuple[Tensor, Tensor]:
    """s3prl's `downsample`: keep every `rate`-th frame ("drop") or concatenate `rate` frames ("concat")."""
    batch, steps, dim = x.shape
    lengths = lengths // rate
    if style == "drop":
        return x[:, ::rate, :].contiguous(), lengths
    if style == "concat":
        if steps % rate:
            x = x[:, : steps - steps % rate, :]
        return x.contiguous().view(batch, steps // rate, dim * rate), lengths
    raise ValueError(f"sample_style must be 'drop' or 'concat', got {style!r}")


def _reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` frames of each sequence of `[B, T, D]`; padding stays in place."""
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    n = lengths.to(x.device)[:, None]
    idx = torch.where(t < n, n - 1 - t, t)
    return x.gather(1, idx[..., None].expand_as(x))


class RNNLayer(nn.Module):
    """s3prl's `RNNLayer`: one (bi)directional LSTM/GRU layer, then layer norm, dropout, frame
    dropping by `sample_rate`, and a Linear + tanh projection, each only if configured."""

    def __init__(self, input_dim: int, module: str, bidirection: bool, dim: int, dropout: float,
                 layer_norm: bool, sample_rate: int, proj: bool):
        super().__init__()
        if module.upper() not in ("LSTM", "GRU"):
            raise ValueError(f"module must be LSTM or GRU, got {module!r}")
        rnn_out_dim = 2 * dim if bidirection else dim
        self.out_dim = rnn_out_dim
        self.dropout, self.layer_norm, self.sample_rate, self.proj = dropout, layer_norm, sample_rate, proj
        self.layer = getattr(nn, module.upper())(input_dim, dim, bidirectional=bidirection, num_layers=1,
                                                 batch_first=True)
        if layer_norm:
            self.ln = nn.LayerNorm(rnn_out_dim)
        if dropout > 0:
            self.dp = nn.Dropout(p=dropout)
        if proj:
            self.pj = nn.Linear(rnn_out_dim, rnn_out_dim)

    def _run(self, x: Tensor, suffix: str) -> Tensor:
        """One direction over padded `[B, T, D]` with this layer's weights of that direction."""
        rnn = self.layer
        params = [getattr(rnn, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
        if isinstance(rnn, nn.LSTM):
            return torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, False, True)[0]
        return torch.gru(x, h0, params, True, 1, 0.0, self.training, False, True)[0]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """`[B, T, D]`, `[B]` -> `[B, max(lengths), out_dim]` (zeros past each length), lengths."""
        lengths = lengths.cpu().long()
        x = x[:, : int(lengths.max())]
        out = self._run(x, "")
        if self.layer.bidirectional:
            backward = _reverse_within(self._run(_reverse_within(x, lengths), "_reverse"), lengths)
            out = torch.cat([out, backward], dim=-1)
        valid = torch.arange(out.shape[1], device=out.device)[None, :] < lengths.to(out.device)[:, None]
        out = out * valid[..., None].to(out.dtype)  # what pad_packed_sequence leaves past each length
        if self.layer_norm:
            out = self.ln(out)
        if self.dropout > 0:
            out = self.dp(out)
        if self.sample_rate > 1:
            out, lengths = _downsample(out, lengths, self.sample_rate, "drop")
        if self.proj:
            out = torch.tanh(self.pj(out))
        return out, lengths


class RNNs(nn.Module):
    """s3prl's `RNNs` (downstream/asr/model.py): optional input downsampling to `total_rate`, a
    stack of `RNNLayer`s, and a Linear to `output_size`. Same arguments, same state-dict keys."""

    def __init__(self, input_size: int, output_size: int, upstream_rate: int, module: str, bidirection: bool,
                 dim: list[int], dropout: list[float], layer_norm: list[bool], proj: list[bool],
                 sample_rate: list[int], sample_style: str, total_rate: int = 320):
        super().__init__()
        latest = input_size
        self.sample_rate = 1 if total_rate == -1 else round(total_rate / upstream_rate)
        if self.sample_rate < 1:
            raise ValueError(f"total_rate {total_rate} is finer than the upstream's frame rate {upstream_rate}")
        self.sample_style = sample_style
        if sample_style == "concat":
            latest *= self.sample_rate
        self.rnns = nn.ModuleList()
        for i in range(len(dim)):
            layer = RNNLayer(latest, module, bidirection, dim[i], dropout[i], layer_norm[i], sample_rate[i], proj[i])
            self.rnns.append(layer)
            latest = layer.out_dim
        self.linear = nn.Linear(latest, output_size)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """`[B, T, D]`, `[B]` -> logits `[B, T', C]`, `[B]`."""
        if self.sample_rate > 1:
            x, lengths = _downsample(x, lengths, self.sample_rate, self.sample_style)
        for rnn in self.rnns:
            x, lengths = rnn(x, lengths)
        return self.linear(x), lengths


def output_lengths(config: HeadConfig, upstream_rate: int, lengths: Tensor) -> Tensor:
    """Frames the head emits for inputs of `lengths` upstream frames (what CTC has to fit labels into)."""
    if config.select != "RNNs":
        return lengths
    total = config.rnn.get("total_rate", 320)
    out = lengths // (1 if total == -1 else max(1, round(total / upstream_rate)))
    for rate in config.rnn["sample_rate"]:
        out = out // rate
    return out


class CTCHead(nn.Module):
    """`Linear(input_dim, project_dim)` -> s3prl `FrameLevel` or `RNNs` -> logits over `num_labels`."""

    def __init__(self, input_dim: int, num_labels: int, config: HeadConfig, upstream_rate: int):
        super().__init__()
        self.config = config
        self.projector = nn.Linear(input_dim, config.project_dim)
        if config.select == "FrameLevel":
            self.model = s3prl_frame_level()(config.project_dim, num_labels)
        else:
            self.model = RNNs(config.project_dim, num_labels, upstream_rate, **config.rnn)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """`[B, T, D]`, `[B]` -> logits `[B, T', C]`, `[B]` (T' < T when the RNNs downsample)."""
        # s3prl's RNN layers pack sequences, which needs lengths on the CPU
        logits, out_lengths = self.model(self.projector(x), lengths.cpu())
        return logits, torch.as_tensor(out_lengths).long().cpu()


class WeightedSum(nn.Module):
    """s3prl `Featurizer`: `[B, T, L, D] -> [B, T, D]` with softmax(weights), weights initialised to 0.

    `normalize` applies s3prl's `F.layer_norm` (no affine) to every layer before the sum. SUPERB runs
    without it; the mini ASR setting needs it: on raw log-mel or a small ViT's unnormalised hidden
    states the BiLSTM head stayed on CTC's blank plateau for 2000 steps, with it it left by step
    200-1000 (docs/protocols.md, "Speech tasks").
    """

    def __init__(self, num_layers: int, normalize: bool = False):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] != self.weights.numel():
            raise ValueError(f"expected {self.weights.numel()} layers, got input of shape {tuple(x.shape)}")
        if self.normalize:
            x = F.layer_norm(x, (x.shape[-1],))
        w = torch.softmax(self.weights, dim=0).to(x.dtype)
        return torch.einsum("btld,l->btd", x, w)

    def layer_weights(self) -> list[float]:
        return [round(float(w), 6) for w in torch.softmax(self.weights.detach(), dim=0)]


class Standardize(nn.Module):
    """`(x - mean) / std` per feature with fixed statistics (the linear protocol's StandardScaler)."""

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clamp_min(1e-8).clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class FrozenCTC(nn.Module):
    """Featurizer + head on cached frame features: `[B, T, L, D]` (weighted) or `[B, T, D]` (one layer)."""

    def __init__(self, featurizer: nn.Module, head: CTCHead):
        super().__init__()
        self.featurizer = featurizer
        self.head = head

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats = feats.to(self.head.projector.weight.device)
        return self.head(self.featurizer(feats), lengths)


class UpstreamCTC(nn.Module):
    """Upstream -> featurizer -> head on waveforms; the upstream is trained only if `train_upstream`.

    `layer=None` feeds all layers stacked `[B, T, L, D]` to the featurizer (weighted sum), an int
    feeds that one layer `[B, T, D]`. A frozen upstream runs in eval mode without gradients (the
    `weighted`/`linear` protocols on corpora too large to cache); `autocast` wraps the upstream
    call only (bf16 on CPU), the head always runs in float32.
    """

    def __init__(self, upstream: nn.Module, featurizer: nn.Module, head: CTCHead, layer: int | None = None,
                 train_upstream: bool = True, autocast: Callable[[], contextlib.AbstractContextManager] | None = None):
        super().__init__()
        self.upstream = upstream
        self.featurizer = featurizer
        self.head = head
        self.layer = layer
        self.train_upstream = train_upstream
        self.autocast = autocast
        if not train_upstream:
            self.upstream.requires_grad_(False)

    def train(self, mode: bool = True) -> "UpstreamCTC":
        super().train(mode)
        if not self.train_upstream:
            self.upstream.eval()
        return self

    def features(self, wavs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        grad = torch.enable_grad() if (self.train_upstream and self.training) else torch.no_grad()
        with grad, (self.autocast() if self.autocast else contextlib.nullcontext()):
            out = self.upstream(list(wavs))
        states = out.hidden_states
        feats = states[self.layer] if self.layer is not None else torch.stack(list(states), dim=2)
        return feats.float(), out.lengths

    def forward(self, wavs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        feats, lengths = self.features(wavs)
        return self.head(self.featurizer(feats), lengths)
