"""Extraction throughput and API overhead.

For each upstream: audio-seconds encoded per wall-second through the public API (list of uneven
waveforms, duration-batched), and the ratio of that API call to a bare forward of the same model
on the same padded batch (no per-item framing, no attention masks, no windows bookkeeping).
Target: ratio <= 1.15.

    python benchmarks/extract.py                 # 64 clips of 1-10 s, fbank and random
    python benchmarks/extract.py --quick         # a few clips (what the test runs)
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
import torchaudio

import upstreams
from upstreams.batching import batches_by_duration
from upstreams.frontend import EPS


def bare_forward(up, padded: torch.Tensor):
    """The same computation on an already padded batch, with nothing the API adds."""
    if isinstance(up, upstreams.Upstream) and hasattr(up, "encoder"):
        enc = up.encoder
        x = (up.frontend.mel(padded) + EPS).log()
        mean, std = up.frontend.norm_stats
        x = (x - mean) / std
        pt, window = enc.config.patch_size[1], enc.config.input_frames
        t = x.shape[-1]
        width = min(window, math.ceil(t / pt) * pt)
        n_win = math.ceil(t / width)
        x = F.pad(x, (0, n_win * width - t))
        x = x.reshape(x.shape[0], x.shape[1], n_win, width).permute(0, 2, 1, 3).reshape(-1, 1, x.shape[1], width)
        states = enc.run_blocks(enc.embed(x))
        return [enc.to_frames(s[:, 1:], width // pt) for s in states]
    return [
        torchaudio.compliance.kaldi.fbank(w.view(1, -1), num_mel_bins=80, frame_length=25.0, frame_shift=10.0)
        for w in padded
    ]


def _time_pair(fn_a, fn_b, repeat: int) -> tuple[float, float]:
    """Best-of-`repeat` wall times of two functions, interleaved so background load hits both alike."""
    best_a = best_b = math.inf
    for _ in range(repeat):
        for fn, which in ((fn_a, "a"), (fn_b, "b")):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if which == "a":
                best_a = min(best_a, dt)
            else:
                best_b = min(best_b, dt)
    return best_a, best_b


def run(names=("fbank", "random"), n_clips=64, min_s=1.0, max_s=10.0, batch_seconds=60.0, repeat=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    sr = 16000
    lengths = [int(sr * (min_s + (max_s - min_s) * float(torch.rand(1, generator=g)))) for _ in range(n_clips)]
    wavs = [torch.randn(n, generator=g) * 0.1 for n in lengths]
    total_s = sum(lengths) / sr
    rows = []
    for name in names:
        up = upstreams.load(name).eval()
        batches = batches_by_duration(lengths, int(batch_seconds * sr))
        padded = [torch.nn.utils.rnn.pad_sequence([wavs[i] for i in b], batch_first=True) for b in batches]
        with torch.inference_mode():
            up([wavs[0]])  # warm-up
            api, bare = _time_pair(lambda: [up([wavs[i] for i in b]) for b in batches],
                                   lambda: [bare_forward(up, p) for p in padded], repeat)
        rows.append({"upstream": name, "audio_s": round(total_s, 1), "api_s": api, "bare_s": bare,
                     "audio_s_per_s": total_s / api, "ratio": api / bare})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kw = dict(n_clips=6, max_s=3.0, repeat=1) if args.quick else dict(n_clips=args.clips)
    rows = run(**kw)
    print(f"threads={torch.get_num_threads()}  clips={kw['n_clips']}")
    print(f"{'upstream':10} {'audio s':>8} {'API s':>8} {'bare s':>8} {'audio-s/s':>10} {'API/bare':>9}")
    for r in rows:
        print(f"{r['upstream']:10} {r['audio_s']:8.1f} {r['api_s']:8.2f} {r['bare_s']:8.2f} "
              f"{r['audio_s_per_s']:10.1f} {r['ratio']:9.3f}")


if __name__ == "__main__":
    main()
