"""Seeds and statistics: intervals and paired tests against scipy, `--seeds` end to end on tiny, the
layer-normalised `weighted` input, pooled leaderboard rows and the claims verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st

from bench.cli import main
from bench.results.leaderboard import leaderboard, pool_seeds
from bench.results.report import claims_table, compare, power_table, render_report
from bench.run import RunRequest, run
from tiny_requests import tiny_request
from bench.results.stats import Unit, min_detectable_difference, paired_test, seeds_needed, summarise_units, t_interval

A = [61.2, 58.9, 63.4, 60.1, 59.7]
B = [57.0, 58.1, 60.2, 55.9, 58.8]


# -- numbers against scipy -------------------------------------------------------------------------

def test_t_interval_equals_scipy():
    lo, hi = t_interval(A)
    ref = st.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=st.sem(A))
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    assert all(math.isnan(v) for v in t_interval([3.0]))
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_paired_test_equals_scipy_and_pairs_by_seed_and_fold():
    a = [Unit(s, f"fold{f}", A[f] + s) for s in range(2) for f in range(5)]
    b = [Unit(s, f"fold{f}", B[f] + 0.5 * s) for s in range(2) for f in range(5)]
    b = list(reversed(b)) + [Unit(7, "fold1", 0.0)]  # order does not matter; unshared units are ignored
    res = paired_test(a, b)
    xa = np.array([A[f] + s for s in range(2) for f in range(5)])
    xb = np.array([B[f] + 0.5 * s for s in range(2) for f in range(5)])
    assert res.n == 10 and res.p == pytest.approx(st.ttest_rel(xa, xb).pvalue, rel=1e-12)
    d = xa - xb
    assert res.diff == pytest.approx(d.mean())
    assert (res.ci95_low, res.ci95_high) == pytest.approx(st.t.interval(0.95, 9, loc=d.mean(), scale=st.sem(d)))
    assert res.significant()
    same = paired_test(a, [Unit(u.seed, u.fold, u.score - 1.0) for u in a])  # constant difference: no test
    assert math.isnan(same.p) and "do not vary" in same.why and not same.significant()


def test_summary_mean_over_seeds_and_std_over_seeds():
    units = [Unit(s, f, v) for s, vals in ((0, (50, 60)), (1, (54, 64)), (2, (52, 68))) for f, v in zip("ab", vals)]
    s = summarise_units(units)
    per_seed = [55.0, 59.0, 60.0]
    assert s.score == pytest.approx(np.mean(per_seed)) and s.score_std == pytest.approx(np.std(per_seed, ddof=1))
    assert (s.n_seeds, s.n_folds) == (3, 2) and "3 seed(s) x 2 fold(s)" in s.method
    assert (s.ci95_low, s.ci95_high) == pytest.approx(t_interval([u.score for u in units]))


def test_min_detectable_difference_matches_simulated_power():
    sd, n = 2.0, 6
    mde = min_detectable_difference(sd, n)
    assert mde == pytest.approx((st.t.ppf(0.975, 5) + st.t.ppf(0.8, 5)) * sd / math.sqrt(n))
    rng = np.random.default_rng(0)  # the power at that difference is close to the nominal 80 %
    hits = np.mean([st.ttest_1samp(rng.normal(mde, sd, n), 0).pvalue < 0.05 for _ in range(4000)])
    assert 0.72 < hits < 0.86
    assert seeds_needed(mde, sd) == n and seeds_needed(0.0, sd) is None


# -- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seeds, message", [([], "at least one seed"), (["-1"], "integers >= 0"),
                                            (["0", "1", "0"], "given twice")])
def test_bad_seeds_are_one_line(seeds, message, capsys, tmp_path):
    code = main(["run", "--upstream", "fbank", "--task", "esc50", "--profile", "tiny", "--results",
                 str(tmp_path), "--seeds", *seeds])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and "--seeds" in err[0]


def test_reproduce_seeds_below_one_is_one_line(capsys, tmp_path):
    code = main(["reproduce", "--profile", "tiny", "--out", str(tmp_path), "--seeds", "0", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--seeds 0" in err[0]


# -- end to end on tiny ------------------------------------------------------------------------------

def _req(tiny_root, tmp_path, **kw) -> RunRequest:
    return tiny_request(tiny_root, tmp_path, **kw)


def test_seeds_give_one_record_with_every_seed_and_the_leaderboard_interval(tiny_root, tmp_path):
    one = [run(_req(tiny_root, tmp_path, task="icbhi", protocol="weighted", seed=s, lrs=[1e-3], write=False))[0]
           for s in (0, 1)]
    rec, path = run(_req(tiny_root, tmp_path, task="icbhi", protocol="weighted", seeds=[0, 1], lrs=[1e-3]))
    assert rec.seeds == [0, 1] and rec.secondary["n_seeds"] == 2
    assert [p["score"] for p in rec.secondary["per_seed"]] == [r.score for r in one]  # each seed as if run alone
    assert rec.score == pytest.approx(np.mean([r.score for r in one]))
    assert rec.secondary["score_std"] == pytest.approx(np.std([r.score for r in one], ddof=1))
    assert [u["seed"] for u in rec.secondary["units"]] == [0, 1]
    saved = json.loads(path.read_text())
    assert saved["seeds"] == [0, 1] and len(saved["selection"]["per_seed"]) == 2
    df = leaderboard(tmp_path / "results")
    assert list(df.columns[:9]) == ["upstream", "task", "protocol", "metric", "score", "n_seeds", "score_std",
                                    "ci95_low", "ci95_high"]
    row = df.iloc[0]
    assert row.n_seeds == 2 and (row.ci95_low, row.ci95_high) == pytest.approx(t_interval([r.score for r in one]))


def test_weighted_layer_normalisation_is_recorded_and_changes_the_input(tiny_root, tmp_path):
    on, _ = run(_req(tiny_root, tmp_path, task="icbhi", protocol="weighted", lrs=[1e-3], write=False))
    off, _ = run(_req(tiny_root, tmp_path, task="icbhi", protocol="weighted", lrs=[1e-3], write=False,
                      task_options={"normalize_layers": False}))
    assert on.details["normalize_layers"] is True and "layer-normed" in on.details["featurizer"]
    assert off.details["normalize_layers"] is False
    assert off.details["cache"]["key"] == on.details["cache"]["key"]  # one extraction serves both
    assert on.details["layer_weights"] != off.details["layer_weights"]


def test_cached_layer_normed_mean_is_the_mean_of_layer_normed_frames(tiny_root, tmp_path):
    """The `weighted` input equals s3prl's upstream_feature_normalize (F.layer_norm per frame) then the mean."""
    import upstreams
    from bench.cache import EmbeddingCache
    from bench.extract import ExtractionSettings, extract_to
    from tasks.clip_tasks import load_clip_task

    task = load_clip_task("icbhi", None, profile="tiny", root=str(tiny_root))
    examples = task.examples[:3]
    up = upstreams.load("random", arch="tiny").eval()
    settings = ExtractionSettings("mean", task.clip_seconds, task.pad_mode)
    entry = EmbeddingCache(tmp_path / "c").get_or_create(
        {"t": 1}, lambda tmp: extract_to(tmp, up, examples, settings, progress=False), [e.key for e in examples])
    from bench.extract import load_batch

    wavs = load_batch(examples, range(3), up.sample_rate, settings)
    with torch.no_grad():
        for i, w in enumerate(wavs):
            out = up([w])
            frames = torch.stack(out.hidden_states, 2)[0, : int(out.lengths[0])]  # [T, L, D]
            ref_ln = torch.nn.functional.layer_norm(frames, (frames.shape[-1],)).mean(0)
            np.testing.assert_allclose(entry.pooled(layer_normed=True)[i], ref_ln.numpy(), atol=2e-2, rtol=1e-2)
            np.testing.assert_allclose(entry.pooled()[i], frames.mean(0).numpy(), atol=2e-2, rtol=1e-2)
    # layer norm leaves every layer's frames at zero mean and unit variance over the feature axis: layers of
    # very different scales enter the weighted sum on one scale
    raw_scale = np.abs(entry.pooled()).mean(axis=(0, 2))
    assert raw_scale.max() / raw_scale.min() > 1.5


# -- pooling seeds and the claims --------------------------------------------------------------------

def _row(upstream, units, task="esc50", protocol="linear", metric="accuracy", hib=True):
    s = summarise_units(units)
    return {"upstream": upstream, "task": task, "protocol": protocol, "metric": metric, "score": s.score,
            "higher_is_better": hib, "manifest_sha256": "m", "folds": " ".join(sorted({u.fold for u in units})),
            "units": units, "std": 1.0, "checkpoint_sha256": upstream[:3], "upstream_options": "{}",
            "record": f"{upstream}.json", "wall_time_s": 1.0, "git_commit": "c", "created": "t", "seeds": "",
            "n_seeds": s.n_seeds, "score_std": s.score_std, "ci95_low": s.ci95_low, "ci95_high": s.ci95_high}


def test_pool_seeds_merges_one_checkpoint_per_seed():
    rows = [_row("m2d", [Unit(s, f"fold{f}", 50 + s + f) for f in range(2)]) for s in range(3)]
    pooled = pool_seeds(pd.DataFrame(rows))
    assert len(pooled) == 1
    r = pooled.iloc[0]
    assert r.n_seeds == 3 and len(r.units) == 6 and r.score == pytest.approx(51.5)
    assert r.checkpoint_sha256.count(";") == 2 and r.seeds == "0 1 2"
    with pytest.raises(ValueError, match="share a seed"):
        pool_seeds(pd.DataFrame(rows + [rows[0]]))


def test_claims_hold_reverse_or_stay_inconclusive_by_paired_p():
    rng = np.random.default_rng(1)
    base = [Unit(s, f"fold{f}", 40 + rng.normal(0, 3)) for s in range(3) for f in range(5)]
    better = [Unit(u.seed, u.fold, u.score + 4 + rng.normal(0, 0.5)) for u in base]
    noisy = [Unit(u.seed, u.fold, u.score + rng.normal(0, 3)) for u in base]
    df = pd.DataFrame([_row("random", base), _row("m2d", better)])
    (claim,) = claims_table(df)
    assert claim.verdict == "holds" and claim.test.p < 0.05 and claim.test.n == 15
    df = pd.DataFrame([_row("random", better), _row("m2d", base)])
    assert claims_table(df)[0].verdict == "reversed"
    _, verdict, why = compare(pd.Series(_row("m2d", noisy)), pd.Series(_row("random", base)))
    assert verdict in ("inconclusive", "holds", "reversed")
    if verdict == "inconclusive":
        assert why.startswith("p = ")
    # error rates: lower is better
    per_a = [Unit(0, "test", 60.0), Unit(1, "test", 61.0), Unit(2, "test", 59.5)]
    per_b = [Unit(0, "test", 70.0), Unit(1, "test", 72.0), Unit(2, "test", 69.0)]
    df = pd.DataFrame([_row("m2d", per_a, "pr", "weighted", "per", False),
                       _row("random", per_b, "pr", "weighted", "per", False)])
    assert claims_table(df)[0].verdict == "holds"
    assert power_table(df)[0]["units"] == 3


def test_asr_claims_use_cer_when_every_wer_is_saturated():
    def asr(upstream, wer, cers):
        return _row(upstream, [Unit(s, "test", wer + s * 0.1, (("cer", c),)) for s, c in enumerate(cers)],
                    "asr", "weighted", "wer", False)

    df = pd.DataFrame([asr("m2d", 99.0, [50.0, 51.0, 49.0]), asr("random", 98.0, [60.0, 61.5, 59.2])])
    claim = claims_table(df)[0]
    assert claim.metric == "cer" and claim.verdict == "holds" and claim.test.diff < 0
    report = render_report(df, {"command": "bench reproduce", "stages": []})
    assert "| asr | weighted |" in report and "| cer |" in report and "holds" in report
    df = pd.DataFrame([asr("m2d", 40.0, [50.0, 51.0, 49.0]), asr("random", 98.0, [60.0, 61.5, 59.2])])
    assert claims_table(df)[0].metric == "wer"
