"""The claims report: what the papers say beside what this run measured.

Each claim is a paired t-test (`bench.results.stats.paired_test`) of an upstream against its control over
the (seed, fold) units both were scored on. It "holds" only at p < 0.05 in the paper's direction,
is "reversed" when significant the other way, and is "inconclusive" otherwise (or when both
upstreams are at chance level). Numbers quoted from the papers are in `PAPER_CLAIMS` with their
source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .plots import fmt_score
from .stats import ALPHA, Paired, min_detectable_difference, paired_test

__all__ = ["PAPER_CLAIMS", "relative_improvement", "claims_table", "compare", "claim_metric", "power_table",
           "render_report"]

# (task, metric): value reported by the papers, for the report's "paper" column
PAPER_CLAIMS = {
    "score_relative": {  # Meghanani & Hain, ICASSP 2024 (SCORE on HuBERT), relative improvement over the base
        "asr": 1.09, "pr": 3.58, "qbe": 12.65,
    },
    "icbhi": {  # Niizumi et al., M2D-X (TASLP 2024 / ICBHI application), score = (Se + Sp) / 2 in %
        "m2d": "61.93-62.66", "m2dx": "63.29",
    },
}


def relative_improvement(base: float, new: float, higher_is_better: bool) -> float:
    """Percent improvement of `new` over `base` (positive = better), as the SCORE paper reports it."""
    if base == 0:
        return math.nan
    return 100.0 * ((new - base) if higher_is_better else (base - new)) / abs(base)


@dataclass
class Claim:
    claim: str
    task: str
    protocol: str
    paper: str
    a: str  # upstream expected to be better
    b: str  # its control
    metric: str
    test: Paired | None
    verdict: str  # holds | reversed | inconclusive
    why: str = ""  # why inconclusive (beyond p >= 0.05), shown in the report

    @property
    def holds(self) -> bool | None:
        return {"holds": True, "reversed": False}.get(self.verdict)


# Scores at which a task was not learned at all: CTC error rates near 100 % (the blank plateau, or
# a head that fails on the unseen test voice) and term-weighted values near 0 (the "always NO"
# system scores exactly 0). Two upstreams both beyond these say nothing about which one is better.
# ICBHI's score (Se + Sp) / 2 is exactly 50 for a head that predicts one class for every cycle.
_NOT_LEARNED = {"per": lambda v: v >= 90.0, "wer": lambda v: v >= 90.0, "cer": lambda v: v >= 90.0,
                "mtwv": lambda v: v <= 0.01, "atwv": lambda v: v <= 0.01, "icbhi_score": lambda v: v <= 50.0}
_ERROR_RATES = {"per", "wer", "cer"}
WER_SATURATED = 90.0  # mini ASR: when every upstream's WER is at or above this, claims use CER


def _score(df: pd.DataFrame, upstream: str, task: str, protocol: str):
    row = df[(df.upstream == upstream) & (df.task == task) & (df.protocol == protocol)]
    if row.empty:
        return None
    return row.iloc[0]


def claim_metric(df: pd.DataFrame, task: str, protocol: str) -> str | None:
    """None = the headline metric; "cer" for ASR when every upstream's WER is saturated (>= 90)."""
    rows = df[(df.task == task) & (df.protocol == protocol)]
    if task == "asr" and not rows.empty and (rows.score >= WER_SATURATED).all():
        if all("cer" in dict(u.extra) for us in rows["units"] for u in us):
            return "cer"
    return None


def compare(a, b, metric: str | None = None) -> tuple[Paired, str, str]:
    """Paired test of row `a` against its control `b`: (test, verdict, why)."""
    test = paired_test(a["units"], b["units"], metric)
    name = metric or str(a.metric)
    floor = _NOT_LEARNED.get(name)
    if floor and floor(test.mean_a) and floor(test.mean_b):
        return test, "inconclusive", "neither learned the task (both at chance level)"
    if not test.significant():
        return test, "inconclusive", test.why or f"p = {test.p:.2g} >= {ALPHA}"
    higher_is_better = bool(a.higher_is_better) if metric is None else metric not in _ERROR_RATES
    better = test.diff > 0 if higher_is_better else test.diff < 0
    return test, ("holds" if better else "reversed"), ""


def _claim(df, text, task, protocol, paper, a_name, b_name) -> Claim | None:
    a, b = _score(df, a_name, task, protocol), _score(df, b_name, task, protocol)
    if a is None or b is None:
        return None
    metric = claim_metric(df, task, protocol)
    test, verdict, why = compare(a, b, metric)
    return Claim(text, task, protocol, paper, a_name, b_name, metric or str(a.metric), test, verdict, why)


def claims_table(df: pd.DataFrame) -> list[Claim]:
    """The papers' claims, each a paired test over the seed x fold units both upstreams share."""
    out: list[Claim | None] = []
    for (task, protocol), _ in df.groupby(["task", "protocol"]):
        out.append(_claim(df, "M2D beats its step-0 twin (random)", task, protocol, "M2D > random", "m2d", "random"))
    for protocol in sorted(df[df.task == "icbhi"].protocol.unique()):
        out.append(_claim(df, "M2D-X with background noise beats M2D on respiratory sounds", "icbhi", protocol,
                          f"{PAPER_CLAIMS['icbhi']['m2dx']} vs {PAPER_CLAIMS['icbhi']['m2d']}", "m2dx", "m2d"))
    for task, paper_rel in PAPER_CLAIMS["score_relative"].items():
        for protocol in sorted(df[df.task == task].protocol.unique()):
            out.append(_claim(df, "SCORE improves content tasks over its base", task, protocol,
                              f"+{paper_rel:.2f} % relative (HuBERT base)", "score", "m2d"))
    return [c for c in out if c is not None]


def power_table(df: pd.DataFrame, seeds: int = 3) -> list[dict]:
    """Per task and protocol: the spread of paired differences (m2d - random, the study's main pair)
    and the smallest difference a paired test detects at p < 0.05 with 80 % power, with the units
    this study has and with `seeds` seeds."""
    import numpy as np

    rows = []
    for (task, protocol), g in df.groupby(["task", "protocol"]):
        a, b = _score(g, "m2d", task, protocol), _score(g, "random", task, protocol)
        if a is None or b is None:
            continue
        metric = claim_metric(df, task, protocol)
        ka = {(u.seed, u.fold): u.value(metric) for u in a["units"]}
        kb = {(u.seed, u.fold): u.value(metric) for u in b["units"]}
        shared = sorted(set(ka) & set(kb))
        if len(shared) < 2:
            continue
        d = np.array([ka[k] - kb[k] for k in shared])
        folds = len({f for _, f in shared})
        sd = float(d.std(ddof=1))
        rows.append({"task": task, "protocol": protocol, "metric": metric or str(a.metric), "units": len(shared),
                     "folds": folds, "sd_diff": sd, "mde_here": min_detectable_difference(sd, len(shared)),
                     "mde_at_seeds": min_detectable_difference(sd, seeds * folds), "seeds": seeds})
    return rows


def _markdown_table(df: pd.DataFrame, columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def _cell(r) -> str:
    m = r.metric
    lo, hi = r.get("ci95_low"), r.get("ci95_high")
    if lo is not None and lo == lo and hi is not None and hi == hi:
        return f"{fmt_score(m, r.score)} [{fmt_score(m, lo)}, {fmt_score(m, hi)}]"
    sd = r.get("std")
    return fmt_score(m, r.score) + (f" ± {fmt_score(m, sd)}" if sd is not None and sd == sd else "")


def _fmt_p(p: float) -> str:
    return "—" if p != p else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """Upstream rows x task/protocol columns, scores with fold std where there is one."""
    cells = df.assign(
        col=df.task + " " + df.protocol + " (" + df.metric + (df.higher_is_better.map({True: " ↑", False: " ↓"})) + ")",
        val=[_cell(r) for _, r in df.iterrows()],
    )
    wide = cells.pivot_table(index="upstream", columns="col", values="val", aggfunc="first").fillna("—")
    order = [u for u in ("fbank", "random", "m2d", "m2dx", "score") if u in wide.index]
    wide = wide.loc[order + [u for u in wide.index if u not in order]]
    wide = wide.reset_index()
    return _markdown_table(wide, list(wide.columns))


def render_report(df: pd.DataFrame, meta: dict) -> str:
    claims = claims_table(df)
    seeds = sorted({u.seed for us in df["units"] for u in us}) if "units" in df else []
    lines = [
        "# Reproduction report",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Commit: `{meta.get('git_commit', '')}`  ",
        f"Machine: {meta.get('machine', '')}  ",
        f"Total wall time: {meta.get('wall_time', '')}  ",
        f"Data profile: {meta.get('profile', '')} (manifests: {meta.get('manifests', '')})  ",
        f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); each seed pretrains its own checkpoints and trains its "
        "own heads",
        "",
        "Everything below was produced by `bench reproduce`; nothing is hand-edited. Scores are on the",
        "offline mini-benchmark (synthetic speech from TTS voices, real environmental recordings, simulated",
        "respiratory sounds) with small CPU-trained models, so they are not comparable in absolute terms",
        "with the papers' numbers; the claims are compared by direction. Scores are means over seeds",
        "(and folds); [a, b] is the 95 % t-interval over the seed x fold units. A claim *holds* only when a",
        "paired t-test over the units both upstreams share (same seed, same fold) gives p < 0.05 in the",
        "paper's direction, is *reversed* when significant the other way, and is *inconclusive*",
        "otherwise or when both are at chance level (error rates of 90 % or more, MTWV of 0.01 or less,",
        "an ICBHI score of 50 or less: one class predicted for every cycle).",
        f"ASR claims use test CER when every upstream's WER is {WER_SATURATED:.0f} or more (WER stays the headline).",
        "`random` is the step-0 twin of each seed's `m2d` run (same architecture, front end, statistics and",
        "initial weights); M2D-X and SCORE start from that seed's `m2d`, so `m2d` is their control.",
        "",
        "## Leaderboard",
        "",
        leaderboard_markdown(df),
        "",
        "![heatmap](leaderboard.png)",
        "",
        "## The papers' claims beside the measurements",
        "",
        "| claim | task | protocol | paper | metric | expected better | control | difference [95 % CI] | p | units | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        t = c.test
        diff = (f"{t.diff:+.3g} [{t.ci95_low:+.3g}, {t.ci95_high:+.3g}]" if t.ci95_low == t.ci95_low
                else f"{t.diff:+.3g}")
        verdict = {"holds": "holds", "reversed": "**reversed**"}.get(c.verdict, f"inconclusive: {c.why}")
        lines.append(f"| {c.claim} | {c.task} | {c.protocol} | {c.paper} | {c.metric} | {c.a} {t.mean_a:.4g} | "
                     f"{c.b} {t.mean_b:.4g} | {diff} | {_fmt_p(t.p)} | {t.n} | {verdict} |")
    if not claims:
        lines.append("| (no pair of upstreams to compare was evaluated) | | | | | | | | | | |")
    power = power_table(df)
    if power:
        lines += ["", "## What this study can resolve", "",
                  "Std of the paired differences m2d - random over the shared units, and the smallest true "
                  "difference a paired t-test detects at p < 0.05 with 80 % power: with the units of this study, "
                  "and with 3 seeds.", "",
                  "| task | protocol | metric | units | sd of differences | detectable here | detectable with 3 seeds |",
                  "|---|---|---|---|---|---|---|"]
        for r in power:
            lines.append(f"| {r['task']} | {r['protocol']} | {r['metric']} | {r['units']} | {r['sd_diff']:.3g} | "
                         f"{r['mde_here']:.3g} | {r['mde_at_seeds']:.3g} |")
    lines += ["", "## Stages", ""]
    for st in meta.get("stages", []):
        lines.append(f"- {st['name']}: {st['status']} ({st.get('seconds', 0):.0f} s){' - ' + st['note'] if st.get('note') else ''}")
    notes = meta.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
