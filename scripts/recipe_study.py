"""The mini M2D recipe study: which small-scale settings make pretraining beat its own step-0 twin.

Each row is one real `bench pretrain m2d` run (its command is printed and kept; every row starts from
`--config mini_16x4`, v0.1's mini recipe, and states what it changes), evaluated with the
frozen `linear` protocol on the three clip tasks with three head seeds, against the step-0 twin of
the same architecture and seed (`random -o like=CKPT`). Choices are read on the *validation* scores
(`secondary.val_score`, the mean validation accuracy the protocol selected its lr on); test scores
and the paired t-test over (seed, fold) units are reported beside them, never used to choose.

Every stage is skipped when its output exists (the checkpoint's `done` marker or the record), so the
study resumes after an interruption. Usage:

    python scripts/recipe_study.py --rows geom16x16 clipnorm --data-root .cache/speech-eval
    python scripts/recipe_study.py --render-only        # the table from what exists

Outputs: `runs/study/<row>/` (checkpoints, git-ignored), `results/recipe-study/records/` and
`results/recipe-study/README.md` (the table, the commands, wall times).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
OUT = Path("results/recipe-study")
RUNS = Path("runs/study")
TASKS = ("esc50", "speech_commands", "icbhi")

_16x16 = ["encoder.patch_size=[16,16]", "ema_start=0.995", "ema_end=0.9995"]
# row -> (what it tests, --set overrides on top of `--config mini`)
ROWS: dict[str, tuple[str, list[str]]] = {
    "geom16x16": ("16x16 patches (160 ms frames), EMA 0.995 -> 0.9995", _16x16),
    "clipnorm": ("+ per-clip target standardisation", _16x16 + ["target_standardise=clip"]),
    "mix": ("+ packed short clips, half of the clips non-speech", _16x16 + ["data.pack_short=true", "data.speech_share=0.5"]),
    "clipnorm_mix": ("+ both", _16x16 + ["target_standardise=clip", "data.pack_short=true", "data.speech_share=0.5"]),
    "ema_fast": ("16x16, EMA 0.99 -> 0.999", ["encoder.patch_size=[16,16]", "ema_start=0.99", "ema_end=0.999"]),
    "speech80x4": ("80x4 full-band patches (40 ms frames), time spans of 5, per-clip targets",
                   ["encoder.patch_size=[80,4]", "ema_start=0.995", "ema_end=0.9995", "mask_span=5",
                    "target_standardise=clip"]),
}


def _run(cmd: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    return time.time() - t0


def pretrain_cmd(row: str, steps: int, seed: int) -> list[str]:
    sets = ROWS[row][1] + [f"train.steps={steps}", f"train.warmup_steps={max(1, steps // 20)}", "train.threads=1",
                           f"train.probe_every={steps // 2}", "train.progress=false", f"train.seed={seed}"]
    return ["bench", "pretrain", "m2d", "--config", "mini_16x4", "--out", str(RUNS / _name(row, seed))] + \
        [a for s in sets for a in ("--set", s)]


def _name(row: str, seed: int) -> str:
    return row if seed == 0 else f"{row}-seed{seed}"


def tasks_of(row: str) -> tuple[str, ...]:
    """Clip tasks for every row; QbE (subsequence DTW, no training) too for rows with frames fine enough for speech."""
    return TASKS + (("qbe",) if geometry(row).endswith("x4") or geometry(row).endswith("x2") else ())


def eval_cmd(upstream: list[str], task: str, tag: str, data_root: str) -> list[str]:
    if task == "qbe":
        return ["bench", "run", *upstream, "--task", "qbe", "--protocol", "dtw", "--profile", "mini", "--data-root",
                data_root, "--results", str(OUT / "records" / tag), "--cache-root", ".cache/embed-study", "--no-progress"]
    return ["bench", "run", *upstream, "--task", task, "--protocol", "linear", "--seeds", "0", "1", "2",
            "--profile", "mini", "--data-root", data_root, "--results", str(OUT / "records" / tag),
            "--cache-root", ".cache/embed-study", "--no-progress"]


def _record(tag: str, task: str) -> dict | None:
    files = sorted((OUT / "records" / tag).glob(f"records/{task}/*.json"))  # bench run --results DIR -> DIR/records/
    return json.loads(files[-1].read_text()) if files else None


def geometry(row: str) -> str:
    """The twin group of a row: step 0 depends only on the architecture and the seed (not on the target
    standardisation, EMA or data mix), so rows of one patch geometry share one twin (checked: same bytes)."""
    return next((s.split("=")[1].strip("[]").replace(",", "x") for s in ROWS[row][1] if s.startswith("encoder.patch_size")),
                "16x4")


def twin_tag(row: str, seed: int) -> str:
    return f"twin-{geometry(row)}" + ("" if seed == 0 else f"-seed{seed}")


def run_row(row: str, steps: int, seed: int, data_root: str, twin: bool = True) -> None:
    name = _name(row, seed)
    ckpt = RUNS / name / "checkpoint.pt"
    times = OUT / "times.json"
    wall = json.loads(times.read_text()) if times.exists() else {}
    if not (RUNS / name / "done").exists():
        wall[f"pretrain/{name}"] = _run(pretrain_cmd(row, steps, seed), OUT / "logs" / f"{name}.log")
        (RUNS / name / "done").write_text("ok\n")
        times.write_text(json.dumps(wall, indent=1))
    for tag, up in ((name, ["--upstream", "m2d", "--ckpt", str(ckpt)]),
                    (twin_tag(row, seed), ["--upstream", "random", "-o", f"like={ckpt}"])):
        if tag.startswith("twin-") and not twin:
            continue
        for task in tasks_of(row):
            if _record(tag, task) is None:
                wall[f"eval/{tag}/{task}"] = _run(eval_cmd(up, task, tag, data_root), OUT / "logs" / f"{tag}.log")
                times.write_text(json.dumps(wall, indent=1))


def _units(rec: dict) -> dict:
    return {(u["seed"], u.get("fold")): u["score"] for u in rec["secondary"]["units"]}


def _cell(rec: dict | None, twin: dict | None) -> tuple[str, str]:
    if rec is None:
        return "—", "—"
    val = rec["secondary"].get("val_score")
    t_val = twin["secondary"].get("val_score") if twin else None
    val_s = f"{val:.1f}" + (f" ({val - t_val:+.1f})" if t_val is not None else "")
    test_s = f"{rec['score']:.1f}"
    if twin is not None:
        a, b = _units(rec), _units(twin)
        keys = sorted(set(a) & set(b))
        diff = [a[k] - b[k] for k in keys]
        p = stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys]).pvalue if len(keys) > 1 else float("nan")
        test_s += f" ({sum(diff) / len(diff):+.1f}, p={p:.2g})"
    return val_s, test_s


def render() -> Path:
    times = json.loads((OUT / "times.json").read_text()) if (OUT / "times.json").exists() else {}
    lines = ["# Mini M2D recipe study", "",
             "Produced by `python scripts/recipe_study.py` (see its docstring). Each row: one `bench pretrain m2d` run "
             "(1 thread, bf16), evaluated with `linear` on the mini clip tasks, 3 head seeds, against its step-0 twin "
             "(`random -o like=CKPT`). **val**: mean validation accuracy / ICBHI score the lr was chosen on, with the "
             "difference to the twin; **test**: test score, with the mean paired difference to the twin over "
             "(seed, fold) units and the paired t-test p. Choices are made on val only.", "",
             "| row | what | steps | pretrain wall | loss (last) | " + " | ".join(f"{t} val (vs twin)" for t in TASKS)
             + " | " + " | ".join(f"{t} test (vs twin, p)" for t in TASKS) + " |",
             "|---|---|---|---|---|" + "---|" * (2 * len(TASKS))]
    commands = []
    for run_dir in sorted(RUNS.glob("*/")) if RUNS.exists() else []:
        name = run_dir.name
        row = name.split("-seed")[0]
        if row not in ROWS or not (run_dir / "done").exists():
            continue
        cfg = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
        steps = next((ln.split(":")[1].strip() for ln in cfg.splitlines() if ln.strip().startswith("steps:")), "?")
        log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x.strip()]
        losses = [r["loss"] for r in log if r.get("loss") is not None]
        wall = times.get(f"pretrain/{name}")
        vals, tests = [], []
        for task in TASKS:
            seed = int(name.split("-seed")[1]) if "-seed" in name else 0
            v, t = _cell(_record(name, task), _record(twin_tag(row, seed), task))
            vals.append(v)
            tests.append(t)
        lines.append(f"| {name} | {ROWS[row][0]} | {steps} | {wall / 60:.1f} min | "
                     f"{losses[-1]:.3f} | " if wall else f"| {name} | {ROWS[row][0]} | {steps} | — | "
                     f"{losses[-1] if losses else float('nan'):.3f} | ")
        lines[-1] += " | ".join(vals) + " | " + " | ".join(tests) + " |"
        seed = int(name.split("-seed")[1]) if "-seed" in name else 0
        commands.append(" ".join(shlex.quote(c) for c in pretrain_cmd(row, int(steps) if steps.isdigit() else 0, seed)))
    lines += ["", "## Commands", "", "```bash", *commands, "```", "",
              "Evaluation of each run `R` and its twin (three tasks each): `bench run --upstream m2d --ckpt runs/study/R/"
              "checkpoint.pt --task T --protocol linear --seeds 0 1 2 --profile mini` and the same with `--upstream random "
              "-o like=runs/study/R/checkpoint.pt`.", ""]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "README.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="+", default=[], choices=sorted(ROWS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--data-root", default=os.environ.get("BENCH_DATA", ".cache/speech-eval"))
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-twin", action="store_true", help="leave the twin to another invocation (two lanes at once)")
    args = ap.parse_args(argv)
    os.environ["BENCH_DATA"] = args.data_root
    if not args.render_only:
        for row in args.rows:
            for seed in args.seeds:
                run_row(row, args.steps, seed, args.data_root, twin=not args.no_twin)
    print(f"wrote {render()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
