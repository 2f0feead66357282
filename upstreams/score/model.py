"""SCORE: self-supervised correspondence fine-tuning (Meghanani & Hain, ICASSP 2024).

A frozen teacher (the base upstream) and a student (a copy of it whose top k layers train) encode
the two versions of an utterance - the original and a speed- and pitch-perturbed copy, in random
order. A projection shared by both sides maps the top layer's frames to 256 dims, frames are
L2-normalised, and the loss is the soft-DTW divergence between the two frame sequences divided by
their total length (`upstreams.score.soft_dtw.score_loss`). Soft-DTW aligns sequences of different
lengths, so the student learns to keep what stays the same under the perturbation - the content -
and to drop speaker- and rate-specific detail. Only the student's top layers receive gradients;
the teacher's outputs are computed without a graph.

The projection is FROZEN (a seeded random linear map) by default, not trained. When the shared head
maps every frame to one vector, the divergence is 0 (equal lengths) or a content-blind constant,
whatever the input (tested), and the head is the only trainable part on the teacher's side, so training it lets the loss fall without
the encoder learning anything. Measured (`collapse.py` metrics; random `mini`-architecture M2D
base, top 2 layers, 80 steps of 4 utterances of <= 4 s from the tiny LibriSpeech-layout corpus,
AdamW 5e-5, 8 warm-up steps, one thread), window-mean loss at step 20 -> 80:

| projection | loss 20 -> 80 | cos between utterances, projected (student / teacher) 0 -> 80 | ||W-W0||/||W0|| blocks / projection |
| `trained` (paper) | 0.0367 -> 0.0047 | 0.848 -> 0.981 / 0.848 -> 0.977 | 0.0075 / 0.062 |
| `frozen` (default) | 0.0559 -> 0.0468 | 0.851 -> 0.896 / 0.851 (fixed) | 0.0091 / 0 |
| `none` (unprojected) | 0.0601 -> 0.0507 | 0.837 -> 0.879 / 0.837 (fixed) | 0.0094 / 0 |

With a trained head the loss falls 8x (as in the issue's 0.19 -> 0.0039) while the head moves 8x
more than the tuned blocks and squeezes even the frozen teacher's frames of different utterances
together (0.85 -> 0.98): the projection collapses. Frozen (or no) projection anchors the target
to the frozen teacher, so the loss can only fall by the student matching the teacher's content
across the perturbation; the blocks move more (0.91 % against 0.75 %). `frozen` keeps the
paper's 256-d head and cost; `projection=trained` reproduces the paper's literal setting,
`projection=none` puts the loss on the L2-normalised top-layer frames.

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

__all__ = ["ScoreModel", "top_layer_parameters", "PROJECTIONS"]

PROJECTIONS = ("trained", "frozen", "none")


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

    def __init__(self, base: nn.Module, top_layers: int = 2, proj_dim: int = 256, gamma: float = 0.1,
                 projection: str = "frozen"):
        """projection: `trained` (the paper's shared head, trained with the student: can collapse, see the
        module docstring), `frozen` (the same random linear map, never trained) or `none` (the loss on
        the L2-normalised top-layer frames themselves)."""
        super().__init__()
        if projection not in PROJECTIONS:
            raise OptionError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
        self.student = base
        self.teacher = copy.deepcopy(base).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        trainable = {id(p) for p in top_layer_parameters(self.student, top_layers)}
        for p in self.student.parameters():
            p.requires_grad_(id(p) in trainable)
        self.projection = nn.Linear(int(base.hidden_sizes[-1]), proj_dim) if projection != "none" else nn.Identity()
        self.projection.requires_grad_(projection == "trained")
        self.projection_mode = projection
        self.gamma = gamma
        self.top_layers = top_layers

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # always frozen
        return self

    def project(self, frames: Tensor) -> Tensor:
        return F.normalize(self.projection(frames), p=2, dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        s_out = self.student(_unpad(batch["student_wav"], batch["student_len"]))
        with torch.no_grad():
            t_out = self.teacher(_unpad(batch["teacher_wav"], batch["teacher_len"]))
        device = s_out.hidden_states[-1].device
        x = self.project(s_out.hidden_states[-1])
        y = self.project(t_out.hidden_states[-1].detach())
        loss = score_loss(x.float(), y.float(), self.gamma, s_out.lengths.to(device), t_out.lengths.to(device))
        frames = (s_out.lengths + t_out.lengths).float().mean().to(device)
        return loss, {"frames_per_pair": frames}
