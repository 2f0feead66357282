"""Pretraining throughput: the real training step against a bare loop with the same model.

    python benchmarks/pretrain_throughput.py                 # mini preset, fp32 and bf16
    python benchmarks/pretrain_throughput.py --quick         # tiny preset, seconds (used by a test)
    python benchmarks/pretrain_throughput.py --index CSV     # another corpus (default: mini corpus, else synthetic)

"real" runs `upstreams.training.train` on the M2D recipe: log-mel cache crops, masks, host->device
copies, forward, backward, clipping, AdamW, EMA, JSON/TensorBoard logging and the progress bar.
"bare" runs forward/backward/clip/AdamW/EMA of the same model on one batch already in memory.
The difference is the cost of the data pipeline and bookkeeping (target: <= 15 %).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

# runnable as `python benchmarks/pretrain_throughput.py` from a checkout, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from upstreams.m2d.pretrain import M2D_PRESETS, build_m2d
from upstreams.training.corpus import default_index
from upstreams.training.ddp import DistEnv
from upstreams.training.loop import Slot, default_param_groups, train
from upstreams.training.log import read_log


def synthetic_corpus(root: Path, n: int = 64, seconds: float = 4.0) -> Path:
    """Tones with vibrato and noise: enough to exercise the pipeline when no corpus is built."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = ["path,start,stop,label,source"]
    t = np.arange(int(16000 * seconds)) / 16000
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t + 3 * np.sin(2 * np.pi * 2 * t)) + rng.normal(0, 0.02, t.size)
        sf.write(root / "audio" / f"{i}.wav", x.astype(np.float32), 16000)
        rows.append(f"audio/{i}.wav,,,,synthetic")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root / "index.csv"


def real_step_seconds(cfg, out: Path, measure: int) -> list[float]:
    """Seconds of each optimiser step of `train`, over the second `measure` steps (the first warm up)."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=2 * measure, warmup_steps=1, log_every=1, checkpoint_every=10**9, stop_after=0))
    recipe = build_m2d(cfg, DistEnv(), torch.device("cpu"), log=lambda _m: None)
    train(recipe, out, DistEnv(), torch.device("cpu"))
    return [r["sec_per_step"] for r in read_log(out / "log.jsonl") if r["step"] > measure]


def bare_step_seconds(cfg, measure: int) -> list[float]:
    """Same model and optimiser on one in-memory batch: no data pipeline, no logging."""
    recipe = build_m2d(cfg, DistEnv(), torch.device("cpu"), log=lambda _m: None)
    model, t = recipe.model, cfg.train
    batch = recipe.data.get(Slot(0, 0, t.batch_size, 1))
    opt = torch.optim.AdamW(default_param_groups(model, t.weight_decay), lr=t.peak_lr, betas=t.betas)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.precision == "bf16")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    times = []
    for _ in range(2 * measure):
        t0 = time.perf_counter()
        with autocast:
            loss, _ = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_target(0.999)
        times.append(time.perf_counter() - t0)
    return times[measure:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny preset, few steps (seconds)")
    p.add_argument("--preset", default=None, help="M2D preset (default mini; tiny with --quick)")
    p.add_argument("--index", default=None, help="corpus index.csv (default: the mini corpus if built, else synthetic)")
    p.add_argument("--steps", type=int, default=None, help="measured steps per setting (after as many warm-up steps)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for both loops (default: torch's). On a busy shared machine run with "
                   "OMP_WAIT_POLICY=PASSIVE or --threads 1: spinning OpenMP workers can make 2 threads several times slower")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = p.parse_args(argv)

    preset = args.preset or ("tiny" if args.quick else "mini")
    if args.threads:
        torch.set_num_threads(args.threads)
    measure = args.steps or (3 if args.quick else 10)
    with tempfile.TemporaryDirectory(prefix="pretrain-bench-") as tmp:
        tmp = Path(tmp)
        index = Path(args.index) if args.index else default_index("general", "mini")
        cache = ""  # a real corpus: its log-mel cache under the data root, built once and reused
        if args.quick or not index.is_file():
            index = synthetic_corpus(tmp / "corpus", n=16 if args.quick else 64)
            cache = str(tmp / "cache")
        base = M2D_PRESETS[preset]
        train_cfg = dataclasses.replace(base.train, progress=not args.json and not args.quick, threads=args.threads,
                                        batch_size=args.batch_size or base.train.batch_size)
        base = dataclasses.replace(base, train=train_cfg, data=dataclasses.replace(
            base.data, index=str(index), cache_dir=cache))
        results = {"preset": preset, "index": str(index), "batch_size": train_cfg.batch_size, "measured_steps": measure,
                   "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}
        for precision in args.precisions.split(","):
            cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, precision=precision))
            real_steps = real_step_seconds(cfg, tmp / f"run-{precision}", measure)
            bare_steps = bare_step_seconds(cfg, measure)
            # medians (and minima) of per-step times: robust to other jobs on a shared machine
            real, bare = float(np.median(real_steps)), float(np.median(bare_steps))
            results[precision] = {
                "real_ms_per_step": round(real * 1000, 1), "bare_ms_per_step": round(bare * 1000, 1),
                "real_min_ms": round(min(real_steps) * 1000, 1), "bare_min_ms": round(min(bare_steps) * 1000, 1),
                "real_clips_per_s": round(train_cfg.batch_size / real, 1),
                "bare_clips_per_s": round(train_cfg.batch_size / bare, 1),
                "overhead_pct": round(100 * (real / bare - 1), 1),
                "overhead_min_pct": round(100 * (min(real_steps) / min(bare_steps) - 1), 1),
            }
    if "fp32" in results and "bf16" in results:  # the same run's fp32 is the reference
        results["bf16_speedup"] = {kind: round(results["fp32"][f"{kind}_ms_per_step"] / results["bf16"][f"{kind}_ms_per_step"], 2)
                                   for kind in ("real", "bare")}
        results["bf16_speedup_min"] = {kind: round(results["fp32"][f"{kind}_min_ms"] / results["bf16"][f"{kind}_min_ms"], 2)
                                       for kind in ("real", "bare")}
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"preset {preset}, batch {results['batch_size']}, {measure} measured steps, {results['threads']} threads "
          f"(OMP_WAIT_POLICY={results['omp_wait_policy'] or 'unset'}), corpus {index}")
    print("ms/step: median (min) of the measured steps; overhead = real / bare - 1")
    print(f"{'precision':9} {'real ms/step':>18} {'bare ms/step':>18} {'real clips/s':>12} {'bare clips/s':>12} "
          f"{'overhead':>9} {'(min)':>7}")
    for precision in args.precisions.split(","):
        r = results[precision]
        print(f"{precision:9} {r['real_ms_per_step']:9.1f} ({r['real_min_ms']:6.1f}) {r['bare_ms_per_step']:9.1f} "
              f"({r['bare_min_ms']:6.1f}) {r['real_clips_per_s']:12.1f} {r['bare_clips_per_s']:12.1f} "
              f"{r['overhead_pct']:8.1f}% {r['overhead_min_pct']:6.1f}%")
    if "bf16_speedup" in results:
        s = results["bf16_speedup"]
        m = results["bf16_speedup_min"]
        print(f"bf16 speed-up over fp32 (same run; > 1 = bf16 faster): {s['real']:.2f}x real loop, {s['bare']:.2f}x bare "
              f"loop (from the minima: {m['real']:.2f}x, {m['bare']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
