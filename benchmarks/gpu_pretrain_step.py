"""M2D pretraining step on CUDA: clips/s and the fraction of this GPU's measured bf16 matmul peak.

    python benchmarks/gpu_pretrain_step.py                       # mini and base presets on CUDA
    python benchmarks/gpu_pretrain_step.py --configs base --batch 128
    python benchmarks/gpu_pretrain_step.py --cpu-smoke           # tiny preset, CPU, seconds (self-check)

The step is the model's own: `M2D(cfg.encoder, cfg.predictor)` built by `initial_m2d_model` from
`upstreams.m2d.pretrain.M2D_PRESETS`, attention through `F.scaled_dot_product_attention` as in
`upstreams/m2d/encoder.py`, bf16 autocast, fused AdamW, gradient clipping and the EMA update, on
random log-mel batches of the config's input shape (`[B, 1, n_mels, input_frames]`) with fresh
random masks at the config's mask ratio. FLOPs of one step (forward + backward) come from
`torch.utils.flop_counter.FlopCounterMode`; the peak is a large bf16 `torch.matmul` loop timed in
the same process, so "fraction of peak" is relative to what this card actually delivers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from upstreams.m2d.masking import random_mask  # noqa: E402
from upstreams.m2d.pretrain import M2D_PRESETS, initial_m2d_model  # noqa: E402
from upstreams.training.loop import default_param_groups  # noqa: E402

DEFAULT_BATCH = {"tiny": 4, "mini": 256, "base": 64}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, n: int, iters: int) -> float:
    """Measured bf16 dense matmul throughput (TFLOP/s) of `n x n @ n x n`."""
    dtype = torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.matmul(a, b)
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def random_batch(cfg, batch: int, device: torch.device, gen: torch.Generator) -> dict[str, torch.Tensor]:
    enc = cfg.encoder
    gf, gt = enc.grid
    mel = torch.randn(batch, 1, enc.n_mels, enc.input_frames, device=device, generator=gen)
    mask = random_mask(batch, gf * gt, cfg.mask_ratio, generator=gen)
    return {"mel": mel, "ids_keep": mask.ids_keep, "ids_mask": mask.ids_mask}


def bench_config(name: str, batch: int, steps: int, warmup: int, device: torch.device, peak: float) -> dict:
    cfg = M2D_PRESETS[name]
    t = cfg.train
    model = initial_m2d_model(cfg, log=lambda _m: None).to(device).train()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(default_param_groups(model, t.weight_decay), lr=1e-4, betas=t.betas, fused=fused)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [random_batch(cfg, batch, device, gen) for _ in range(2)]

    def step(b) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = model(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.clip_grad or 1e9)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_target(0.999)
        return loss.detach()

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    for i in range(warmup):
        step(batches[i % 2])
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % 2])
    _sync(device)
    sec = (time.perf_counter() - t0) / steps
    achieved = flops / sec / 1e12
    enc = cfg.encoder
    return {
        "config": name, "batch": batch, "input": [enc.n_mels, enc.input_frames], "patch": list(enc.patch_size),
        "embed_dim": enc.embed_dim, "depth": enc.depth, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "sec_per_step": round(sec, 5), "clips_per_s": round(batch / sec, 1), "gflop_per_step": round(flops / 1e9, 1),
        "tflops": round(achieved, 2), "fraction_of_peak": round(achieved / peak, 3) if peak > 0 else None,
        "loss": round(float(loss), 4), "finite": bool(torch.isfinite(loss)),
        "peak_mem_GiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["mini", "base"], choices=sorted(M2D_PRESETS))
    ap.add_argument("--batch", type=int, default=0, help="clips per step (default: mini 256, base 64)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--matmul-iters", type=int, default=50)
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--cpu-smoke", "--dry-run", dest="cpu_smoke", action="store_true",
                    help="tiny preset on CPU, 2 steps, small matmul: checks the script, measures nothing useful")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        device = torch.device("cpu")
        args.configs, args.steps, args.warmup, args.matmul_n, args.matmul_iters = ["tiny"], 2, 1, 256, 2
    elif not torch.cuda.is_available():
        print("gpu_pretrain_step: no CUDA device (use --cpu-smoke for the CPU self-check)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak_tflops(device, args.matmul_n, args.matmul_iters)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "matmul_bf16_peak_tflops": round(peak, 1), "matmul_n": args.matmul_n, "results": [],
    }
    print(f"device {report['device']}  measured bf16 matmul peak {peak:.1f} TFLOP/s (n={args.matmul_n})", flush=True)
    for name in args.configs:
        batch = args.batch or DEFAULT_BATCH.get(name, 32)
        try:
            r = bench_config(name, batch, args.steps, args.warmup, device, peak)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            r = {"config": name, "batch": batch, "error": "out of memory (try --batch smaller)"}
        report["results"].append(r)
        if "error" in r:
            print(f"{name:5s} batch {batch}: {r['error']}", flush=True)
        else:
            print(f"{name:5s} batch {r['batch']:4d}  {r['clips_per_s']:9.1f} clips/s  {r['sec_per_step'] * 1e3:8.1f} ms/step  "
                  f"{r['gflop_per_step']:9.1f} GFLOP/step  {r['tflops']:7.2f} TFLOP/s  "
                  f"{r['fraction_of_peak']:.1%} of peak  loss {r['loss']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = all(r.get("finite") for r in report["results"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
