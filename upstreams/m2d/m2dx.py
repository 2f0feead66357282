"""M2D-X (Niizumi et al., TASLP 2024, Sec. "M2D for X"): M2D plus an offline branch with its own task.

    online tokens = encoder outputs at the visible patches + predictor outputs at the masked ones,
                    in patch order `[B, L, D]`
    offline       = tokens concatenated per time frame `[B, T, F*D]` -> linear -> `[B, T, E]`
    loss          = w_m2d * L_m2d + w_distill * L_distill + w_sup * L_sup

Offline tasks implemented here:
- distillation from a frozen M2D teacher: 2 - 2 cos between the offline frame embeddings (projected to
  the teacher's width if needed) and the teacher's final-layer frame features of the clean input,
  standardised per dimension (`standardise_target`, default on in every preset) with the mean and std
  that `m2dx_stats.teacher_frame_stats` computes ONCE at the start of the run from clean training
  crops and `set_distill_stats` stores in the `distill_mean`/`distill_std` buffers (saved with the
  model). The authors' code standardises the target too; without it the cosine is mostly won by
  the teacher's common per-dimension offset, which a content-blind student can predict;
- supervised classification of the clip: time-mean of the offline embeddings -> linear -> BCE over
  multi-hot labels (or CE over single labels); clips without a label do not count.

Background noise (see `data.mix_in_power`, level-matched first by `m2dx_stats.LevelMatched`): the
online encoder sees the noisy mix (`batch["online_mel"]`), while the target encoder and the teacher
see the clean input (`batch["mel"]`; tested), so the model learns to denoise, as the paper describes.
Note that the authors' public code appears to order the pair the other way (online clean, target
noisy); we follow the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import EncoderConfig, M2DEncoder
from .masking import PatchMask, gather_tokens, merge_tokens
from .model import M2D, PredictorConfig

__all__ = ["M2DX", "cosine_loss"]


def cosine_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """`[B, T, E]` x `[B, T, E]` -> 2 - 2 cos per frame, averaged (the M2D loss scale)."""
    cos = (F.normalize(student.float(), dim=-1) * F.normalize(teacher.float(), dim=-1)).sum(-1)
    return (2.0 - 2.0 * cos).mean()


class M2DX(M2D):
    def __init__(
        self,
        encoder: EncoderConfig,
        predictor: PredictorConfig = PredictorConfig(),
        offline_dim: int = 0,
        teacher: M2DEncoder | None = None,
        teacher_input: tuple[float, float] = (1.0, 0.0),
        num_classes: int = 0,
        weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        supervised_loss: str = "bce",
        standardise_target: bool = True,
    ):
        """
        offline_dim: offline embedding width; 0 = the teacher's frame width (else the encoder's).
        teacher: frozen M2D encoder for distillation (None = no distillation).
        teacher_input: (scale, shift) mapping this run's normalised log-mel to the teacher's
            normalisation, for a teacher trained with other statistics.
        num_classes: classes of the supervised task (0 = none).
        weights: (m2d, distill, supervised) loss weights.
        standardise_target: standardise the teacher's frames per dimension with `distill_mean` /
            `distill_std` (set them with `set_distill_stats` before training; they start as 0 / 1).
        """
        super().__init__(encoder, predictor)
        if supervised_loss not in ("bce", "ce"):
            raise ValueError(f"supervised_loss must be bce or ce, got {supervised_loss!r}")
        self.grid = encoder.grid
        if teacher is not None:
            if teacher.config.patch_size[1] != encoder.patch_size[1] or teacher.config.n_mels != encoder.n_mels:
                raise ValueError(
                    f"teacher patches {teacher.config.patch_size} / {teacher.config.n_mels} mels do not give the "
                    f"student's frames ({encoder.patch_size} / {encoder.n_mels} mels); use a teacher of the same patch width"
                )
            if teacher.config.grid[1] < encoder.grid[1]:
                raise ValueError(f"teacher window of {teacher.config.input_frames} frames is shorter than the crop {encoder.input_frames}")
            teacher.requires_grad_(False).eval()
        self.teacher = teacher
        self.register_buffer("teacher_input", torch.tensor(teacher_input, dtype=torch.float32))
        teacher_dim = teacher.config.frame_dim if teacher is not None else 0
        self.standardise_target = bool(standardise_target) and teacher is not None
        if teacher is not None:
            self.register_buffer("distill_mean", torch.zeros(teacher_dim))
            self.register_buffer("distill_std", torch.ones(teacher_dim))
        self.offline_dim = offline_dim or teacher_dim or encoder.frame_dim
        self.offline = nn.Linear(encoder.frame_dim, self.offline_dim)
        self.distill_head = (
            nn.Linear(self.offline_dim, teacher_dim) if teacher is not None and teacher_dim != self.offline_dim else None
        )
        self.classifier = nn.Linear(self.offline_dim, num_classes) if num_classes else None
        self.weights = tuple(float(w) for w in weights)
        self.supervised_loss = supervised_loss
        for m in (self.offline, self.distill_head, self.classifier):
            if m is not None:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def train(self, mode: bool = True) -> "M2DX":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def offline_embeddings(self, latent: Tensor, predicted: Tensor, mask: PatchMask) -> Tensor:
        """Online tokens (visible: encoder, masked: predictor) -> offline frame embeddings `[B, T, E]`."""
        tokens = merge_tokens(latent[:, 1:], gather_tokens(predicted, mask.ids_mask), mask)
        return self.offline(self.encoder.to_frames(tokens, self.grid[1]))

    @torch.no_grad()
    def teacher_frames(self, mel: Tensor) -> Tensor:
        """Clean normalised log-mel `[B, 1, F, T]` -> teacher final-layer frames `[B, T/pt, F/pf * Dt]`."""
        scale, shift = self.teacher_input[0], self.teacher_input[1]
        x = self.teacher.embed(mel * scale.to(mel.dtype) + shift.to(mel.dtype))
        last = self.teacher.run_blocks(x, all_layers=False)[-1][:, 1:]
        return self.teacher.to_frames(last, mel.shape[-1] // self.teacher.config.patch_size[1])

    @torch.no_grad()
    def set_distill_stats(self, mean: Tensor, std: Tensor) -> None:
        """Per-dimension statistics of the teacher's frames (`m2dx_stats.teacher_frame_stats`)."""
        if mean.shape != self.distill_mean.shape or std.shape != self.distill_std.shape or not bool((std > 0).all()):
            raise ValueError(f"distillation statistics must be [{self.distill_mean.numel()}] with std > 0")
        self.distill_mean.copy_(mean)
        self.distill_std.copy_(std)

    @torch.no_grad()
    def distill_target(self, mel: Tensor) -> Tensor:
        """The distillation target of a clean batch: teacher frames, standardised when `standardise_target`."""
        frames = self.teacher_frames(mel)
        if not self.standardise_target:
            return frames
        return (frames.float() - self.distill_mean) / self.distill_std

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        w_m2d, w_distill, w_sup = self.weights
        out = self.forward_m2d(batch)
        mask = PatchMask(batch["ids_keep"], batch["ids_mask"])
        offline = self.offline_embeddings(out.latent, out.predicted, mask)
        loss = w_m2d * out.loss
        stats = {"loss_m2d": out.loss.detach(), **self.target_stats(out.target)}
        if self.teacher is not None and w_distill > 0:
            student = self.distill_head(offline) if self.distill_head is not None else offline
            distill = cosine_loss(student, self.distill_target(batch["mel"]))  # clean input
            loss = loss + w_distill * distill
            stats["loss_distill"] = distill.detach()
        if self.classifier is not None and w_sup > 0:
            sup, acc = self.supervised(offline, batch["labels"], batch["labelled"])
            loss = loss + w_sup * sup
            stats.update(loss_sup=sup.detach(), sup_acc=acc)
        return loss, stats

    def supervised(self, offline: Tensor, labels: Tensor, labelled: Tensor) -> tuple[Tensor, Tensor]:
        """Clip classification from the time-mean offline embedding; only labelled clips count."""
        logits = self.classifier(offline.mean(dim=1)).float()
        if self.supervised_loss == "bce":
            per_clip = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1)
            correct = ((logits > 0).float() == labels).all(dim=1).float()
        else:
            per_clip = F.cross_entropy(logits, labels.argmax(dim=1), reduction="none")
            correct = (logits.argmax(dim=1) == labels.argmax(dim=1)).float()
        n = labelled.sum().clamp_min(1.0)
        return (per_clip * labelled).sum() / n, ((correct * labelled).sum() / n).detach()
