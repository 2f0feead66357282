"""Statistics over seeds and folds: intervals, paired tests, and the smallest difference a study can see.

Why this module exists: one seed of a mini task moves by up to 10 points, so a single number cannot
say which representation is better. Every score the suite reports is therefore built from *units*:
one test score per (seed, fold) - a fold of a cross-validated task, or the single test split
("test") of the others. A record with 3 seeds on 5-fold ESC-50 holds 15 units.

- The score is the mean over seeds of each seed's mean over its folds (with the same folds in every
  seed, that is the mean over units).
- `score_std` is the std over seeds of those per-seed scores: the variance a user who re-runs the
  whole thing sees.
- The 95 % interval is Student's t-interval of the mean over units (`t_interval`). With one seed it is
  an interval over folds (fold variance only), with one fold an interval over seeds; the method
  string says which.
- Two upstreams are compared with a paired t-test over the units they share (same seed, same fold):
  pairing removes what the two have in common (the fold's test clips, the head seed). Units within a
  seed are not independent draws of pretraining, so with few seeds this test is, if anything,
  optimistic about pretraining variance; the method string names the unit count so readers can judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["Unit", "units_from", "t_interval", "summarise_units", "Summary", "paired_test", "Paired",
           "min_detectable_difference", "seeds_needed", "check_seeds"]

ALPHA = 0.05


@dataclass(frozen=True)
class Unit:
    """One test score: one seed on one fold ("test" when the task has no folds)."""

    seed: int
    fold: str
    score: float
    extra: tuple = ()  # (name, value) pairs of secondary metrics measured on the same unit (e.g. ASR cer)

    def value(self, metric: str | None = None) -> float:
        if metric is None:
            return self.score
        return float(dict(self.extra)[metric])

    def to_dict(self) -> dict:
        return {"seed": self.seed, "fold": self.fold, "score": self.score, **dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict) -> "Unit":
        extra = tuple(sorted((k, float(v)) for k, v in d.items() if k not in ("seed", "fold", "score")
                             and isinstance(v, (int, float)) and v is not None))
        return cls(int(d["seed"]), str(d["fold"]), float(d["score"]), extra)


def units_from(seed: int, score: float, secondary: dict, per_fold: list | None) -> list[Unit]:
    """One seed's units: per fold for cross-validated tasks (`details.per_fold`), else the test split,
    carrying its numeric secondary metrics (ASR's CER) for claims that need them."""
    if per_fold:
        return [Unit(seed, str(f["fold"]), float(f["test"])) for f in per_fold]
    extra = tuple(sorted((k, float(v)) for k, v in secondary.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v))
    return [Unit(seed, "test", float(score), extra)]


def check_seeds(seeds: Sequence[int] | None, flag: str = "--seeds") -> list[int]:
    """The seeds a user typed, or one line saying what is wrong with them."""
    from ..errors import UserError

    if seeds is None:
        return [0]
    seeds = list(seeds)
    if not seeds:
        raise UserError(f"{flag}: give at least one seed, e.g. {flag} 0 1 2")
    bad = [s for s in seeds if not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise UserError(f"{flag}: seeds must be integers >= 0, got {', '.join(map(str, bad))}")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise UserError(f"{flag}: seed(s) {', '.join(map(str, dup))} given twice; each seed once, e.g. {flag} 0 1 2")
    return [int(s) for s in seeds]


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student's t-interval of the mean; (nan, nan) with fewer than 2 values."""
    x = np.asarray(list(values), dtype=float)
    if x.size < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return mean, mean
    half = float(_st.t.ppf(0.5 + confidence / 2, x.size - 1)) * sem
    return mean - half, mean + half


@dataclass(frozen=True)
class Summary:
    score: float
    n_seeds: int
    n_folds: int
    score_std: float  # std over seeds of the per-seed scores (nan with one seed)
    ci95_low: float
    ci95_high: float
    method: str


def _per_seed(units: Sequence[Unit], metric: str | None = None) -> dict[int, float]:
    by: dict[int, list[float]] = {}
    for u in units:
        by.setdefault(u.seed, []).append(u.value(metric))
    return {s: float(np.mean(v)) for s, v in sorted(by.items())}


def summarise_units(units: Sequence[Unit], metric: str | None = None) -> Summary:
    if not units:
        raise ValueError("no units to summarise")
    per_seed = _per_seed(units, metric)
    seeds = list(per_seed.values())
    folds = sorted({u.fold for u in units})
    low, high = t_interval([u.value(metric) for u in units])
    n = len(units)
    method = (f"t-interval over {len(seeds)} seed(s) x {len(folds)} fold(s) = {n} unit(s)" if n >= 2
              else "one unit: no interval")
    return Summary(float(np.mean(seeds)), len(seeds), len(folds),
                   float(np.std(seeds, ddof=1)) if len(seeds) > 1 else math.nan, low, high, method)


@dataclass(frozen=True)
class Paired:
    mean_a: float
    mean_b: float
    diff: float  # mean of (a - b) over the shared units
    ci95_low: float
    ci95_high: float
    p: float  # two-sided paired t-test; nan when it cannot be computed (fewer than 2 pairs, no variance)
    n: int  # shared units
    why: str = ""  # why p is nan

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p == self.p and self.p < alpha


def paired_test(a: Sequence[Unit], b: Sequence[Unit], metric: str | None = None) -> Paired:
    """Paired t-test of `a` against `b` over the (seed, fold) units both have."""
    ka = {(u.seed, u.fold): u.value(metric) for u in a}
    kb = {(u.seed, u.fold): u.value(metric) for u in b}
    shared = sorted(set(ka) & set(kb))
    xa = np.array([ka[k] for k in shared], dtype=float)
    xb = np.array([kb[k] for k in shared], dtype=float)
    if len(shared) == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, "no shared (seed, fold) units")
    d = xa - xb
    low, high = t_interval(d)
    why, p = "", math.nan
    if len(shared) < 2:
        why = "one shared unit: no test"
    elif float(d.std(ddof=1)) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # constant up to rounding
        why = "the differences do not vary over units: no test"
    else:
        p = float(_st.ttest_rel(xa, xb).pvalue)
    return Paired(float(xa.mean()), float(xb.mean()), float(d.mean()), low, high, p, len(shared), why)


def min_detectable_difference(sd_diff: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test over `n` units detects at `alpha` with
    probability `power`, for differences with std `sd_diff` (the usual normal-approximation formula
    with t quantiles: (t_{1-a/2} + t_{power}) sd / sqrt(n))."""
    if n < 2 or not sd_diff == sd_diff:
        return math.nan
    df = n - 1
    return float((_st.t.ppf(1 - alpha / 2, df) + _st.t.ppf(power, df)) * sd_diff / math.sqrt(n))


def seeds_needed(difference: float, sd_diff_per_seed: float, alpha: float = ALPHA, power: float = 0.8,
                 max_seeds: int = 1000) -> int | None:
    """Seeds needed to detect `difference` when one seed's paired difference has std `sd_diff_per_seed`."""
    if difference <= 0 or not sd_diff_per_seed == sd_diff_per_seed:
        return None
    for n in range(2, max_seeds + 1):
        if min_detectable_difference(sd_diff_per_seed, n, alpha, power) <= difference:
            return n
    return None
