"""The claims report: what the papers say beside what this run measured.

Each claim is checked against the leaderboard with the same direction-aware comparison, and the
report says plainly whether the measurement supports it at this scale, or that it cannot tell
(both upstreams at chance level, or closer than the fold-to-fold spread). Numbers quoted from the
papers are in `PAPER_CLAIMS` with their source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .plots import fmt_score

__all__ = ["PAPER_CLAIMS", "relative_improvement", "claims_table", "render_report"]

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
    measured: str
    holds: bool | None  # None: a tie, undefined, or too close / too degenerate to judge (see `why`)
    why: str = ""  # why a claim is not judged, shown in the report


# Scores at which a task was not learned at all: CTC error rates near 100 % (the blank plateau, or
# a head that fails on the unseen test voice) and term-weighted values near 0 (the "always NO"
# system scores exactly 0). Two upstreams both beyond these say nothing about which one is better.
_NOT_LEARNED = {"per": lambda v: v >= 90.0, "wer": lambda v: v >= 90.0, "cer": lambda v: v >= 90.0,
                "mtwv": lambda v: v <= 0.01, "atwv": lambda v: v <= 0.01}


def _unjudgeable(a, b) -> str:
    """Why the comparison of rows `a` and `b` cannot support or refute a claim ("" if it can)."""
    floor = _NOT_LEARNED.get(str(a.metric))
    if floor and floor(a.score) and floor(b.score):
        return "inconclusive: neither learned the task (both at chance level)"
    if a.score == b.score:
        return "tie"
    sds = [float(x) for x in (a.get("std"), b.get("std")) if x is not None and x == x]
    if len(sds) == 2 and abs(a.score - b.score) < max(sds):
        return "inconclusive: difference smaller than the std over folds"
    return ""


def _score(df: pd.DataFrame, upstream: str, task: str, protocol: str):
    row = df[(df.upstream == upstream) & (df.task == task) & (df.protocol == protocol)]
    if row.empty:
        return None
    return row.iloc[0]


def _verdict(a, b, better: bool) -> tuple[bool | None, str]:
    why = _unjudgeable(a, b)
    return (None, why) if why else (better, "")


def claims_table(df: pd.DataFrame) -> list[Claim]:
    out: list[Claim] = []
    for (task, protocol), _ in df.groupby(["task", "protocol"]):
        a, b = _score(df, "m2d", task, protocol), _score(df, "random", task, protocol)
        if a is not None and b is not None:
            better = a.score > b.score if a.higher_is_better else a.score < b.score
            out.append(Claim("M2D beats no pretraining (random)", task, protocol, "M2D > random",
                             f"m2d {fmt_score(a.metric, a.score)} vs random {fmt_score(b.metric, b.score)}",
                             *_verdict(a, b, bool(better))))
    for protocol in sorted(df[df.task == "icbhi"].protocol.unique()):
        a, b = _score(df, "m2dx", "icbhi", protocol), _score(df, "m2d", "icbhi", protocol)
        if a is not None and b is not None:
            out.append(Claim("M2D-X with background noise beats M2D on respiratory sounds", "icbhi", protocol,
                             f"{PAPER_CLAIMS['icbhi']['m2dx']} vs {PAPER_CLAIMS['icbhi']['m2d']}",
                             f"m2dx {a.score:.2f} vs m2d {b.score:.2f}",
                             *_verdict(a, b, bool(a.score > b.score))))
    for task, paper_rel in PAPER_CLAIMS["score_relative"].items():
        for protocol in sorted(df[df.task == task].protocol.unique()):
            a, b = _score(df, "score", task, protocol), _score(df, "m2d", task, protocol)
            if a is None or b is None:
                continue
            rel = relative_improvement(b.score, a.score, bool(a.higher_is_better))
            out.append(Claim("SCORE improves content tasks over its base", task, protocol,
                             f"+{paper_rel:.2f} % relative (HuBERT base)",
                             f"{rel:+.2f} % relative (score {fmt_score(a.metric, a.score)} vs m2d "
                             f"{fmt_score(b.metric, b.score)} {a.metric})",
                             *((None, "undefined") if rel != rel else _verdict(a, b, bool(rel > 0)))))
    return out


def _markdown_table(df: pd.DataFrame, columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """Upstream rows x task/protocol columns, scores with fold std where there is one."""
    cells = df.assign(
        col=df.task + " " + df.protocol + " (" + df.metric + (df.higher_is_better.map({True: " ↑", False: " ↓"})) + ")",
        val=[fmt_score(m, s) + (f" ± {fmt_score(m, sd)}" if sd == sd and sd is not None else "")
             for m, s, sd in zip(df.metric, df.score, df["std"])],
    )
    wide = cells.pivot_table(index="upstream", columns="col", values="val", aggfunc="first").fillna("—")
    order = [u for u in ("fbank", "random", "m2d", "m2dx", "score") if u in wide.index]
    wide = wide.loc[order + [u for u in wide.index if u not in order]]
    wide = wide.reset_index()
    return _markdown_table(wide, list(wide.columns))


def render_report(df: pd.DataFrame, meta: dict) -> str:
    claims = claims_table(df)
    verdict = {True: "yes", False: "**no**"}
    lines = [
        "# Reproduction report",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Commit: `{meta.get('git_commit', '')}`  ",
        f"Machine: {meta.get('machine', '')}  ",
        f"Total wall time: {meta.get('wall_time', '')}  ",
        f"Data profile: {meta.get('profile', '')} (manifests: {meta.get('manifests', '')})",
        "",
        "Everything below was produced by `bench reproduce`; nothing is hand-edited. Scores are on the",
        "offline mini-benchmark (synthetic speech from TTS voices, real environmental recordings, simulated",
        "respiratory sounds) with small CPU-trained models, so they are not comparable in absolute terms",
        "with the papers' numbers; the claims are compared by direction. A comparison is marked",
        "inconclusive when both upstreams are at chance level (error rates of 90 % or more, MTWV of",
        "0.01 or less) or differ by less than the std over folds.",
        "",
        "## Leaderboard",
        "",
        leaderboard_markdown(df),
        "",
        "![heatmap](leaderboard.png)",
        "",
        "## The papers' claims beside the measurements",
        "",
        "| claim | task | protocol | paper | measured | holds here |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {c.claim} | {c.task} | {c.protocol} | {c.paper} | {c.measured} | {verdict.get(c.holds, c.why or 'undefined')} |")
    if not claims:
        lines.append("| (no pair of upstreams to compare was evaluated) | | | | | |")
    lines += ["", "## Stages", ""]
    for st in meta.get("stages", []):
        lines.append(f"- {st['name']}: {st['status']} ({st.get('seconds', 0):.0f} s){' - ' + st['note'] if st.get('note') else ''}")
    notes = meta.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
