"""Cold vs warm `bench run`: what the embedding cache saves.

Runs the same `bench run` twice as subprocesses against a fresh cache directory: the first
extracts embeddings (cold), the second reuses them (warm). Prints both wall times and the ratio
(target: warm at least 5x faster than cold on mini).

    python benchmarks/cache.py                                   # random / esc50 / linear on mini
    python benchmarks/cache.py --upstream fbank --task icbhi --profile tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def timed_run(args: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", *args, "--json", "--no-progress"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench run failed:\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", default="random")
    ap.add_argument("--task", default="esc50")
    ap.add_argument("--protocol", default="linear")
    ap.add_argument("--profile", default="mini", choices=["tiny", "mini"])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--lr", type=float, nargs="+", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--upstream", args.upstream, "--task", args.task, "--protocol", args.protocol,
                  "--profile", args.profile, "--results", f"{tmp}/results", "--cache-root", f"{tmp}/cache"]
        if args.data_root:
            common += ["--data-root", args.data_root]
        if args.lr:
            common += ["--lr", *map(str, args.lr)]
        cold, rec_cold = timed_run(common)
        warm, rec_warm = timed_run(common)
    out = {"cold_s": round(cold, 2), "warm_s": round(warm, 2), "ratio": round(cold / warm, 2),
           "cold_hit": rec_cold["details"]["cache"]["hit"], "warm_hit": rec_warm["details"]["cache"]["hit"],
           "same_score": rec_cold["score"] == rec_warm["score"], "score": rec_cold["score"]}
    print(f"{args.upstream} / {args.task} / {args.protocol} on {args.profile}: cold {cold:.1f} s "
          f"(cache hit: {out['cold_hit']}), warm {warm:.1f} s (cache hit: {out['warm_hit']}), "
          f"cold/warm = {out['ratio']:.1f}x, identical score: {out['same_score']}")
    return out


if __name__ == "__main__":
    main()
