"""Build the small log-mel corpus the GPU check carries: `python -m upstreams.m2d.carried_corpus OUT`.

`scripts/gpu_corpus.sh` calls this where the pretraining corpus is built; `scripts/gpu_check.sh`
then pretrains on `OUT/train` (`data.features`) and probes with `OUT/probe`
(`data.probe_features`) on a machine that has neither the audio nor a network. Both are
`prebuilt.write_prebuilt` folders (float16 log-mel, meta.json index, SHA256SUMS).

What goes in, and why:
- `train/`: a seeded sample of the `general` pretraining corpus of `--profile` (default `mini`,
  else `tiny` when mini is not built), each segment cut to a seeded window of `--segment-frames`
  (default 1.5 x the preset's input window, so random crops still vary), until `--train-mib`.
  Only training material: the corpus builder already keeps evaluation audio out of it.
- `probe/`: the clips the pretraining probe itself would read (`corpus.probe_clip_sets`, same
  seed), fewer of them (`--probe-per-class`, the first `--probe-classes` classes of each set), each
  cut to its centre input window, which is all the probe looks at (`probe._centre`).
Measured on the mini profile with the defaults: train 108 of 2310 segments (6.6 min, 6.0 MiB); probe
ESC-50 60 clips of 15 classes + Speech Commands 40 clips of 10 words (3.4 MiB); 9 MiB in all, 26 MiB
with the wheelhouse. 13 s to build.
The front end is the `--config` preset's; `open_prebuilt` refuses a run whose front end differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

from ..frontend import LogMel, log_mel
from ..training.config import ConfigError
from ..training.corpus import data_root, probe_clip_sets, read_index, read_segment
from ..training.loop import seed_for
from .prebuilt import write_prebuilt

__all__ = ["build_carried_corpus", "main"]

MiB = 1 << 20


def _profile(root: Path, profile: str | None) -> str:
    if profile:
        return profile
    for name in ("mini", "tiny"):
        if (root / name / "pretrain" / "general" / "index.csv").is_file():
            return name
    raise ConfigError(f"no pretraining corpus under {root} (looked for mini, then tiny): build one with "
                      f"`bench data build --profile mini` or set BENCH_DATA / --root")


def _relative(path: Path, base: Path) -> str:
    """`path` relative to the data it came from (no machine's absolute path in the carried index)."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name


def _centre_cut(x: torch.Tensor, width: int) -> torch.Tensor:
    """The centre `width` frames as `probe._centre` takes them (shorter clips are kept whole)."""
    t = x.shape[1]
    if t <= width:
        return x
    start = (t - width) // 2
    return x[:, start : start + width]


def build_carried_corpus(
    out: str | Path,
    *,
    config: str = "mini",
    profile: str | None = None,
    root: str | Path | None = None,
    train_mib: float = 6.0,
    segment_frames: int | None = None,
    probe_per_class: int = 4,
    probe_classes: int = 20,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Write `out/train` and `out/probe`; returns a summary (profile, counts, bytes)."""
    from .pretrain import M2D_PRESETS

    if config not in M2D_PRESETS:
        raise ConfigError(f"unknown m2d preset {config!r}; choose one of {', '.join(M2D_PRESETS)}")
    cfg = M2D_PRESETS[config]
    frontend, width = cfg.frontend, cfg.encoder.input_frames
    segment_frames = segment_frames or width * 3 // 2
    root = Path(root).expanduser() if root else data_root()
    profile = _profile(root, profile)
    out = Path(out)
    mel = LogMel(frontend).mel
    bytes_per_frame = 2 * frontend.n_mels

    # -- training segments ----------------------------------------------------------------------
    index = root / profile / "pretrain" / "general" / "index.csv"
    segments = read_index(index)
    gen = torch.Generator().manual_seed(seed)
    budget = int(train_mib * MiB) // bytes_per_frame  # frames
    mels, sources, used = [], [], 0
    for i in torch.randperm(len(segments), generator=gen).tolist():
        if used >= budget:
            break
        seg = segments[i]
        with torch.no_grad():
            x = log_mel(read_segment(seg, frontend.sample_rate, f"{index}:{i + 2}"), mel)
        start = 0
        if x.shape[1] > segment_frames:
            start = int(torch.randint(0, x.shape[1] - segment_frames + 1, (1,), generator=gen))
        x = x[:, start : start + min(segment_frames, budget - used)]
        mels.append(x)
        used += x.shape[1]
        sources.append({"source": seg.source, "path": _relative(seg.path, index.parent),
                        "start_s": round(seg.start + start * frontend.hop_length / frontend.sample_rate, 4)})
    provenance = {"profile": profile, "config": config, "seed": seed, "index": f"{profile}/pretrain/general/index.csv",
                  "segments_in_index": len(segments)}
    train_bytes = write_prebuilt(out / "train", mels, frontend, sources=sources, provenance=provenance)
    log(f"gpu corpus: train: {len(mels)} of {len(segments)} {profile} general segments, {used} frames "
        f"({used * frontend.hop_length / frontend.sample_rate / 60:.1f} min), {train_bytes / MiB:.2f} MiB")

    # -- probe clips: what M2DProbe would read for train.seed = seed ---------------------------
    sets = probe_clip_sets(profile, probe_per_class, seed_for(seed, "probe-labels"), root=root)
    pmels, labels, names, psources = [], [], [], []
    for name, segs in sorted(sets.items()):
        keep = set(sorted({s.label for s in segs})[:probe_classes])
        for seg in segs:
            if seg.label not in keep:
                continue
            with torch.no_grad():
                x = log_mel(read_segment(seg, frontend.sample_rate, f"{name} probe clip"), mel)
            pmels.append(_centre_cut(x, width))
            labels.append(seg.label)
            names.append(name)
            psources.append({"source": name, "path": _relative(seg.path, root / profile)})
    summary = {"profile": profile, "train_segments": len(mels), "train_frames": used, "train_bytes": train_bytes}
    if pmels:
        probe_bytes = write_prebuilt(out / "probe", pmels, frontend, labels=labels, sets=names, sources=psources,
                                     provenance={**provenance, "probe_per_class": probe_per_class,
                                                 "probe_classes": probe_classes, "crop_frames": width})
        counts = ", ".join(f"{n}: {names.count(n)} clips, {len({labels[i] for i in range(len(names)) if names[i] == n})} "
                           f"classes" for n in sorted(set(names)))
        log(f"gpu corpus: probe: {counts}; {probe_bytes / MiB:.2f} MiB")
        summary.update(probe_clips=len(pmels), probe_bytes=probe_bytes)
    else:
        log(f"gpu corpus: probe: no built esc50/speech_commands in {root / profile}: no probe set "
            f"(the check's pretraining then logs RankMe and floors only)")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m upstreams.m2d.carried_corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder (gpu_corpus/ for scripts/gpu_check.sh)")
    p.add_argument("--config", default="mini", help="m2d preset whose front end and input window are used")
    p.add_argument("--profile", default=None, help="data profile (default: mini if built, else tiny)")
    p.add_argument("--root", default=None, help="data root (default $BENCH_DATA or the user cache)")
    p.add_argument("--train-mib", type=float, default=6.0, help="size of the training log-mel (MiB)")
    p.add_argument("--segment-frames", type=int, default=None, help="frames per training segment (default 1.5 windows)")
    p.add_argument("--probe-per-class", type=int, default=4)
    p.add_argument("--probe-classes", type=int, default=20, help="classes per probe set")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        build_carried_corpus(args.out, config=args.config, profile=args.profile, root=args.root,
                             train_mib=args.train_mib, segment_frames=args.segment_frames,
                             probe_per_class=args.probe_per_class, probe_classes=args.probe_classes, seed=args.seed)
    except ConfigError as exc:
        print(f"gpu corpus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
