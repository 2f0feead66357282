"""`bench run`: evaluate one upstream on one task with one protocol; writes one result record."""

from __future__ import annotations

import ast
import sys


def _option(text: str) -> tuple[str, object]:
    """`-o KEY=VALUE` -> (key, Python literal or the string); a user error (exit 2) otherwise."""
    from bench.errors import UserError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"-o/--option {text}: expected KEY=VALUE, e.g. -o arch=tiny (see `bench list upstreams`)")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return key, value


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="evaluate an upstream on a task; writes a result record",
                       description="Evaluate one upstream on one task with one protocol and write one result record.")
    p.add_argument("--upstream", required=True, help="registered name (bench list upstreams) or package.module:factory")
    p.add_argument("--ckpt", default=None, help="checkpoint for the upstream (default: its latest pretraining run)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="upstream option, e.g. -o arch=base -o seed=1 (repeatable)")
    p.add_argument("--task", required=True, help="asr pr qbe esc50 speech_commands icbhi")
    p.add_argument("--protocol", default=None, help="linear weighted finetune; clip tasks also knn mlp (qbe: dtw); default per task")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dataset", default=None, help="path to a real corpus in its native layout")
    where.add_argument("--profile", default="mini", choices=["tiny", "mini"],
                       help="built-in mini-benchmark profile (built if missing; default mini)")
    p.add_argument("--data-root", default=None, help="mini-benchmark root (default $BENCH_DATA or the user cache)")
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument("--json", action="store_true", help="print the result record as JSON on stdout")
    p.add_argument("--seed", type=int, default=0, help="head seed (default 0)")
    p.add_argument("--seeds", type=int, nargs="*", default=None, metavar="SEED",
                   help="several head seeds, e.g. --seeds 0 1 2: one record with every seed's score, their mean, "
                        "std and 95%% interval (replaces --seed)")
    p.add_argument("--lr", type=float, nargs="+", default=None, help="learning-rate grid (default per protocol)")
    p.add_argument("--layer", type=int, default=-1, help="layer for the linear protocol (default: last)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 autocast for the upstream")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--classes", default=None, choices=["superb12", "all35"], help="speech_commands label set")
    p.add_argument("--decoder", default=None, choices=["greedy", "beam"],
                   help="asr: CTC decoding for the scores (default greedy; beam needs flashlight-text)")
    p.add_argument("--beam-size", type=int, default=None, help="asr with --decoder beam (default 5)")
    p.add_argument("--normalize-layers", choices=["on", "off"], default=None,
                   help="weighted (every task but qbe; pr/asr finetune too): layer-norm each layer's frames before "
                        "the weighted sum (s3prl's upstream_feature_normalize; default on for upstreams with several "
                        "layers, off for one-layer ones such as fbank; recorded)")
    p.add_argument("--position-removal", choices=["on", "off"], default=None,
                   help="qbe: subtract the mean frame of each within-window position before DTW (windowed "
                        "upstreams such as the M2D ViTs; no effect on fbank; default on)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable audio files (counted in the record)")
    p.add_argument("--folds", nargs="+", default=None, metavar="FOLD",
                   help="evaluate only these folds, e.g. --folds fold1 (ESC-50 has fold1..fold5; recorded)")
    p.add_argument("--upstream-lr-scale", type=float, default=0.1, help="finetune: upstream lr = lr x this")
    p.add_argument("--specaug", action="store_true", help="finetune: SpecAugment-style masking of upstream features")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help="clip tasks: cap head (or fine-tuning) epochs (default per profile: 200 frozen; recorded)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="pr/asr: cap CTC head steps (real corpora default to SUPERB's 100k/200k; recorded)")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early-stopping patience: epochs (clip tasks) or dev evaluations (pr/asr); recorded")
    p.add_argument("--batch-seconds", type=float, default=120.0, help="audio seconds per extraction batch")
    p.add_argument("--cache-root", default=None, help="embedding cache (default $BENCH_CACHE or the user cache)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from bench.errors import UserError
    from bench.results.plots import fmt_score
    from bench.results.records import record_dict
    from bench.run import RunRequest, run
    from upstreams.fileio import dumps_strict

    options = dict(_option(o) for o in args.option)
    task_options = {}
    if args.classes:
        if args.task != "speech_commands":
            raise UserError(f"--classes {args.classes} applies only to --task speech_commands (got --task {args.task})")
        task_options["classes"] = args.classes
    if args.decoder or args.beam_size is not None:
        if args.task != "asr":
            raise UserError(f"--decoder/--beam-size apply only to --task asr (got --task {args.task})")
        task_options["decoder"] = args.decoder or "beam"
        if args.beam_size is not None:
            task_options["beam_size"] = args.beam_size
    if args.normalize_layers:
        if args.task == "qbe":
            raise UserError("--normalize-layers applies to the weighted protocol; qbe has only dtw (drop it)")
        task_options["normalize_layers"] = args.normalize_layers == "on"
    if args.position_removal:
        if args.task != "qbe":
            raise UserError(f"--position-removal applies only to --task qbe (got --task {args.task})")
        task_options["position_removal"] = args.position_removal == "on"
    req = RunRequest(
        upstream=args.upstream, task=args.task, protocol=args.protocol, ckpt=args.ckpt,
        upstream_options=options, dataset=args.dataset, profile=args.profile, data_root=args.data_root,
        budget={k: v for k, v in (("max_epochs", args.max_epochs), ("max_steps", args.max_steps),
                                  ("patience", args.patience)) if v is not None},
        results=args.results, seed=args.seed, seeds=args.seeds, lrs=args.lr, layer=args.layer, precision=args.precision,
        device=args.device, batch_seconds=args.batch_seconds, skip_bad=args.skip_bad, task_options=task_options,
        finetune={"upstream_lr_scale": args.upstream_lr_scale, **({"time_mask": 8, "freq_mask": 16} if args.specaug else {})},
        cache_root=args.cache_root, progress=not args.no_progress, folds=args.folds,
    )
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    from bench.commands import output_errors

    with output_errors("free space or fix permissions (or choose other --results / --cache-root), then rerun: "
                       "finished embedding-cache entries are kept"):
        record, path = run(req, log=log)
    if args.json:
        print(dumps_strict(record_dict(record), indent=2))
    else:
        std, ci = record.secondary.get("std"), record.secondary.get("ci95")
        extra = f" ± {fmt_score(record.metric, std)}" if std is not None else ""
        if ci:
            extra += (f", 95% CI [{fmt_score(record.metric, ci[0])}, {fmt_score(record.metric, ci[1])}] over "
                      f"{len(record.seeds)} seed(s)")
        print(f"{record.upstream} / {record.task} / {record.protocol}: {record.metric} = "
              f"{fmt_score(record.metric, record.score)}{extra} (lr {record.lr}, {record.wall_time_s:.0f} s) -> {path}")
    return 0
