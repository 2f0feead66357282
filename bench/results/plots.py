"""Leaderboard figures (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from upstreams.fileio import atomic_path  # noqa: E402

__all__ = ["heatmap", "task_bars", "fmt_score"]


def fmt_score(metric: str, value: float) -> str:
    if metric in ("mtwv", "atwv"):
        return f"{value:.3f}"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3f}"


def _label(row) -> str:
    """The upstream, with its checkpoint's short hash when one checkpoint stands behind the row (rows pooled
    over seeds hold one checkpoint per seed, `;`-separated, and are labelled by the upstream alone)."""
    sha = str(row.get("checkpoint_sha256") or "")
    return row["upstream"] if not sha or ";" in sha else f"{row['upstream']} ({sha[:6]})"


CAPTION = ("colour: position within each column, green = best; [a, b]: 95 % t-interval over seed x fold units "
           "(± fold std with one unit per fold only)")


def heatmap(df: pd.DataFrame, path: str | Path, title: str = "Leaderboard") -> Path:
    """Upstream x (task, protocol) grid, coloured by rank within each column (green = best), annotated."""
    if df.empty:
        raise ValueError("no results to plot: run `bench run ...` first")
    df = df.copy()
    df["row"] = [_label(r) for _, r in df.iterrows()]
    df["col"] = df["task"] + "\n" + df["protocol"] + "\n(" + df["metric"] + (
        df["higher_is_better"].map({True: " ↑", False: " ↓"})) + ")"
    rows = list(dict.fromkeys(df["row"]))
    cols = sorted(dict.fromkeys(df["col"]))
    score = np.full((len(rows), len(cols)), np.nan)
    colour = np.full_like(score, np.nan)
    text = [["" for _ in cols] for _ in rows]
    for c, col in enumerate(cols):
        sub = df[df["col"] == col]
        vals = sub["score"].to_numpy(dtype=float)
        hib = bool(sub["higher_is_better"].iloc[0])
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        for _, r in sub.iterrows():
            i = rows.index(r["row"])
            score[i, c] = r["score"]
            rel = 0.5 if hi == lo else (r["score"] - lo) / (hi - lo)
            colour[i, c] = rel if hib else 1 - rel
            text[i][c] = fmt_score(r["metric"], r["score"]) + _spread_text(r)
    width = max(4.0, 1.3 + 1.25 * len(cols))  # wide enough for the y labels and a readable caption
    # the caption wrapped to the figure's width (about 17 characters of 7-pt text per inch), and room for it
    caption = textwrap.fill(CAPTION, width=max(40, int(width * 17)))
    fig, ax = plt.subplots(figsize=(width, 1.0 + 0.55 * len(rows) + 0.12 * caption.count("\n")))
    ax.imshow(np.ma.masked_invalid(colour), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for c in range(len(cols)):
            if text[i][c]:
                dark = not 0.2 <= colour[i, c] <= 0.8
                ax.text(c, i, text[i][c], ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), cols, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(caption, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def task_bars(df: pd.DataFrame, task: str, path: str | Path) -> Path:
    """One bar per upstream and protocol for `task`, with error bars where folds/seeds give a std."""
    sub = df[df["task"] == task]
    if sub.empty:
        raise ValueError(f"no results for task '{task}'")
    protocols = sorted(sub["protocol"].unique())
    ups = list(dict.fromkeys(sub["upstream"]))
    width = 0.8 / len(protocols)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(ups), 3.2))
    for k, prot in enumerate(protocols):
        p = sub[sub["protocol"] == prot].set_index("upstream")
        x = np.arange(len(ups)) + k * width
        vals = np.array([p["score"].get(u, np.nan) for u in ups], dtype=float)
        lo = np.array([_num(p["ci95_low"].get(u)) if "ci95_low" in p else np.nan for u in ups], dtype=float)
        hi = np.array([_num(p["ci95_high"].get(u)) if "ci95_high" in p else np.nan for u in ups], dtype=float)
        errs = np.nan_to_num(np.vstack([vals - lo, hi - vals]))
        ax.bar(x, vals, width, yerr=np.clip(errs, 0, None), capsize=3, label=prot)
    ax.set_xticks(np.arange(len(ups)) + 0.4 - width / 2, ups)
    metric = sub["metric"].iloc[0]
    ax.set_ylabel(metric + (" (higher is better)" if bool(sub["higher_is_better"].iloc[0]) else " (lower is better)"))
    ax.set_title(f"{task} (error bars: 95 % t-interval over seed x fold units)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _num(v) -> float:
    return np.nan if v is None else float(v)


def _spread_text(r) -> str:
    """`[low, high]` for the 95 % interval when there is one, else `±std` over folds, else nothing."""
    lo, hi = _num(r.get("ci95_low")), _num(r.get("ci95_high"))
    if lo == lo and hi == hi:
        return f"\n[{fmt_score(r['metric'], lo)}, {fmt_score(r['metric'], hi)}]"
    std = _num(r.get("std"))
    return f"\n±{fmt_score(r['metric'], std)}" if std == std else ""


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return Path(path)
