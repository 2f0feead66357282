"""M2D pretraining data: a log-mel cache built once per corpus, and seeded random crops from it.

Decoding audio and computing log-mel every step would make the data pipeline the bottleneck on
CPU, so every segment of the corpus index is converted once into un-normalised log-mel frames
(float16) and stored as one frame-major array `[total_frames, n_mels]` (`frames.f16`) plus
`meta.json` (segment offsets, labels, front-end config). The array is memory-mapped, so the cache
can exceed RAM and several DDP processes share one copy in the page cache. The cache directory is
keyed by the index contents, the audio files' sizes and mtimes, and the front-end config; it is
written atomically, so a killed build is simply redone.

`MelCrops` turns the cache into training micro-batches: a seeded permutation per epoch fixes which
segment each clip position uses, and a generator seeded by (seed, step, micro-batch) draws crop
offsets, masks and noise, so a micro-batch is a pure function of its `Slot` (exact resume, DDP
ranks without coordination).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..fileio import atomic_directory
from ..locks import exclusive
from ..frontend import LogMel, LogMelConfig, log_mel
from ..training.corpus import Segment, read_index, read_segment, split_labels
from ..training.loop import EpochOrder, Slot
from .masking import make_mask

__all__ = ["MelFeatures", "load_features", "MelCrops", "mix_in_power"]

CACHE_VERSION = 1


def mix_in_power(clean: Tensor, noise: Tensor, eta: float) -> Tensor:
    """M2D-X background noise: log(eta * noise + (1 - eta) * clean) with both given as log mel power.

    Mixing happens in the linear power domain, as the paper describes; `logaddexp` does it without
    leaving the log domain, so no overflow for loud frames. eta = 0 returns `clean` unchanged.
    """
    if not 0.0 <= eta < 1.0:
        raise ValueError(f"noise mixing ratio eta must be in [0, 1), got {eta}")
    if eta == 0.0:
        return clean
    return torch.logaddexp(noise + math.log(eta), clean + math.log1p(-eta))


# -- the cache -------------------------------------------------------------------------------------
@dataclass
class MelFeatures:
    """Un-normalised log-mel of every segment of one corpus index."""

    frames: Tensor  # [total_frames, n_mels] float16 (memory-mapped)
    offsets: list[int]  # segment i is frames[offsets[i]:offsets[i + 1]]
    labels: list[str]  # per segment; "" = unlabelled
    index: Path
    directory: Path
    sources: list[str] | None = None  # per segment, the index's provenance column (None: not read)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def length(self, i: int) -> int:
        return self.offsets[i + 1] - self.offsets[i]

    def segment(self, i: int) -> Tensor:
        """`[n_mels, frames]` float16 view of segment `i`."""
        return self.frames[self.offsets[i] : self.offsets[i + 1]].T

    def label_names(self) -> list[str]:
        return sorted({name for lab in self.labels for name in split_labels(lab)})

    def norm_stats(self, max_segments: int, seed: int) -> tuple[float, float]:
        """Mean and std of the log-mel over (a seeded sample of) the segments: M2D's normalisation."""
        n = len(self)
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max_segments or n].tolist()
        total, sq, count = 0.0, 0.0, 0
        for i in pick:
            x = self.segment(i).double()
            total += float(x.sum())
            sq += float((x * x).sum())
            count += x.numel()
        mean = total / count
        return mean, math.sqrt(max(sq / count - mean * mean, 1e-12))


def _cache_key(index: Path, segments: list[Segment], frontend: LogMelConfig) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}".encode())
    h.update(json.dumps(frontend.to_dict(), sort_keys=True).encode())
    h.update(index.read_bytes())
    for path in sorted({s.path for s in segments}):
        st = path.stat() if path.exists() else None
        h.update(f"{path}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def load_features(
    index: str | Path,
    frontend: LogMelConfig,
    cache_dir: str | Path,
    log: Callable[[str], None] = print,
) -> MelFeatures:
    """The log-mel cache of `index`, built first if missing or stale."""
    index = Path(index).expanduser().resolve()
    segments = read_index(index)
    directory = Path(cache_dir).expanduser() / f"{index.parent.name}-{_cache_key(index, segments, frontend)}"
    if not (directory / "meta.json").exists():
        # one builder per cache across processes and hosts (two runs started together would each
        # spend minutes building the same frames); the others wait, then memory-map its result
        with exclusive(directory.parent / f".{directory.name}.lock", f"the log-mel cache {directory.name}", log):
            if not (directory / "meta.json").exists():
                _build(index, segments, frontend, directory, log)
    meta = json.loads((directory / "meta.json").read_text())
    offsets = meta["offsets"]
    frames = np.memmap(directory / "frames.f16", dtype=np.float16, mode="c", shape=(offsets[-1], meta["n_mels"]))
    return MelFeatures(torch.from_numpy(frames), offsets, meta["labels"], index, directory, [s.source for s in segments])


def _build(index: Path, segments: list[Segment], frontend: LogMelConfig, directory: Path, log) -> None:
    from tqdm import tqdm

    log(f"building the log-mel cache of {index} ({len(segments)} segments) in {directory}")
    mel = LogMel(frontend).mel
    offsets, labels = [0], []
    with atomic_directory(directory) as tmp:
        with open(tmp / "frames.f16", "wb") as fh:
            for i, seg in enumerate(tqdm(segments, desc="log-mel cache", unit="seg", mininterval=10.0)):
                wav = read_segment(seg, frontend.sample_rate, f"{index}:{i + 2}")
                with torch.no_grad():
                    x = log_mel(wav, mel)  # [n_mels, T]
                fh.write(x.T.contiguous().to(torch.float16).numpy().tobytes())
                offsets.append(offsets[-1] + x.shape[1])
                labels.append(seg.label)
        meta = {"version": CACHE_VERSION, "index": str(index), "frontend": frontend.to_dict(),
                "n_mels": frontend.n_mels, "offsets": offsets, "labels": labels}
        (tmp / "meta.json").write_text(json.dumps(meta))
    hours = offsets[-1] * frontend.hop_length / frontend.sample_rate / 3600
    log(f"log-mel cache ready: {len(segments)} segments, {hours:.2f} h, {directory}")


def is_speech(source: str) -> bool:
    """Whether a corpus index row is speech, by its provenance id (see the pretrain builder)."""
    return source.startswith("librispeech:")


def resample_by_source(features: MelFeatures, speech_share: float) -> list[int]:
    """Segment ids of one epoch: every segment once, or with `speech_share` in (0, 1) the non-speech
    segments repeated (or, when speech is the minority, the speech ones) so that about that fraction
    of the epoch's clips is speech. Deterministic, so an epoch's length and content are part of the run."""
    ids = list(range(len(features)))
    if not 0.0 <= speech_share < 1.0:
        raise ValueError(f"data.speech_share must be in [0, 1), got {speech_share}")
    if speech_share == 0.0:
        return ids
    if features.sources is None:
        raise ValueError(f"data.speech_share needs the source column of a corpus index; {features.index} has none "
                         f"(a prebuilt corpus): set data.speech_share=0")
    speech = [i for i in ids if is_speech(features.sources[i])]
    other = [i for i in ids if not is_speech(features.sources[i])]
    if not speech or not other:
        return ids
    # repeat counts r_s, r_o >= 1 with r_s * n_s / (r_s * n_s + r_o * n_o) ~ speech_share
    ratio = speech_share * len(other) / ((1.0 - speech_share) * len(speech))  # wanted r_s / r_o
    r_s, r_o = (max(1, round(ratio)), 1) if ratio >= 1 else (1, max(1, round(1 / ratio)))
    return speech * r_s + other * r_o


# -- training batches ------------------------------------------------------------------------------
class MelCrops:
    """Micro-batches of random `input_frames` crops with their masks (a `BatchSource`).

    A batch holds `mel [B, 1, n_mels, input_frames]` (normalised, float32), `ids_keep [B, K]` and
    `ids_mask [B, M]`; with noise, `online_mel` (the noisy version the online encoder sees); with
    labels, `labels [B, C]` (multi-hot) and `labelled [B]` (1 = has a label).
    Segments shorter than a crop are padded with the corpus mean (0 after normalisation), or with
    `pack_short` filled with crops of other segments (as language models pack documents): padding
    lets the model spend capacity predicting constant pads from their position, and on the mini
    corpus many non-speech recordings are shorter than a crop.
    `speech_share` (0 = the corpus as it is) resamples each epoch so that this fraction of clips
    comes from speech segments (index source `librispeech:...`), repeating the others as needed:
    the general mini corpus is mostly TTS speech by count and by hours.
    `mask_span` > 0 masks time spans (`masking.time_span_mask`) instead of random patches.
    """

    def __init__(
        self,
        features: MelFeatures,
        input_frames: int,
        norm_stats: tuple[float, float],
        num_patches: int,
        mask_ratio: float,
        seed: int,
        noise: MelFeatures | None = None,
        eta: float = 0.0,
        label_names: list[str] | None = None,
        *,
        grid: tuple[int, int] | None = None,
        mask_span: int = 0,
        pack_short: bool = False,
        speech_share: float = 0.0,
    ):
        self.features = features
        self.input_frames = input_frames
        self.mean, self.std = float(norm_stats[0]), float(norm_stats[1])
        self.num_patches = num_patches
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.noise = noise if eta > 0 else None
        self.eta = eta
        self.label_names = label_names
        self.grid = grid if grid is not None else (1, num_patches)
        if self.grid[0] * self.grid[1] != num_patches:
            raise ValueError(f"patch grid {self.grid} does not hold {num_patches} patches")
        self.mask_span = mask_span
        self.pack_short = pack_short
        self.items = resample_by_source(features, speech_share)
        self.samples_per_epoch = len(self.items)
        self._order = EpochOrder(len(self.items), seed)

    def segment_ids(self, slot: Slot) -> list[int]:
        return [self.items[i] for i in self._order.items(slot)]

    def _crop(self, feats: MelFeatures, i: int, gen: torch.Generator, tile: bool = False) -> Tensor:
        w = self.input_frames
        x = feats.segment(i)
        t = x.shape[1]
        if t > w:
            start = int(torch.randint(0, t - w + 1, (1,), generator=gen))
            return x[:, start : start + w].float()
        if tile:  # noise: repeat short recordings rather than pad them with silence
            return x.float().repeat(1, math.ceil(w / t))[:, :w]
        out = torch.full((x.shape[0], w), self.mean)
        out[:, :t] = x.float()
        filled = t
        while self.pack_short and filled < w:  # append crops of other random segments until full
            j = self.items[int(torch.randint(0, len(self.items), (1,), generator=gen))]
            y = feats.segment(j)
            n = min(y.shape[1], w - filled)
            start = int(torch.randint(0, y.shape[1] - n + 1, (1,), generator=gen))
            out[:, filled : filled + n] = y[:, start : start + n].float()
            filled += n
        return out

    def get(self, slot: Slot) -> dict[str, Tensor]:
        gen = slot.generator(self.seed)
        ids = self.segment_ids(slot)
        clean = torch.stack([self._crop(self.features, i, gen) for i in ids])  # [B, F, W] log-mel
        mask = make_mask(len(ids), self.grid, self.mask_ratio, self.mask_span, gen)
        batch = {"mel": self.normalise(clean), "ids_keep": mask.ids_keep, "ids_mask": mask.ids_mask}
        if self.noise is not None:
            picks = torch.randint(0, len(self.noise), (len(ids),), generator=gen).tolist()
            noise = torch.stack([self._crop(self.noise, j, gen, tile=True) for j in picks])
            batch["online_mel"] = self.normalise(mix_in_power(clean, noise, self.eta))
        if self.label_names is not None:
            col = {name: c for c, name in enumerate(self.label_names)}
            labels = torch.zeros(len(ids), len(self.label_names))
            for row, i in enumerate(ids):
                for name in split_labels(self.features.labels[i]):
                    labels[row, col[name]] = 1.0
            batch["labels"] = labels
            batch["labelled"] = (labels.sum(1) > 0).float()
        return batch

    def normalise(self, x: Tensor) -> Tensor:
        """`[B, F, W]` log-mel -> `[B, 1, F, W]` standardised with the corpus statistics."""
        return ((x - self.mean) / self.std).unsqueeze(1)
