"""Executors against each other: `local --jobs 1`, `local --jobs 2` and Ray with 2 workers, same plan.

Runs the same study three times into fresh temporary results, runs and embedding-cache folders, and
prints each elapsed time, the ratios to one local job and the largest score difference between the
leaderboards (an executor must not change results). Ray runs on a cluster that exists before the
timing starts, as it would in use: `--ray-address HOST:PORT`, or else a throwaway 2-CPU cluster on
127.0.0.1 (`bench.study.executors.ray_local`) started before and stopped after the Ray run.

    python benchmarks/executors.py --data-root .cache/speech-eval        # the quickstart plan on mini
    python benchmarks/executors.py --profile tiny --data-root DIR --tasks icbhi   # tiny, with pretraining
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path


def timed_study(label: str, executor, root: Path, args) -> tuple[float, "object"]:
    import pandas as pd

    from bench.study.plans import UPSTREAMS
    from bench.study.reproduce import reproduce

    out = root / label
    t0 = time.perf_counter()
    reproduce(profile=args.profile, out=out / "results", runs=str(out / "runs"), data_root=args.data_root,
              cache_root=str(out / "cache"), upstreams=tuple(args.upstreams or UPSTREAMS),
              tasks=tuple(args.tasks) if args.tasks else None, quick=args.profile == "mini" and not args.full,
              executor=executor, command=f"benchmarks/executors.py ({label})", log=lambda m: None)
    elapsed = time.perf_counter() - t0
    board = pd.read_csv(out / "results" / "leaderboard.csv")
    return elapsed, board.set_index(["upstream", "task", "protocol"])["score"].sort_index()


def main(argv=None) -> dict:
    from bench.study.executors import ExecutorOptions
    from bench.study.executors.ray_local import local_ray_cluster

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini", choices=["tiny", "mini"])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--ray-address", default=None, help="an existing cluster (default: a throwaway 2-CPU one)")
    ap.add_argument("--upstreams", nargs="+", default=["fbank", "random"])
    ap.add_argument("--tasks", nargs="+", default=None)
    ap.add_argument("--full", action="store_true", help="on mini, the full plan (hours) instead of the quickstart's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    times, boards = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in (("local_jobs1", ExecutorOptions("local", jobs=1)),
                               ("local_jobs2", ExecutorOptions("local", jobs=2))):
            times[label], boards[label] = timed_study(label, options, Path(tmp), args)
        cluster = contextlib.nullcontext(args.ray_address) if args.ray_address else local_ray_cluster(num_cpus=2)
        with cluster as address:
            times["ray2"], boards["ray2"] = timed_study("ray2", ExecutorOptions("ray", jobs=2, ray_address=address),
                                                        Path(tmp), args)
    base = boards["local_jobs1"]
    for label, board in boards.items():
        if not board.index.equals(base.index):
            raise SystemExit(f"{label} evaluated other things than local_jobs1:\n{board.index}\n{base.index}")
    diff = max(float((board - base).abs().max()) for board in boards.values())
    out = {"profile": args.profile, "stages_scored": int(len(base)),
           **{f"{k}_s": round(v, 1) for k, v in times.items()},
           "speedup_local_jobs2": round(times["local_jobs1"] / times["local_jobs2"], 2),
           "speedup_ray2": round(times["local_jobs1"] / times["ray2"], 2), "max_score_diff": diff,
           # the names `benchmarks/reproduce_jobs.py` printed (one job against --jobs 2)
           "jobs": 2, "one_job_s": round(times["local_jobs1"], 1), "parallel_s": round(times["local_jobs2"], 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['stages_scored']} evaluations on {args.profile}: local --jobs 1 {times['local_jobs1']:.1f} s, "
              f"--jobs 2 {times['local_jobs2']:.1f} s ({out['speedup_local_jobs2']:.2f}x), Ray 2 workers "
              f"{times['ray2']:.1f} s ({out['speedup_ray2']:.2f}x); largest score difference {diff:.3g}")
    return out


if __name__ == "__main__":
    main()
