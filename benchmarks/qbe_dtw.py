"""QbE scoring: `tasks.qbe.dtw` against s3prl 0.4.18's own `quesst14_dtw` on the same features.

Prints the largest score difference (final z-normalised scores; must stay below 1e-4 in float32),
the speed ratio with s3prl's process pool at as many workers as cores, and our cost per
query-document pair against the bound set by the distance matmul alone.

    python benchmarks/qbe_dtw.py                             # fbank on the mini QbE set (dev queries x documents)
    python benchmarks/qbe_dtw.py --upstream random --layer 3 # another upstream / layer (default: last)
    python benchmarks/qbe_dtw.py --synthetic                 # 60-frame queries, 300-frame docs, 768 dims
    python benchmarks/qbe_dtw.py --synthetic --size tiny     # seconds; what the test runs
    python benchmarks/qbe_dtw.py --features feats.pt         # {"queries": [T x D], "docs": [T x D]}
    python benchmarks/qbe_dtw.py --synthetic --size gpu --device cuda   # full DTW on CUDA vs our CPU path
    python benchmarks/qbe_dtw.py --synthetic --size tiny --device cpu   # the same comparison as a CPU smoke test

By default the features are one layer of a frozen upstream on the built mini-benchmark's QUESST
set (`--profile`, `--data-root`) or a real QUESST 2014 (`--dataset`), taken from the same
embedding cache `bench run --task qbe` uses (extracted on first use). `compare(queries, docs)` is
the entry point against s3prl; `compare_devices(queries, docs, device)` times the whole pipeline
(GEMM, min-max, DTW recursion) on `device` against our threaded CPU path on the same features
(with `--device cpu` the device plan runs on the CPU: a smoke test of the code a GPU runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from tasks.qbe.dtw import MIN_QUERY_FRAMES, raw_match_scores, znormalize  # noqa: E402

SIZES = {
    # name: (queries, docs, query frames, doc frames, dim)
    "tiny": (4, 6, 12, 40, 32),
    "small": (8, 40, 60, 300, 768),
    "base": (16, 120, 60, 300, 768),
    "gpu": (64, 400, 60, 300, 768),  # 25k pairs: seconds on a GPU, tens of seconds on 16 CPU cores
}


def synthetic_features(
    n_queries: int,
    n_docs: int,
    query_frames: int = 60,
    doc_frames: int = 300,
    dim: int = 768,
    *,
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Speech-like random features: sequences of 2-8-frame "phones" drawn from 48 prototypes.

    Lengths vary by +-25 % around the nominal ones; half of the queries are noisy excerpts of a
    document (so some pairs really match), and the last query of every set is 3 frames long to
    exercise the "shorter than 5 frames scores 0" rule. Pure white noise would make every score
    nearly equal, which is neither realistic nor a fair test of the z-normalised scores.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(48, dim, generator=g) + 0.5

    def utterance(frames: int) -> torch.Tensor:
        # drawn in one go (a per-phone Python loop took most of a 25k-pair run's set-up)
        phones = frames // 2 + 1  # phones last >= 2 frames, so this many always cover `frames`
        durations = torch.randint(2, 9, (phones,), generator=g)
        labels = torch.randint(0, len(protos), (phones,), generator=g)
        ids = torch.repeat_interleave(labels, durations)[:frames]
        return protos[ids] + 0.6 * torch.randn(frames, dim, generator=g)

    def jitter(nominal: int) -> int:
        return max(1, int(nominal * (0.75 + 0.5 * float(torch.rand(1, generator=g)))))

    docs = [utterance(jitter(doc_frames)) for _ in range(n_docs)]
    queries = []
    for i in range(n_queries):
        n = jitter(query_frames)
        src = docs[i % n_docs]
        if i % 2 == 0 and src.shape[0] > n:
            start = int(torch.randint(0, src.shape[0] - n, (1,), generator=g))
            queries.append(src[start : start + n] + 0.4 * torch.randn(n, dim, generator=g))
        else:
            queries.append(utterance(n))
    if n_queries:
        queries[-1] = queries[-1][:3]
    return queries, docs


def s3prl_scores(
    queries: Sequence[torch.Tensor], docs: Sequence[torch.Tensor], workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """s3prl 0.4.18 `DownstreamExpert.log_records` minus the XML: its standardisation, its
    `match` in a `ProcessPoolExecutor(max_workers=workers)` (one task per pair, as s3prl
    submits them), its < 5-frame rule and its per-query z-normalisation.

    Returns (final z-scores, raw match scores), both `(Q, D)` float64.
    """
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    from s3prl.downstream.quesst14_dtw.expert import cosine_exp, match

    feats = torch.cat([*queries, *docs])
    feature_mean = feats.mean(0)
    feature_std = torch.clamp(feats.std(0), 1e-9)
    qs = [((q - feature_mean) / feature_std).numpy() for q in queries]
    ds = [((d - feature_mean) / feature_std).numpy() for d in docs]
    dtwrc = {
        "step_pattern": "asymmetric",
        "keep_internals": False,
        "distance_only": False,
        "open_begin": True,
        "open_end": True,
    }
    raw = np.zeros((len(qs), len(ds)))
    with ProcessPoolExecutor(max_workers=workers) as executor:
        futures = []
        for qi, q in enumerate(qs):
            if len(q) < MIN_QUERY_FRAMES:
                continue
            for di, d in enumerate(ds):
                futures.append(executor.submit(match, q, d, qi, di, cosine_exp, True, dtwrc))
        for future in as_completed(futures):
            qi, di, score = future.result()
            raw[qi, di] = score
    final = (raw - raw.mean(1, keepdims=True)) / np.clip(raw.std(1, keepdims=True), 1e-9, np.inf)
    return final, raw


def gemm_ms_per_pair(query_frames: int, doc_frames: int, dim: int, *, repeats: int = 5) -> float:
    """CPU milliseconds per pair, on one core, of the distance matmul alone at our block shapes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, cols = 256 // query_frames * query_frames or query_frames, 16384
        a, b = torch.randn(rows, dim), torch.randn(cols, dim)
        out = torch.empty(rows, cols)
        torch.mm(a, b.T, out=out)
        best = float("inf")
        for _ in range(repeats):  # CPU time of one thread: what the matmul costs, whatever else runs
            start = time.process_time()
            torch.mm(a, b.T, out=out)
            best = min(best, time.process_time() - start)
        per_flop = best / (rows * cols * dim)
        return per_flop * query_frames * doc_frames * dim * 1e3
    finally:
        torch.set_num_threads(threads)


def compare(
    queries: Sequence[torch.Tensor],
    docs: Sequence[torch.Tensor],
    *,
    workers: int | None = None,
    threads: int | None = None,
    s3prl: bool = True,
    repeats: int = 1,
) -> dict:
    """Run both implementations on the same `(frames, dim)` float32 features and report.

    Args:
        workers: s3prl's pool size (s3prl's config leaves it empty = one per core).
        threads: worker threads for ours (default: the same as workers).
        s3prl: False to time only ours (no exactness check).
        repeats: time each side this many times (interleaved) and keep the fastest; the
            machine is shared, so single timings can be off by several times.
    """
    queries = [q.detach().float().cpu() for q in queries]
    docs = [d.detach().float().cpu() for d in docs]
    workers = workers or os.cpu_count() or 1
    threads = threads or workers
    n_pairs = sum(q.shape[0] >= MIN_QUERY_FRAMES for q in queries) * len(docs)
    report: dict = {
        "queries": len(queries),
        "documents": len(docs),
        "scored_pairs": int(n_pairs),
        "mean_query_frames": float(np.mean([q.shape[0] for q in queries])),
        "mean_doc_frames": float(np.mean([d.shape[0] for d in docs])),
        "dim": int(docs[0].shape[1]),
        "workers": workers,
        "threads": threads,
    }
    def run_ours() -> tuple[torch.Tensor, torch.Tensor, float, float]:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            start, cpu = time.perf_counter(), time.process_time()
            raw = raw_match_scores(queries, docs, threads=threads)
            return raw, znormalize(raw), time.perf_counter() - start, time.process_time() - cpu
        finally:
            torch.set_num_threads(previous)

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    raw_match_scores(queries[:1], docs[:2])  # warm-up (allocator, thread pool)
    ours_s = ref_s = ours_cpu = ref_cpu = float("inf")
    for _ in range(max(1, repeats)):
        ours_raw, ours, seconds, cpu = run_ours()
        ours_s, ours_cpu = min(ours_s, seconds), min(ours_cpu, cpu)
        if s3prl:
            start, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu()
            ref, ref_raw = s3prl_scores(queries, docs, workers)
            ref_s = min(ref_s, time.perf_counter() - start)
            ref_cpu = min(ref_cpu, time.process_time() - cpu0 + children_cpu() - child0)
    report["ours_seconds"] = ours_s
    report["ours_cpu_ms_per_pair"] = ours_cpu / max(n_pairs, 1) * 1e3
    report["ours_ms_per_pair"] = ours_s / max(n_pairs, 1) * 1e3
    bound = gemm_ms_per_pair(int(report["mean_query_frames"]), int(report["mean_doc_frames"]), report["dim"])
    report["gemm_ms_per_pair_per_core"] = bound
    report["ours_core_ms_per_pair"] = report["ours_ms_per_pair"] * threads
    report["x_gemm_bound"] = report["ours_core_ms_per_pair"] / bound
    report["x_gemm_bound_cpu"] = report["ours_cpu_ms_per_pair"] / bound
    if s3prl:
        report["s3prl_seconds"] = ref_s
        report["s3prl_ms_per_pair"] = ref_s / max(n_pairs, 1) * 1e3
        report["speedup"] = ref_s / ours_s
        report["s3prl_cpu_ms_per_pair"] = ref_cpu / max(n_pairs, 1) * 1e3
        report["cpu_ratio"] = ref_cpu / ours_cpu
        report["max_abs_diff"] = float(np.abs(ours.numpy() - ref).max())
        report["max_abs_diff_raw"] = float(np.abs(ours_raw.numpy() - ref_raw).max())
        report["decisions_equal"] = bool(((ours.numpy() > 2.0) == (ref > 2.0)).all())
    return report


def compare_devices(
    queries: Sequence[torch.Tensor],
    docs: Sequence[torch.Tensor],
    device: str,
    *,
    threads: int | None = None,
    repeats: int = 1,
) -> dict:
    """Time `raw_match_scores` + `znormalize` on `device` against our CPU path on the same features.

    The device side starts from features already on the device (as `bench run` would hold them
    after a CUDA extraction) and ends with the `(Q, D)` scores back on the CPU, so its time is
    the whole DTW including the final copy. Each side keeps its fastest of `repeats` runs, after
    one warm-up on the device (CUDA context, kernels, allocator). `device="cpu"` runs the
    accelerator plan (one stream, large blocks) on the CPU.
    """
    from tasks.qbe import dtw as qdtw

    queries = [q.detach().float().cpu() for q in queries]
    docs = [d.detach().float().cpu() for d in docs]
    dev = torch.device(device)
    threads = threads or torch.get_num_threads()
    n_pairs = sum(q.shape[0] >= MIN_QUERY_FRAMES for q in queries) * len(docs)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def on_device(qs, ds):
        if dev.type == "cpu":  # the accelerator plan itself, on the CPU
            return qdtw._match_scores(qs, ds, True, MIN_QUERY_FRAMES, torch.float32, qdtw._DEVICE_BLOCK_ROWS,
                                      qdtw._DEVICE_CHUNK_COLUMNS, 1, dev, balance=False)
        return raw_match_scores(qs, ds, device=dev)

    dq, dd = [q.to(dev) for q in queries], [d.to(dev) for d in docs]
    sync()
    on_device(dq[:2], dd[:4])  # warm-up
    sync()
    cpu_s = dev_s = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        cpu_raw = raw_match_scores(queries, docs, threads=threads)
        cpu_s = min(cpu_s, time.perf_counter() - start)
        sync()
        start = time.perf_counter()
        dev_raw = on_device(dq, dd).cpu()
        sync()
        dev_s = min(dev_s, time.perf_counter() - start)
    cpu_z, dev_z = znormalize(cpu_raw), znormalize(dev_raw)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    return {
        "queries": len(queries), "documents": len(docs), "scored_pairs": int(n_pairs),
        "mean_query_frames": float(np.mean([q.shape[0] for q in queries])),
        "mean_doc_frames": float(np.mean([d.shape[0] for d in docs])), "dim": int(docs[0].shape[1]),
        "device": name, "cpu_threads": threads,
        "cpu_seconds": cpu_s, "device_seconds": dev_s, "speedup": cpu_s / dev_s,
        "cpu_ms_per_pair": cpu_s / max(n_pairs, 1) * 1e3, "device_ms_per_pair": dev_s / max(n_pairs, 1) * 1e3,
        "max_abs_diff_raw": float((dev_raw - cpu_raw).abs().max()),
        "max_abs_diff": float((dev_z - cpu_z).abs().max()),
        "decisions_equal": bool(torch.equal(dev_z > 2.0, cpu_z > 2.0)),
    }


def _print_devices(report: dict) -> None:
    print(
        f"{report['queries']} queries x {report['documents']} documents "
        f"({report['scored_pairs']} scored pairs), ~{report['mean_query_frames']:.0f} x "
        f"{report['mean_doc_frames']:.0f} frames, {report['dim']} dims"
    )
    ok = "OK" if report["max_abs_diff"] < 1e-4 else "TOO LARGE"
    print(f"DTW on {report['device']}: {report['device_seconds']:.3f} s ({report['device_ms_per_pair']:.4f} ms/pair); "
          f"CPU, {report['cpu_threads']} threads: {report['cpu_seconds']:.3f} s ({report['cpu_ms_per_pair']:.4f} ms/pair); "
          f"speed-up {report['speedup']:.1f}x")
    print(f"max |z-score difference| device vs CPU: {report['max_abs_diff']:.3g} ({ok}, limit 1e-4); raw "
          f"{report['max_abs_diff_raw']:.3g}; YES/NO identical: {report['decisions_equal']}")


def real_features(args) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One layer of `args.upstream` on the QbE set: the split's queries and all documents."""
    import ast

    import upstreams
    from bench.protocols.qbe_dtw import qbe_features

    options = {}
    for text in args.option:
        key, _, value = text.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    upstream = upstreams.load(args.upstream, **options).eval()
    if args.dataset is None:
        from tasks.data import build

        build(args.profile, root=args.data_root, only=["quesst14"], log=lambda m: print(m, file=sys.stderr))
    feats = qbe_features(upstream, args.dataset, profile=args.profile, data_root=args.data_root,
                         cache_root=args.cache_root, progress=False)
    layer = args.layer % upstream.num_layers
    print(f"features: {args.upstream} layer {layer} of {upstream.num_layers}, QbE {args.split} queries x "
          f"documents of {feats.root}", file=sys.stderr)
    return feats.layer(args.split, layer), feats.layer("docs", layer)


def _print(report: dict) -> None:
    print(
        f"{report['queries']} queries x {report['documents']} documents "
        f"({report['scored_pairs']} scored pairs), ~{report['mean_query_frames']:.0f} x "
        f"{report['mean_doc_frames']:.0f} frames, {report['dim']} dims"
    )
    if "max_abs_diff" in report:
        ok = "OK" if report["max_abs_diff"] < 1e-4 else "TOO LARGE"
        print(f"max |score difference| vs s3prl: {report['max_abs_diff']:.3g} ({ok}, limit 1e-4); "
              f"raw match scores {report['max_abs_diff_raw']:.3g}; YES/NO identical: {report['decisions_equal']}")
        print(f"s3prl match, {report['workers']} workers: {report['s3prl_seconds']:.2f} s "
              f"({report['s3prl_ms_per_pair']:.3f} ms/pair)")
    print(f"ours, {report['threads']} worker threads: {report['ours_seconds']:.2f} s "
          f"({report['ours_ms_per_pair']:.3f} ms/pair)")
    if "speedup" in report:
        print(f"speed ratio: {report['speedup']:.1f}x faster than s3prl (wall clock); CPU time per pair "
              f"{report['s3prl_cpu_ms_per_pair']:.3f} vs {report['ours_cpu_ms_per_pair']:.3f} ms = "
              f"{report['cpu_ratio']:.1f}x less (robust to other load on the machine: "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"matmul bound: {report['gemm_ms_per_pair_per_core']:.3f} CPU-ms/pair on one core; ours "
          f"{report['ours_cpu_ms_per_pair']:.3f} CPU-ms/pair = {report['x_gemm_bound_cpu']:.2f}x the bound "
          f"(wall x threads: {report['ours_core_ms_per_pair']:.3f} = {report['x_gemm_bound']:.2f}x)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true", help="random speech-like features")
    src.add_argument("--features", type=Path, help='torch file with {"queries": [...], "docs": [...]}')
    p.add_argument("--upstream", default="fbank", help="upstream whose features are compared (default fbank)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="upstream option")
    p.add_argument("--layer", type=int, default=-1, help="layer of the upstream (default: last)")
    p.add_argument("--split", choices=["dev", "eval"], default="dev", help="queries of this split x all documents")
    p.add_argument("--profile", choices=["tiny", "mini"], default="mini", help="built mini-benchmark profile")
    p.add_argument("--data-root", default=None, help="mini-benchmark root (default $BENCH_DATA or the user cache)")
    p.add_argument("--dataset", default=None, help="a real quesst14Database instead of the built profile")
    p.add_argument("--cache-root", default=None, help="embedding cache (default $BENCH_CACHE or the user cache)")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--queries", type=int, help="override the number of synthetic queries")
    p.add_argument("--docs", type=int, help="override the number of synthetic documents")
    p.add_argument("--workers", type=int, default=None, help="s3prl pool size (default: cores)")
    p.add_argument("--threads", type=int, default=None, help="worker threads for ours (default: workers)")
    p.add_argument("--no-s3prl", action="store_true", help="time ours only")
    p.add_argument("--device", default=None,
                   help="compare our DTW on this device (cuda, cuda:1; cpu = the device plan on the CPU) with our "
                        "CPU path instead of with s3prl")
    p.add_argument("--repeats", type=int, default=1, help="time each side N times, keep the fastest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.features:
        data = torch.load(args.features, map_location="cpu")
        queries, docs = list(data["queries"]), list(data["docs"])
    elif args.synthetic:
        nq, nd, qf, df, dim = SIZES[args.size]
        queries, docs = synthetic_features(args.queries or nq, args.docs or nd, qf, df, dim, seed=args.seed)
    else:
        queries, docs = real_features(args)
    if args.device:
        report = compare_devices(queries, docs, args.device, threads=args.threads, repeats=args.repeats)
        failed = report["max_abs_diff"] >= 1e-4
    else:
        report = compare(queries, docs, workers=args.workers, threads=args.threads, s3prl=not args.no_s3prl,
                         repeats=args.repeats)
        failed = False
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        (_print_devices if args.device else _print)(report)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
