"""SCORE: self-supervised correspondence fine-tuning (Meghanani & Hain, ICASSP 2024).

A frozen teacher (the base upstream) and a student (a copy of it whose top k layers train) encode
the two versions of an utterance - the original and a speed- and pitch-perturbed copy, in random
order. A projection shared by both sides maps the top layer's frames to 256 dims, frames are
L2-normalised, and the loss is the soft-DTW divergence between the two frame sequences divided by
their total length (`upstreams.score.soft_dtw.score_loss`). Soft-DTW aligns sequences of different
lengths, so the student learns to keep what stays the same under the perturbation - the content -
and to drop speaker- and rate-specific detail. Only the student's top layers and the projection
receive gradients; the teacher's outputs are computed without a graph.

Any upstream whose layers can be enumerated works as a base: it must expose `layer_modules()`
(blocks, bottom to top) and may expose `output_modules()` (e.g. a final norm, trained with the
top block).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OptionError
from .soft_dtw import score_loss

__all__ = ["ScoreModel", "top_layer_parameters"]


def top_layer_parameters(upstream: nn.Module, k: int) -> list[nn.Parameter]:
    """Parameters of the top `k` layers (plus output modules); raises if the upstream hides its layers."""
    if not hasattr(upstream, "layer_modules"):
        raise OptionError(
            f"upstream '{getattr(upstream, 'name', type(upstream).__name__)}' does not expose its layers "
            f"(layer_modules()), so SCORE cannot train only its top layers; choose an upstream with layers (m2d, m2dx, random)"
        )
    layers = list(upstream.layer_modules())
    if not 1 <= k <= len(layers):
        raise OptionError(f"top_layers={k}: the upstream has {len(layers)} layers; choose 1..{len(layers)}")
    mods = layers[-k:] + list(getattr(upstream, "output_modules", lambda: [])())
    return [p for m in mods for p in m.parameters()]


def _unpad(wavs: Tensor, lengths: Tensor) -> list[Tensor]:
    return [w[: int(n)] for w, n in zip(wavs, lengths)]


class ScoreModel(nn.Module):
    """`forward(batch) -> (loss, stats)` for the shared training loop.

    batch: `student_wav [B, S]` + `student_len [B]`, `teacher_wav [B, S']` + `teacher_len [B]`.
    """

    def __init__(self, base: nn.Module, top_layers: int = 2, proj_dim: int = 256, gamma: float = 0.1):
        super().__init__()
        self.student = base
        self.teacher = copy.deepcopy(base).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        trainable = {id(p) for p in top_layer_parameters(self.student, top_layers)}
        for p in self.student.parameters():
            p.requires_grad_(id(p) in trainable)
        self.projection = nn.Linear(int(base.hidden_sizes[-1]), proj_dim)
        self.gamma = gamma
        self.top_layers = top_layers

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # always frozen
        return self

    def _project(self, frames: Tensor) -> Tensor:
        return F.normalize(self.projection(frames), p=2, dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        s_out = self.student(_unpad(batch["student_wav"], batch["student_len"]))
        with torch.no_grad():
            t_out = self.teacher(_unpad(batch["teacher_wav"], batch["teacher_len"]))
        device = self.projection.weight.device
        x = self._project(s_out.hidden_states[-1])
        y = self._project(t_out.hidden_states[-1].detach())
        loss = score_loss(x.float(), y.float(), self.gamma, s_out.lengths.to(device), t_out.lengths.to(device))
        frames = (s_out.lengths + t_out.lengths).float().mean().to(device)
        return loss, {"frames_per_pair": frames}
