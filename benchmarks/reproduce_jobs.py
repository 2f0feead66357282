"""`bench reproduce --jobs N` against one job: elapsed time and identical scores.

Runs the same reproduction plan twice into fresh temporary results, runs and embedding-cache
directories: first with one job, then with `--jobs N`. Prints both elapsed times, their ratio and
the largest score difference between the two leaderboards (the scheduler must not change results;
extraction thread counts differ, so differences at float rounding level are possible in principle).

    python benchmarks/reproduce_jobs.py --data-root .cache/speech-eval        # the quickstart plan on mini
    python benchmarks/reproduce_jobs.py --profile tiny --data-root DIR --tasks icbhi qbe   # with pretraining
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def timed_reproduction(jobs: int, root: Path, args) -> tuple[float, "object"]:
    import pandas as pd

    from bench.reproduce import UPSTREAMS, reproduce

    out = root / f"jobs{jobs}"
    t0 = time.perf_counter()
    reproduce(profile=args.profile, out=out / "results", runs=str(out / "runs"), data_root=args.data_root,
              cache_root=str(out / "cache"), upstreams=tuple(args.upstreams or UPSTREAMS),
              tasks=tuple(args.tasks) if args.tasks else None, quick=args.profile == "mini" and not args.full,
              jobs=jobs, command=f"benchmarks/reproduce_jobs.py (jobs {jobs})", log=lambda m: None)
    elapsed = time.perf_counter() - t0
    board = pd.read_csv(out / "results" / "leaderboard.csv")
    return elapsed, board.set_index(["upstream", "task", "protocol"])["score"].sort_index()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini", choices=["tiny", "mini"])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--upstreams", nargs="+", default=["fbank", "random"])
    ap.add_argument("--tasks", nargs="+", default=None)
    ap.add_argument("--full", action="store_true", help="on mini, the full plan (hours) instead of the quickstart's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        serial_s, serial = timed_reproduction(1, Path(tmp), args)
        parallel_s, parallel = timed_reproduction(args.jobs, Path(tmp), args)
    if not serial.index.equals(parallel.index):
        raise SystemExit(f"the two runs evaluated different things:\n{serial.index}\n{parallel.index}")
    out = {"profile": args.profile, "stages_scored": int(len(serial)), "jobs": args.jobs,
           "one_job_s": round(serial_s, 1), "parallel_s": round(parallel_s, 1),
           "speedup": round(serial_s / parallel_s, 2), "max_score_diff": float((serial - parallel).abs().max())}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['stages_scored']} evaluations on {args.profile}: one job {serial_s:.1f} s, --jobs {args.jobs} "
              f"{parallel_s:.1f} s -> {out['speedup']:.2f}x; largest score difference {out['max_score_diff']:.3g}")
    return out


if __name__ == "__main__":
    main()
