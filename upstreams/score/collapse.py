"""SCORE's collapse check, logged every `train.probe_every` steps (and at step 0 and the last step).

SCORE's loss (soft-DTW divergence of L2-normalised projected frames) is 0 whenever every frame maps
to the same unit vector, whatever the audio. A falling loss therefore says nothing by itself: it
must fall while different utterances stay different and while the tuned encoder layers actually
move. On a fixed set of utterances (the first `utterances` of a seeded shuffle of the corpus, the
first `max_seconds` of each, never perturbed) the probe logs:

- `probe/cos_between_proj`: mean cosine between projected frames of DIFFERENT utterances (student);
  `probe/cos_between_proj_teacher`: the same for the frozen teacher's frames through the current
  projection (a rise here is the projection alone collapsing: the teacher never changes);
- `probe/cos_between_top`: the same for the unprojected top-layer frames of the student, and
  `probe/cos_between_top_mean` between the utterances' time-mean top-layer features;
- `probe/wchange_blocks`: ||W - W0|| / ||W0|| over every tuned parameter of the student (its top
  layers and output norm), and `probe/wchange_projection` for the projection (0 when it is frozen).

A cosine near 1 between different utterances is collapse; a loss that falls while
`wchange_blocks` stays near 0 and `wchange_projection` grows is the projection doing the work.
Everything is computed without the global RNG, so a run with the probe trains exactly as without.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training.corpus import read_segment

__all__ = ["between_cosine", "between_cosine_of_means", "relative_change", "CollapseProbe"]


def _valid(lengths: Tensor, t: int) -> Tensor:
    return (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).float()  # [B, T]


def _off_diagonal_mean(g: Tensor) -> float:
    n = g.shape[0]
    if n < 2:
        raise ValueError("the collapse check needs at least 2 utterances")
    return float((g.sum() - g.diagonal().sum()) / (n * (n - 1)))


def between_cosine(frames: Tensor, lengths: Tensor) -> float:
    """Mean cosine between a frame of utterance i and a frame of utterance j != i, over all such pairs.

    With unit frames u, the mean over frame pairs of (i, j) is m_i . m_j, m_i the mean unit frame of i.
    """
    u = F.normalize(frames.float(), dim=-1)
    valid = _valid(lengths, u.shape[1])
    m = (u * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)
    return _off_diagonal_mean(m @ m.T)


def between_cosine_of_means(frames: Tensor, lengths: Tensor) -> float:
    """Mean cosine between the time-mean features of different utterances."""
    valid = _valid(lengths, frames.shape[1])
    m = (frames.float() * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)
    m = F.normalize(m, dim=-1)
    return _off_diagonal_mean(m @ m.T)


def relative_change(params: list[Tensor], initial: list[Tensor]) -> float:
    """||W - W0|| / ||W0|| over a list of tensors taken together (0 for an empty list)."""
    if not params:
        return 0.0
    diff = sum(float((p.detach().float().cpu() - p0).pow(2).sum()) for p, p0 in zip(params, initial))
    base = sum(float(p0.pow(2).sum()) for p0 in initial)
    return (diff / max(base, 1e-30)) ** 0.5


class CollapseProbe:
    """`probe(model, step) -> {probe/...: float}` for the shared training loop (see the module docstring)."""

    def __init__(self, model: nn.Module, data, utterances: int = 8, max_seconds: float = 6.0, seed: int = 0):
        if utterances < 2:
            raise ValueError(f"the collapse check needs at least 2 utterances, got {utterances}")
        order = torch.randperm(len(data.segments), generator=torch.Generator().manual_seed(seed)).tolist()
        limit = int(max_seconds * data.sample_rate) if max_seconds > 0 else None
        self.wavs = [read_segment(data.segments[i], data.sample_rate, str(data.index))[:limit]
                     for i in order[:utterances]]
        if len(self.wavs) < 2:
            raise ValueError(f"{data.index}: the collapse check needs at least 2 utterances, the corpus has {len(self.wavs)}")
        self.tuned = [p for p in model.student.parameters() if p.requires_grad]
        self.tuned0 = [p.detach().float().cpu().clone() for p in self.tuned]
        self.projection = list(model.projection.parameters())
        self.projection0 = [p.detach().float().cpu().clone() for p in self.projection]
        self._teacher: tuple[Tensor, Tensor] | None = None  # the frozen teacher's top layer, computed once

    @torch.no_grad()
    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        wavs = [w.to(device) for w in self.wavs]
        out = model.student(wavs)
        top, lengths = out.hidden_states[-1].float(), out.lengths.to(device)
        if self._teacher is None:
            t_out = model.teacher(wavs)
            self._teacher = (t_out.hidden_states[-1].detach().float(), t_out.lengths.to(device))
        t_top, t_lengths = self._teacher
        # cosines near 1 are what matters: bf16 (the training autocast) resolves only ~0.004 there
        with torch.autocast(device.type, enabled=False):
            return self._metrics(model, top, lengths, t_top, t_lengths)

    def _metrics(self, model, top, lengths, t_top, t_lengths) -> dict[str, float]:
        return {
            "probe/cos_between_proj": between_cosine(model.project(top), lengths),
            "probe/cos_between_proj_teacher": between_cosine(model.project(t_top), t_lengths),
            "probe/cos_between_top": between_cosine(top, lengths),
            "probe/cos_between_top_mean": between_cosine_of_means(top, lengths),
            "probe/wchange_blocks": relative_change(self.tuned, self.tuned0),
            "probe/wchange_projection": relative_change(self.projection, self.projection0),
        }
