"""The M2D / M2D-X learning probe (`train.probe_every`): fixed data in, `probe/...` scalars out.

`M2DProbe(model, step)` is the recipe's `probe` (see `upstreams.training.loop`); the metrics are the
pure functions of `upstreams.training.probe`. Choices, and why:

- **Probe crops** (RankMe and floors): the first `PROBE_CLIPS` segments of a permutation of the
  corpus seeded by (train.seed, "probe"), each cut at its centre (shorter ones padded with the
  corpus mean, as training pads), with one fixed random mask (and, for M2D-X with noise, one fixed
  noise draw). They are *not* removed from the training corpus: excluding them would make a run
  with probes train on other data than one without. These numbers describe the geometry of the
  features and the loss landscape on fixed inputs, not generalisation, so that costs nothing.
- **RankMe** of the online encoder (the features downstream tasks use: every patch visible) and of
  the target encoder on the same whole crops, per clip (mean over patch tokens, CLS excluded:
  `rankme_online`, `rankme_target`) and per token (a fixed subset of `PROBE_TOKENS` token rows:
  `rankme_online_tokens`, `rankme_target_tokens`). Upper bound: min(rows, embed_dim).
- **Floors** against the current targets of the masked probe crops, exactly as `M2D.forward_m2d`
  computes them (target encoder on the masked patches only, layer-normed): `floor_constant`,
  `floor_position` (both exact minima over such predictors on this batch) and `floor_neighbour`
  (copy the target encoder's output, on the whole crop, of the nearest visible patch in time in the
  same frequency row). `loss` is the model's own M2D loss on the same batch (for M2D-X the M2D term;
  its online input is the noisy crop as in training), and `floor_margin` = min(floors) - loss:
  > 0 once the predictor beats every trivial solution.
- **kNN** (k = 5, leave-one-out, centred cosine) of the online encoder's clip embeddings (time
  mean of the final-layer frame features, as `scene_embeddings` computes them) on labelled clips:
  the corpus itself when its index has labels (respiratory: the ICBHI classes), otherwise the
  built ESC-50 clips and Speech Commands validation words of `data.profile` under the data root,
  read by path (`corpus.probe_clip_sets`), up to `PROBE_PER_CLASS` per class; or, with
  `data.probe_features`, the prebuilt log-mel of such clips (`prebuilt.probe_clips`: every clip
  it holds, for machines without the audio). `knn_<set>_step0`
  is the same probe on the run's step-0 weights (the init checkpoint for `--init` runs), computed
  once at the first probe (from a copy kept at start-up when a resumed run needs it) and repeated
  in every probe line so that the two can be read side by side. Without labelled clips only RankMe
  and the floors are logged, and the run says so once.

Nothing here draws from the global RNG, so probing does not change the training.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor

from ..frontend import LogMel, log_mel
from ..training.corpus import probe_clip_sets, read_segment, stratified_pick
from ..training.loop import seed_for
from ..training.probe import constant_floor, knn_accuracy, neighbour_floor, position_floor, rankme
from .data import MelCrops, mix_in_power
from .encoder import M2DEncoder
from .masking import PatchMask, make_mask
from .model import M2D, normalise_targets
from .prebuilt import probe_clips

__all__ = ["PROBE_CLIPS", "PROBE_PER_CLASS", "PROBE_TOKENS", "PROBE_CHUNK", "M2DProbe"]

# sized so that a probe costs ~20 s on the mini preset (2 CPU cores), < 10 % of 100 training steps
PROBE_CLIPS = 128  # corpus crops for RankMe and the floors
PROBE_PER_CLASS = 8  # labelled clips per class for the kNN probe
PROBE_TOKENS = 16384  # token rows for the token-level RankMe
PROBE_CHUNK = 32  # clips per forward pass
KNN_K = 5


def _centre(x: Tensor, width: int, fill: float) -> tuple[Tensor, int]:
    """`[F, T]` log-mel -> its centre `width` frames (float32), padded with `fill`; and the valid length."""
    t = x.shape[1]
    if t >= width:
        start = (t - width) // 2
        return x[:, start : start + width].float(), width
    out = torch.full((x.shape[0], width), fill)
    out[:, :t] = x.float()
    return out, t


class M2DProbe:
    """Fixed probe data of one run and the probe itself (module docstring); build on rank 0 only."""

    def __init__(self, cfg, model: M2D, data: MelCrops, log: Callable[[str], None] = print,
                 clips: int = PROBE_CLIPS, per_class: int = PROBE_PER_CLASS, tokens: int = PROBE_TOKENS):
        enc = cfg.encoder
        self.grid = enc.grid
        self.num_patches = self.grid[0] * self.grid[1]
        self.width = enc.input_frames
        gen = torch.Generator().manual_seed(seed_for(cfg.train.seed, "probe"))
        feats = data.features
        ids = torch.randperm(len(feats), generator=gen)[: min(clips, len(feats))].tolist()
        clean = torch.stack([_centre(feats.segment(i), self.width, data.mean)[0] for i in ids])
        mask = make_mask(len(ids), self.grid, cfg.mask_ratio, cfg.mask_span, gen)
        self.batch = {"mel": data.normalise(clean), "ids_keep": mask.ids_keep, "ids_mask": mask.ids_mask}
        if data.noise is not None:
            picks = torch.randint(0, len(data.noise), (len(ids),), generator=gen).tolist()
            noise = torch.stack([data._crop(data.noise, j, gen, tile=True) for j in picks])
            self.batch["online_mel"] = data.normalise(mix_in_power(clean, noise, data.eta))
        total = len(ids) * self.num_patches
        self.token_rows = torch.randperm(total, generator=gen)[: min(tokens, total)].sort().values

        self.sets = self._labelled_sets(cfg, data, per_class, log)
        self.knn_step0: dict[str, float] | None = None
        # a resumed run needs its step-0 weights for the kNN reference; a copy draws no random numbers
        self.step0_encoder = copy.deepcopy(model.encoder).cpu().eval() if self.sets else None
        what = ", ".join(f"{n} ({len(set(labels))} classes, {len(labels)} clips)" for n, (_, _, labels) in self.sets.items())
        log(f"probe every {cfg.train.probe_every} steps: RankMe and trivial floors on {len(ids)} corpus crops"
            + (f"; kNN on {what}" if what else "; no labelled clips (unlabelled corpus and no built esc50/speech_commands "
                                               f"in profile {cfg.data.profile!r}): no kNN probe"))

    # -- data ------------------------------------------------------------------------------------
    def _labelled_sets(self, cfg, data: MelCrops, per_class: int, log) -> dict[str, tuple[Tensor, Tensor, list[str]]]:
        """name -> (normalised log-mel `[N, F, W]` zero past each length, lengths `[N]`, labels)."""
        feats = data.features
        out = {}
        if feats.label_names():
            pick = stratified_pick(feats.labels, per_class, seed_for(cfg.train.seed, "probe-labels"))
            crops = [_centre(feats.segment(i), self.width, data.mean) for i in pick]
            if len({feats.labels[i] for i in pick}) >= 2:
                out[cfg.data.corpus] = self._stack(crops, data, [feats.labels[i] for i in pick])
            return out
        if cfg.data.probe_features:
            for name, clips in probe_clips(cfg.data.probe_features, cfg.frontend).items():
                if len({label for _, label in clips}) >= 2:
                    crops = [_centre(x, self.width, data.mean) for x, _ in clips]
                    out[name] = self._stack(crops, data, [label for _, label in clips])
            return out
        mel = LogMel(cfg.frontend).mel
        for name, segs in probe_clip_sets(cfg.data.profile, per_class, seed_for(cfg.train.seed, "probe-labels")).items():
            crops, labels, bad = [], [], []
            for seg in segs:
                try:
                    wav = read_segment(seg, cfg.frontend.sample_rate, f"{name} probe clip")
                except Exception as exc:  # noqa: BLE001 - a probe must not stop a run
                    bad.append(f"{seg.path.name}: {exc}")
                    continue
                with torch.no_grad():
                    crops.append(_centre(log_mel(wav, mel), self.width, data.mean))
                labels.append(seg.label)
            if bad:
                log(f"probe: skipped {len(bad)} unreadable {name} clip(s), first: {bad[0]}")
            if len(set(labels)) >= 2:
                out[name] = self._stack(crops, data, labels)
        return out

    def _stack(self, crops: list[tuple[Tensor, int]], data: MelCrops, labels: list[str]):
        mel = data.normalise(torch.stack([c for c, _ in crops]))[:, 0]
        lengths = torch.tensor([n for _, n in crops])
        valid = torch.arange(mel.shape[-1])[None, :] < lengths[:, None]
        return mel * valid[:, None, :], lengths, labels

    # -- the probe -------------------------------------------------------------------------------
    def __call__(self, model: M2D, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        out = self._loss_and_ranks(model, device)
        if self.sets:
            now = {name: self._knn(model.encoder, mel, lengths, labels, device)
                   for name, (mel, lengths, labels) in self.sets.items()}
            if self.knn_step0 is None:
                if step == 0:
                    self.knn_step0 = dict(now)
                else:
                    enc = self.step0_encoder.to(device)
                    self.knn_step0 = {name: self._knn(enc, mel, lengths, labels, device)
                                      for name, (mel, lengths, labels) in self.sets.items()}
                self.step0_encoder = None
            for name, acc in now.items():
                out[f"probe/knn_{name}"] = acc
                out[f"probe/knn_{name}_step0"] = self.knn_step0[name]
        return out

    def _loss_and_ranks(self, model: M2D, device: torch.device) -> dict[str, float]:
        n, length = self.batch["mel"].shape[0], self.num_patches
        loss_sum, targets, sources = 0.0, [], []
        clip_feats: dict[str, list[Tensor]] = {"online": [], "target": []}
        token_feats: dict[str, list[Tensor]] = {"online": [], "target": []}
        everything = torch.arange(length, device=device)
        for a in range(0, n, PROBE_CHUNK):
            b = min(n, a + PROBE_CHUNK)
            batch = {k: v[a:b].to(device) for k, v in self.batch.items()}
            res = model.forward_m2d(batch)  # the training loss and targets of these crops
            loss_sum += float(res.loss) * (b - a)
            targets.append(res.target.float().cpu())
            tokens = model.encoder.embed(batch["mel"])
            full = {"online": model.encoder.run_blocks(tokens, all_layers=False)[-1][:, 1:],
                    "target": model.forward_target(tokens, PatchMask(batch["ids_keep"], everything.expand(b - a, -1)))}
            sources.append(full["target"].float().cpu())
            rows = self.token_rows[(self.token_rows >= a * length) & (self.token_rows < b * length)] - a * length
            for key, x in full.items():
                x = x.float().cpu()
                clip_feats[key].append(x.mean(1))
                token_feats[key].append(x.reshape(-1, x.shape[-1])[rows])
        # the floors are computed on the targets exactly as the loss standardises them
        mode = getattr(model, "target_standardise", "token")
        target = normalise_targets(torch.cat(targets), mode)
        source = normalise_targets(torch.cat(sources), mode)
        ids_keep, ids_mask = self.batch["ids_keep"], self.batch["ids_mask"]
        floors = {
            "probe/floor_constant": constant_floor(target),
            "probe/floor_position": position_floor(target, ids_mask, length),
            "probe/floor_neighbour": neighbour_floor(target, source, ids_keep, ids_mask, self.grid),
        }
        loss = loss_sum / n
        out = {"probe/loss": loss, **floors, "probe/floor_margin": min(floors.values()) - loss}
        for key in ("online", "target"):
            out[f"probe/rankme_{key}"] = rankme(torch.cat(clip_feats[key]))
            out[f"probe/rankme_{key}_tokens"] = rankme(torch.cat(token_feats[key]))
        return out

    def _knn(self, encoder: M2DEncoder, mel: Tensor, lengths: Tensor, labels: list[str], device: torch.device) -> float:
        embs = []
        for a in range(0, len(labels), PROBE_CHUNK):
            (frames,), n_frames = encoder(mel[a : a + PROBE_CHUNK].to(device), lengths[a : a + PROBE_CHUNK],
                                          all_layers=False)
            valid = (torch.arange(frames.shape[1], device=device)[None, :] < n_frames.to(device)[:, None]).float()
            embs.append(((frames.float() * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)).cpu())
        return knn_accuracy(torch.cat(embs), labels, k=KNN_K)
