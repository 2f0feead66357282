"""The M2D audio ViT encoder (Niizumi et al., TASLP 2024), shared by `random`, `m2d`, `m2dx` and `score`.

A log-mel spectrogram `[B, 1, F, T]` is cut into patches (16x16 by default, 16x4 for 40 ms speech
frames), embedded by a strided convolution, given fixed 2-D sin-cos positions and a CLS token, and
run through pre-norm transformer blocks. Tokens are ordered `(f t)` (frequency-major) as in the
authors' code, and frame features are laid out `(f t) d -> t (f d)`: with 80 mel bins and 16-bin
patches a frame is 5 x D wide.

Audio longer than `input_frames` (the pretraining crop, 608 frames = 6 s) is encoded window by
window and the frames concatenated, so memory is bounded by the window, not by the file. Padded
patches are excluded from attention with a key mask, so an item's features never depend on the
batch it came in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EncoderConfig", "ENCODER_PRESETS", "sincos_pos_embed_2d", "Block", "M2DEncoder"]


@dataclass(frozen=True)
class EncoderConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int] = (16, 16)  # (mel bins, frames)
    input_frames: int = 608  # window in mel frames; multiple of patch_size[1]
    n_mels: int = 80
    qkv_bias: bool = True
    # which half of the position channels encodes frequency: "ft" (this suite) or "tf" (the
    # nttcslab/MAE `get_2d_sincos_pos_embed` layout, used by converted official checkpoints)
    pos_embed_order: str = "ft"

    def __post_init__(self) -> None:
        if self.pos_embed_order not in ("ft", "tf"):
            raise ValueError(f"pos_embed_order must be 'ft' or 'tf', got {self.pos_embed_order!r}")
        pf, pt = self.patch_size
        if self.n_mels % pf:
            raise ValueError(f"n_mels {self.n_mels} is not a multiple of the patch height {pf}")
        if self.input_frames % pt:
            raise ValueError(f"input_frames {self.input_frames} is not a multiple of the patch width {pt}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per window: (frequency, time)."""
        return self.n_mels // self.patch_size[0], self.input_frames // self.patch_size[1]

    @property
    def frame_dim(self) -> int:
        return self.grid[0] * self.embed_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown encoder config keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        return cls(**d)


ENCODER_PRESETS: dict[str, EncoderConfig] = {
    # seconds-long tests
    "tiny": EncoderConfig(embed_dim=64, depth=2, num_heads=2, patch_size=(16, 4), input_frames=208),
    # CPU pretraining in about an hour; 16x4 patches give 40 ms frames for speech tasks
    "mini": EncoderConfig(embed_dim=192, depth=6, num_heads=3, patch_size=(16, 4), input_frames=304),
    # the paper's ViT-B
    "base": EncoderConfig(),
    "base_16x4": EncoderConfig(patch_size=(16, 4), input_frames=304),
}


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.double().reshape(-1)[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid_f: int, grid_t: int, order: str = "ft") -> Tensor:
    """Fixed 2-D sin-cos positions `[grid_f, grid_t, dim]`: half the channels encode f, half t.

    `order="ft"` puts frequency in the first half; `"tf"` puts time first, which is what MAE's
    `get_2d_sincos_pos_embed` (and so every official M2D checkpoint) produces.
    """
    if dim % 4:
        raise ValueError(f"embed_dim {dim} must be a multiple of 4 for 2-D sin-cos positions")
    f, t = torch.meshgrid(torch.arange(grid_f), torch.arange(grid_t), indexing="ij")
    halves = [_sincos_1d(dim // 2, f), _sincos_1d(dim // 2, t)]
    emb = torch.cat(halves if order == "ft" else halves[::-1], dim=1)
    return emb.reshape(grid_f, grid_t, dim).float()


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x `[N, L, D]`; attn_mask `[N, 1, 1, L]` bool, True = may attend."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with timm's parameter names (norm1/attn/norm2/mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: tuple[int, int], embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """`[N, 1, F, T]` -> `[N, D, F/pf, T/pt]`."""
        return self.proj(x)


@dataclass
class WindowBatch:
    """Windows cut from a batch of spectrograms: which item and which output frames each one fills."""

    mel: Tensor  # [N, 1, n_mels, width]
    valid_patches: Tensor  # [N] time patches holding real audio
    item: list[int] = field(default_factory=list)
    first_frame: list[int] = field(default_factory=list)


class M2DEncoder(nn.Module):
    def __init__(self, config: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        gf, gt = config.grid
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, gf, gt, config.pos_embed_order), persistent=False)
        self.blocks = nn.ModuleList(
            [Block(d, config.num_heads, config.mlp_ratio, config.qkv_bias) for _ in range(config.depth)]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self._init_weights()

    # -- initialisation (MAE / timm ViT recipe) ---------------------------------------------------
    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_layers(self) -> int:
        """Hidden states returned: the patch embeddings plus one per block."""
        return self.config.depth + 1

    # -- token level (used by pretraining as well) ------------------------------------------------
    def embed(self, mel: Tensor) -> Tensor:
        """`[N, 1, F, T]` (T a multiple of the patch width) -> tokens with positions `[N, (f t), D]`."""
        x = self.patch_embed(mel)  # [N, D, gf, gt]
        n, d, gf, gt = x.shape
        if gt > self.pos_embed.shape[1]:
            raise ValueError(f"window of {gt} time patches exceeds the encoder's {self.pos_embed.shape[1]}")
        x = x.permute(0, 2, 3, 1) + self.pos_embed[:gf, :gt].to(x.dtype)
        return x.reshape(n, gf * gt, d)

    def run_blocks(self, tokens: Tensor, attn_mask: Tensor | None = None, all_layers: bool = True) -> list[Tensor]:
        """Prepend CLS, run the blocks; returns per-layer token states (CLS kept at index 0).

        The last state has the final LayerNorm applied, as in the authors' feature extractor.
        """
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        x = torch.cat([cls, tokens], dim=1)
        states = [x] if all_layers else []
        for i, blk in enumerate(self.blocks):
            x = blk(x, attn_mask)
            if i == len(self.blocks) - 1:
                x = self.norm(x)
            if all_layers or i == len(self.blocks) - 1:
                states.append(x)
        return states

    # -- frame level ------------------------------------------------------------------------------
    def to_frames(self, tokens: Tensor, grid_t: int) -> Tensor:
        """`[N, (f t), D]` (no CLS) -> `[N, t, (f D)]`."""
        n, length, d = tokens.shape
        gf = length // grid_t
        return tokens.reshape(n, gf, grid_t, d).permute(0, 2, 1, 3).reshape(n, grid_t, gf * d)

    def cut_windows(self, mel: Tensor, lengths: Tensor) -> WindowBatch:
        """Split `[B, n_mels, T]` spectrograms into encoder windows, padding only the last of each item."""
        pt = self.config.patch_size[1]
        window = self.config.input_frames
        longest = int(lengths.max())
        width = min(window, math.ceil(longest / pt) * pt)
        pieces, valid, items, firsts = [], [], [], []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, n, window):
                stop = min(start + window, n)
                piece = mel[b, :, start:stop]
                if piece.shape[-1] < width:
                    piece = F.pad(piece, (0, width - piece.shape[-1]))
                pieces.append(piece)
                valid.append(math.ceil((stop - start) / pt))
                items.append(b)
                firsts.append(start // pt)
        return WindowBatch(torch.stack(pieces).unsqueeze(1), torch.tensor(valid), items, firsts)

    def encode_windows(self, mel: Tensor, valid_patches: Tensor, all_layers: bool = True) -> list[Tensor]:
        """Windows `[N, 1, F, W]` -> per-layer frame features `[N, W/pt, (f D)]` (padded frames included)."""
        tokens = self.embed(mel)
        gf, gt = mel.shape[2] // self.config.patch_size[0], mel.shape[3] // self.config.patch_size[1]
        attn_mask = None
        if bool((valid_patches < gt).any()):
            t_valid = torch.arange(gt, device=mel.device)[None, :] < valid_patches.to(mel.device)[:, None]
            keys = torch.cat([t_valid.new_ones(len(mel), 1), t_valid.repeat(1, gf)], dim=1)  # CLS + (f t)
            attn_mask = keys[:, None, None, :]
        states = self.run_blocks(tokens, attn_mask, all_layers=all_layers)
        return [self.to_frames(s[:, 1:], gt) for s in states]

    def forward(self, mel: Tensor, lengths: Tensor, max_windows: int = 64, all_layers: bool = True) -> tuple[list[Tensor], Tensor]:
        """Normalised log-mel `[B, n_mels, T]` with valid frame counts -> (per-layer `[B, T', F*D]`, T' counts)."""
        pt = self.config.patch_size[1]
        lengths = lengths.cpu()
        out_lengths = (lengths + pt - 1) // pt
        wb = self.cut_windows(mel, lengths)
        n_layers = self.num_layers if all_layers else 1
        outs = [mel.new_zeros(len(lengths), int(out_lengths.max()), self.config.frame_dim) for _ in range(n_layers)]
        for g in range(0, len(wb.item), max_windows):
            sl = slice(g, g + max_windows)
            feats = self.encode_windows(wb.mel[sl], wb.valid_patches[sl], all_layers=all_layers)
            for j, (b, first, nv) in enumerate(zip(wb.item[sl], wb.first_frame[sl], wb.valid_patches[sl].tolist())):
                for layer, f in enumerate(feats):
                    outs[layer][b, first : first + nv] = f[j, :nv].to(outs[layer].dtype)
        return outs, out_lengths
