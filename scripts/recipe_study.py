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
`results/recipe-study/README.md` (the table, the commands, training wall times from each run's log).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from scipy import stats

REPO = Path(__file__).resolve().parents[1]
OUT = Path("results/recipe-study")
RUNS = Path("runs/study")
TASKS = ("esc50", "speech_commands", "icbhi")

_16x16 = ["encoder.patch_size=[16,16]", "ema_start=0.995", "ema_end=0.9995"]
_CLIPNORM_MIX = _16x16 + ["target_standardise=clip", "data.pack_short=true", "data.speech_share=0.5"]  # the `mini` preset
# row -> (what it tests, --set overrides on top of `--config mini`)
ROWS: dict[str, tuple[str, list[str]]] = {
    "geom16x16": ("16x16 patches (160 ms frames), EMA 0.995 -> 0.9995", _16x16),
    "clipnorm": ("+ per-clip target standardisation", _16x16 + ["target_standardise=clip"]),
    "mix": ("+ packed short clips, half of the clips non-speech", _16x16 + ["data.pack_short=true", "data.speech_share=0.5"]),
    "clipnorm_mix": ("+ both", _CLIPNORM_MIX),
    "clipnorm_mix_long": ("the chosen `mini` (clipnorm_mix), run with `--steps 3000`: does a longer run keep gaining?",
                          _CLIPNORM_MIX),
    "ema_fast": ("16x16, EMA 0.99 -> 0.999", ["encoder.patch_size=[16,16]", "ema_start=0.99", "ema_end=0.999"]),
    "speech80x4": ("80x4 full-band patches (40 ms frames), time spans of 5, per-clip targets",
                   ["encoder.patch_size=[80,4]", "ema_start=0.995", "ema_end=0.9995", "mask_span=5",
                    "target_standardise=clip"]),
}


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)


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
    if not (RUNS / name / "done").exists():  # training wall time is read back from the run's own log
        _run(pretrain_cmd(row, steps, seed), OUT / "logs" / f"{name}.log")
        (RUNS / name / "done").write_text("ok\n")
    for tag, up in ((name, ["--upstream", "m2d", "--ckpt", str(ckpt)]),
                    (twin_tag(row, seed), ["--upstream", "random", "-o", f"like={ckpt}"])):
        if tag.startswith("twin-") and not twin:
            continue
        for task in tasks_of(row):
            if _record(tag, task) is None:
                _run(eval_cmd(up, task, tag, data_root), OUT / "logs" / f"{tag}.log")


def _units(rec: dict, pretrain_seed: int = 0) -> dict:
    """(pretraining seed, head seed, fold) -> score of one record."""
    return {(pretrain_seed, u["seed"], u.get("fold")): u["score"] for u in rec["secondary"]["units"]}


def _paired(a: dict, b: dict) -> str:
    """Mean paired difference a - b over shared units, its 95 % t-interval and the paired t-test p."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return "—"
    d = [a[k] - b[k] for k in keys]
    mean = sum(d) / len(d)
    res = stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys])
    ci = res.confidence_interval(0.95)
    return f"{mean:+.1f} [{ci.low:+.1f}, {ci.high:+.1f}], p={res.pvalue:.2g}, n={len(keys)}"


def _fmt(rec: dict | None, task: str) -> str:
    if rec is None:
        return "—"
    if task == "qbe":  # no training: dev MTWV of the chosen layer (the selection) / eval MTWV
        return f"{rec['secondary'].get('dev_mtwv', float('nan')):.3f} / {rec['score']:.3f}"
    return f"{rec['secondary'].get('val_score', float('nan')):.1f} / {rec['score']:.1f}"


def _done_runs() -> list[tuple[str, str, int]]:
    out = []
    for run_dir in sorted(RUNS.glob("*/")) if RUNS.exists() else []:
        name = run_dir.name
        row, _, seed = name.partition("-seed")
        if row in ROWS and (run_dir / "done").exists():
            out.append((name, row, int(seed or 0)))
    return out


def _probe_line(run_dir: Path) -> str:
    probes = [r for r in _log(run_dir) if "probe/loss" in r]
    if not probes:
        return "—"
    last = probes[-1]
    floor = min(last[k] for k in ("probe/floor_constant", "probe/floor_position", "probe/floor_neighbour"))
    knn = ", ".join(f"{k.split('_', 1)[1]} {last[k]:.2f} (step 0 {last[k + '_step0']:.2f})"
                    for k in ("probe/knn_esc50", "probe/knn_speech_commands") if k in last)
    return f"loss {last['probe/loss']:.3f} vs lowest floor {floor:.3f}; RankMe {last['probe/rankme_online']:.1f}; kNN {knn}"


def render() -> Path:
    runs = _done_runs()
    all_tasks = TASKS + (("qbe",) if any("qbe" in tasks_of(r) for _, r, _ in runs) else ())
    lines = ["# Mini M2D recipe study", "",
             "Produced by `python scripts/recipe_study.py` (its docstring says how). Each row is one `bench pretrain m2d` "
             "run (1 thread, bf16, 32 clips a step, on the mini general corpus) evaluated with the frozen `linear` "
             "protocol on the mini clip tasks with 3 head seeds; every twin row is the step-0 twin (`random -o "
             "like=CKPT`) of the runs of that patch geometry and seed (their step 0 is the same: it depends only on "
             "the architecture and the seed). Cells are **validation / test**: the mean validation accuracy (ICBHI: "
             "score) the lr was chosen on, then the test score. QbE (rows with 40 ms frames): dev MTWV of the layer "
             "chosen on dev / eval MTWV. Recipes were chosen on validation only. Pretraining wall times were measured "
             "with other jobs on the 2 cores (load average 4-12), so they are upper bounds; the per-step cost on an "
             "idle core is in the README. Speech Commands cells were re-evaluated (same checkpoints) after its "
             "validation and test took SUPERB's make-up (10 % `_unknown_`, commit 12e576b); before, two-thirds of "
             "both were `_unknown_` and answering `_unknown_` for every clip scored 67-71 %.", "",
             "| run | what it changes (from `--config mini_16x4`) | steps | training wall | "
             + " | ".join(f"{t} val / test" for t in all_tasks) + " | probe at the end |",
             "|---|---|---|---|" + "---|" * len(all_tasks) + "---|"]
    twins_seen, commands = [], []
    for name, row, seed in runs:
        wall = _train_seconds(_log(RUNS / name))
        lines.append(f"| {name} | {ROWS[row][0]} | {_steps(name)} | {f'{wall / 60:.0f} min' if wall else '—'} | "
                     + " | ".join(_fmt(_record(name, t), t) if t in tasks_of(row) else "" for t in all_tasks)
                     + f" | {_probe_line(RUNS / name)} |")
        tag = twin_tag(row, seed)
        if tag not in twins_seen and any(_record(tag, t) for t in all_tasks):
            twins_seen.append(tag)
            lines.append(f"| {tag} | step 0 of the {geometry(row)} runs, seed {seed} | 0 | — | "
                         + " | ".join(_fmt(_record(tag, t), t) if t in tasks_of(row) else "" for t in all_tasks) + " | |")
        commands.append(" ".join(shlex.quote(c) for c in pretrain_cmd(row, _steps(name), seed)))
    lines += ["", "## Pretrained vs step-0 twin, test scores, paired over (pretraining seed, head seed, fold) units", "",
              "| recipe | pretraining seeds | " + " | ".join(TASKS) + " |", "|---|---|" + "---|" * len(TASKS)]
    for row in ROWS:
        seeds = [seed for _, r, seed in runs if r == row]
        if not seeds:
            continue
        cells = []
        for task in TASKS:
            a, b = {}, {}
            for seed in seeds:
                rec, twin = _record(_name(row, seed), task), _record(twin_tag(row, seed), task)
                if rec and twin:
                    a.update(_units(rec, seed))
                    b.update(_units(twin, seed))
            cells.append(_paired(a, b))
        lines.append(f"| {row} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    lines += _followups()
    lines += ["", "## Commands", "", "```bash", *commands, "```", "",
              "Each run `R` and its twin are evaluated with `bench run --upstream m2d --ckpt runs/study/R/checkpoint.pt "
              "--task T --protocol linear --seeds 0 1 2 --profile mini` and `bench run --upstream random -o "
              "like=runs/study/R/checkpoint.pt ...` (QbE: `--task qbe --protocol dtw`). The runs before the presets "
              "changed were started as `--config mini` when `mini` was what `mini_16x4` is now (same resolved config).",
              ""]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "README.md"
    path.write_text("\n".join(lines))
    return path


def _followups() -> list[str]:
    """M2D-X (paper recipe) from each seed of the chosen recipe, on ICBHI; SCORE on the 40 ms base, on QbE."""
    out = []
    a, b, cells = {}, {}, []
    for seed in range(3):
        rec, base = _record(f"m2dx-seed{seed}", "icbhi"), _record(_name("clipnorm_mix", seed), "icbhi")
        if rec and base:
            a.update(_units(rec, seed))
            b.update(_units(base, seed))
            cells.append(f"seed {seed}: {_fmt(rec, 'icbhi')} vs {_fmt(base, 'icbhi')}")
    if cells:
        out += ["", "## M2D-X (paper recipe) against the M2D it starts from, ICBHI `linear` (val / test)", "",
                "`bench pretrain m2dx --config mini_respiratory --init runs/study/clipnorm_mix[-seedK]/checkpoint.pt "
                "--set train.seed=K --set train.threads=1`, then `bench run --upstream m2dx --ckpt ... --task icbhi "
                "--protocol linear --seeds 0 1 2`.", "", "; ".join(cells) + ".", "",
                f"Paired test over (pretraining seed, head seed) units, M2D-X - M2D: {_paired(a, b)}."]
    score, base = _record("score-speech80x4", "qbe"), _record("speech80x4", "qbe")
    if score and base:
        def layers(rec):
            return ", ".join(f"{x['layer']}: {x['dev_mtwv']:.3f}" for x in rec["details"]["per_layer"])
        out += ["", "## SCORE on the 40 ms base (`speech80x4`), QbE", "",
                "`bench pretrain score --config mini --base m2d --base-ckpt runs/study/speech80x4/checkpoint.pt "
                "--set train.threads=1`, then `bench run --upstream score --ckpt ... --task qbe --protocol dtw`.", "",
                "| model | dev MTWV per layer | chosen layer | eval MTWV |", "|---|---|---|---|",
                f"| base | {layers(base)} | {base['selection']['chosen']['layer']} | {base['score']:.4f} |",
                f"| SCORE | {layers(score)} | {score['selection']['chosen']['layer']} | {score['score']:.4f} |"]
        long = _record("score-long", "qbe")
        if long:  # 5x the steps; its base is results/mini's speech run of seed 0, the same config and seed as speech80x4
            out += [f"| SCORE, 1000 steps | {layers(long)} | {long['selection']['chosen']['layer']} | {long['score']:.4f} |",
                    "", "SCORE, 1000 steps: `bench pretrain score --config mini --base m2d --base-ckpt "
                    "runs/m2d/reproduce-mini-speech/checkpoint.pt --set train.steps=1000 --set train.warmup_steps=280 "
                    "--set train.lr=1e-4 --set train.threads=1` (that base is the `mini_speech` preset at seed 0, the "
                    f"config of `speech80x4`: the same per-layer MTWV). {_score_probe(Path('runs/study/score-long'))}"]
    return out


def _score_probe(run_dir: Path) -> str:
    """Training wall time and the collapse check at the end of a SCORE run, from its own log."""
    rows = _log(run_dir)
    probes = [r for r in rows if "probe/wchange_blocks" in r]
    if not probes:
        return ""
    first, last = probes[0], probes[-1]
    return (f"Training took {_train_seconds(rows):.0f} s; the tuned blocks moved {100 * last['probe/wchange_blocks']:.1f} % "
            f"and the between-utterance cosine of the projected frames went {first['probe/cos_between_proj']:.3f} -> "
            f"{last['probe/cos_between_proj']:.3f} (the teacher's: {last['probe/cos_between_proj_teacher']:.3f}).")


def _log(run_dir: Path) -> list[dict]:
    """The lines of a run's `log.jsonl` (none when the run has no log)."""
    try:
        text = (run_dir / "log.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def _train_seconds(rows: list[dict]) -> float | None:
    """Training wall time from a run's log lines (`wall_s` of the last; log-mel cache build excluded)."""
    walls = [r["wall_s"] for r in rows if r.get("wall_s") is not None]
    return walls[-1] if walls else None


def _steps(name: str) -> int:
    cfg = RUNS / name / "config.yaml"
    text = cfg.read_text() if cfg.exists() else ""
    return next((int(ln.split(":")[1]) for ln in text.splitlines() if ln.strip().startswith("steps:")), 0)


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
