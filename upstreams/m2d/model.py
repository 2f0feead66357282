"""M2D pretraining model (Niizumi et al., Masked Modeling Duo, TASLP 2024): one class, its loss, its EMA.

    online:    visible patches -> M2DEncoder blocks + norm -> latent           (trained)
    predictor: latent + mask tokens at their positions -> narrow ViT -> D     (trained)
    target:    masked patches  -> EMA copy of the blocks + norm -> target     (no gradient)
    loss:      2 - 2 cos(prediction, standardised target), mean over masked patches

The patch embedding, positions and CLS token are shared by the online and target paths (the paper's
design); only the blocks and final norm have an EMA twin. The target encoder sees ONLY the masked
patches and the online encoder ONLY the visible ones, so the two views never overlap. As in the
authors' code the target blocks start from their own random draw rather than a copy of the online
blocks; the EMA pulls them onto the online weights.

A batch is a dict: `mel [B, 1, F, T]` (normalised log-mel, T = input_frames) and the mask indices
`ids_keep [B, K]`, `ids_mask [B, M]` (see `masking.py`); `online_mel` (same shape), if present, is what
the online encoder sees instead of `mel` (M2D-X's noisy input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import Block, EncoderConfig, M2DEncoder, sincos_pos_embed_2d
from .masking import PatchMask, gather_tokens, merge_tokens

__all__ = ["PredictorConfig", "PREDICTOR_PRESETS", "TARGET_NORMS", "ema_rate", "normalise_targets", "m2d_loss",
           "Predictor", "M2D", "M2DOutput"]

# How targets are standardised before the cosine: `token` is the paper's (layer norm per token);
# `clip` first standardises every feature over the masked tokens of each clip (data2vec's instance
# norm), which removes what all tokens of a clip share, so that a predictor that ignores the audio
# can no longer score well by outputting the common direction (see `upstreams.training.probe`).
TARGET_NORMS = ("token", "clip")


@dataclass(frozen=True)
class PredictorConfig:
    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(
                f"predictor embed_dim {self.embed_dim} must be a multiple of 4 and of num_heads {self.num_heads}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# The paper's predictor is 512-d/8 layers/16 heads for the 768-d ViT-B: narrower than the encoder.
# The small presets keep that ratio roughly (2/3 of the encoder width) with fewer layers.
PREDICTOR_PRESETS: dict[str, PredictorConfig] = {
    "tiny": PredictorConfig(embed_dim=48, depth=2, num_heads=4),
    "mini": PredictorConfig(embed_dim=128, depth=4, num_heads=4),
    "base": PredictorConfig(),
}


def ema_rate(step: int, total_steps: int, start: float, end: float) -> float:
    """EMA decay for the update after optimiser step `step` (0-based): linear from `start` to `end`.

    Matches the authors' schedule `start + (end - start) * step / (total_steps - 1)`.
    """
    if total_steps <= 1:
        return end
    return start + (end - start) * min(step, total_steps - 1) / (total_steps - 1)


def normalise_targets(target: Tensor, mode: str = "token") -> Tensor:
    """`[B, M, D]` target tokens -> the float32 targets the loss compares with (`TARGET_NORMS`).

    `clip`: per clip and feature, (x - mean over the M tokens) / std over them, then the per-token
    layer norm of `token`.
    """
    target = target.float()
    if mode == "clip":
        mean = target.mean(dim=1, keepdim=True)
        std = target.var(dim=1, keepdim=True, unbiased=False).add(1e-6).sqrt()
        target = (target - mean) / std
    elif mode != "token":
        raise ValueError(f"target normalisation must be one of {TARGET_NORMS}, got {mode!r}")
    return F.layer_norm(target, target.shape[-1:], eps=1e-6)


def m2d_loss(pred: Tensor, target: Tensor, standardise: str = "token") -> Tensor:
    """`pred`, `target` `[B, M, D]` -> scalar 2 - 2 cos, averaged over the B x M masked tokens.

    The target is standardised first (`normalise_targets`); in float32 so that bf16 autocast does
    not blur the cosine.
    """
    target = normalise_targets(target, standardise)
    cos = (F.normalize(pred.float(), dim=-1) * F.normalize(target, dim=-1)).sum(-1)
    return (2.0 - 2.0 * cos).mean()


class Predictor(nn.Module):
    """Narrow ViT that predicts target representations at every patch position.

    latent `[B, 1 + K, D]` (CLS + visible outputs of the online encoder) -> linear to the predictor
    width, mask tokens inserted at the masked positions, fixed sin-cos positions added, blocks,
    norm, linear back to D -> `[B, L, D]` in patch order (CLS dropped).
    """

    def __init__(self, encoder: EncoderConfig, config: PredictorConfig):
        super().__init__()
        d = config.embed_dim
        self.embed = nn.Linear(encoder.embed_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        gf, gt = encoder.grid
        pos = sincos_pos_embed_2d(d, gf, gt, encoder.pos_embed_order).reshape(gf * gt, d)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList([Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.out = nn.Linear(d, encoder.embed_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, latent: Tensor, mask: PatchMask) -> Tensor:
        x = self.embed(latent)
        cls, visible = x[:, :1], x[:, 1:]
        b, m = mask.ids_mask.shape
        tokens = merge_tokens(visible, self.mask_token.expand(b, m, -1), mask)  # [B, L, d]
        x = torch.cat([cls, tokens + self.pos_embed.to(tokens.dtype)], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.out(self.norm(x))[:, 1:]


@dataclass
class M2DOutput:
    loss: Tensor  # scalar
    latent: Tensor  # [B, 1 + K, D] online encoder output (CLS first)
    predicted: Tensor  # [B, L, D] predictor output at every position
    target: Tensor  # [B, M, D] target encoder output at the masked positions (not standardised)


class M2D(nn.Module):
    def __init__(self, encoder: EncoderConfig, predictor: PredictorConfig = PredictorConfig()):
        super().__init__()
        self.encoder = M2DEncoder(encoder)
        twin = M2DEncoder(encoder)  # an independent random draw, as in the authors' code
        self.target_blocks, self.target_norm = twin.blocks, twin.norm
        for p in self.target_parameters():
            p.requires_grad_(False)
        self.predictor = Predictor(encoder, predictor)
        # EMA updates applied so far: saved with the weights, so a resumed run continues the schedule
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.target_standardise = "token"  # a training setting (TARGET_NORMS), set by the recipe from its config

    # -- the three paths ---------------------------------------------------------------------------
    def forward_online(self, tokens: Tensor, mask: PatchMask) -> Tensor:
        """Embedded tokens `[B, L, D]` -> online latent of the visible ones `[B, 1 + K, D]`."""
        return self.encoder.run_blocks(gather_tokens(tokens, mask.ids_keep), all_layers=False)[-1]

    @torch.no_grad()
    def forward_target(self, tokens: Tensor, mask: PatchMask) -> Tensor:
        """Embedded tokens `[B, L, D]` -> target representations of the masked ones `[B, M, D]`."""
        x = gather_tokens(tokens, mask.ids_mask)
        x = torch.cat([self.encoder.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        for blk in self.target_blocks:
            x = blk(x)
        return self.target_norm(x)[:, 1:]

    def forward_m2d(self, batch: dict[str, Tensor]) -> M2DOutput:
        mask = PatchMask(batch["ids_keep"], batch["ids_mask"])
        clean = self.encoder.embed(batch["mel"])
        online = self.encoder.embed(batch["online_mel"]) if "online_mel" in batch else clean
        latent = self.forward_online(online, mask)
        predicted = self.predictor(latent, mask)
        target = self.forward_target(clean.detach(), mask)
        loss = m2d_loss(gather_tokens(predicted, mask.ids_mask), target, self.target_standardise)
        return M2DOutput(loss, latent, predicted, target)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Training step input -> (loss, stats to log)."""
        out = self.forward_m2d(batch)
        return out.loss, {"loss_m2d": out.loss.detach(), **self.target_stats(out.target)}

    @staticmethod
    @torch.no_grad()
    def target_stats(target: Tensor) -> dict[str, Tensor]:
        """Collapse monitor: spread of the unit-normalised targets across tokens (0 = collapsed)."""
        t = F.normalize(target.float().flatten(0, 1), dim=-1)
        return {"target_spread": t.std(dim=0).mean()}

    # -- EMA ---------------------------------------------------------------------------------------
    def online_parameters(self) -> list[Tensor]:
        return [*self.encoder.blocks.parameters(), *self.encoder.norm.parameters()]

    def target_parameters(self) -> list[Tensor]:
        return [*self.target_blocks.parameters(), *self.target_norm.parameters()]

    @torch.no_grad()
    def update_target(self, decay: float) -> None:
        """target <- decay * target + (1 - decay) * online, for the blocks and the final norm."""
        target, online = self.target_parameters(), self.online_parameters()
        torch._foreach_mul_(target, decay)
        torch._foreach_add_(target, online, alpha=1.0 - decay)
        self.ema_updates += 1

    def copy_online_to_target(self) -> None:
        """Start the target from the online weights (used when only encoder weights are known)."""
        with torch.no_grad():
            for t, o in zip(self.target_parameters(), self.online_parameters()):
                t.copy_(o)
