"""QbE position removal: the statistic on known inputs, the upstreams' declared windows, the run record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tasks.qbe import position_means, position_variance_fraction, qbe_scores, remove_position_mean, standardize


def _synthetic(seed: int = 0, p: int = 7, dim: int = 5, lengths=(3, 7, 16, 30, 1, 22, 9, 14)):
    """Content whose per-position means all equal `level`, plus a known offset per position."""
    g = torch.Generator().manual_seed(seed)
    content = [torch.randn(n, dim, generator=g, dtype=torch.float64) for n in lengths]
    pos = torch.cat([torch.arange(n) % p for n in lengths])
    flat = torch.cat(content)
    for k in range(p):  # make every position's content mean exactly `level`
        flat[pos == k] -= flat[pos == k].mean(0)
    level = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)[:dim]
    flat += level
    content = list(flat.split(list(lengths)))
    offsets = 4.0 * torch.randn(p, dim, generator=g, dtype=torch.float64)
    feats = [c + offsets[torch.arange(len(c)) % p] for c in content]
    return content, feats, offsets, level, p


def _naive_fraction(feats, p) -> float:
    """Standardise every dimension, then between-position / total sum of squares over all dimensions."""
    x = np.concatenate([f.double().numpy() for f in feats])
    x = (x - x.mean(0)) / x.std(0)
    pos = np.concatenate([np.arange(len(f)) % p for f in feats])
    between = sum((pos == k).sum() * (x[pos == k].mean(0) ** 2).sum() for k in range(p) if (pos == k).any())
    return between / (x**2).sum()


def test_removal_recovers_content_and_zeroes_position_means():
    content, feats, offsets, level, p = _synthetic()
    out = remove_position_mean(feats, p)
    pos = torch.cat([torch.arange(len(f)) % p for f in out.features])
    flat = torch.cat(out.features)
    overall = flat.mean(0)
    for k in range(p):  # every position's mean is the overall mean: no position component left
        assert torch.allclose(flat[pos == k].mean(0), overall, atol=1e-10)
    # the content comes back up to its global mean (here: exactly, since the overall mean is kept)
    shift = torch.cat(content).mean(0) - overall
    for c, f in zip(content, out.features):
        assert torch.allclose(f + shift, c, atol=1e-10)
    assert out.variance_before > 0.5 and out.variance_after < 1e-12
    means, counts = position_means(feats, p)
    assert torch.equal(means, out.position_mean) and int(counts.sum()) == len(flat)


def test_variance_fraction_matches_naive_numpy():
    _, feats, _, _, p = _synthetic(seed=3)
    feats32 = [f.float() for f in feats]
    scaled = [f * torch.tensor([1e3, 1.0, 1e-3, 5.0, 0.1], dtype=torch.float64) + 100.0 for f in feats]
    for fs in (feats, feats32, scaled):
        got = position_variance_fraction(fs, p)
        assert got == pytest.approx(_naive_fraction(fs, p), rel=1e-6, abs=1e-9)
        out = remove_position_mean(fs, p)
        assert out.variance_before == pytest.approx(got, rel=1e-12)
        assert out.variance_after == pytest.approx(_naive_fraction(out.features, p), abs=1e-6)
    # content alone (position means equal by construction) has no position variance
    content, *_ = _synthetic(seed=3)
    assert position_variance_fraction(content, p) == pytest.approx(0.0, abs=1e-12)
    # summary rounds for records
    assert remove_position_mean(feats, p).summary()["frames_per_window"] == p


def test_none_leaves_features_bit_identical():
    _, feats, *_ = _synthetic(seed=1)
    copies = [f.clone() for f in feats]
    out = remove_position_mean(feats, None)
    assert out.frames_per_window is None and out.position_mean is None and out.variance_before is None
    assert all(a is b for a, b in zip(out.features, feats))
    assert all(torch.equal(a, b) for a, b in zip(feats, copies))
    # and the QbE scores are then exactly the unremoved ones
    q, d = out.features[:3], out.features[3:]
    assert torch.equal(qbe_scores(q, d, threads=1), qbe_scores(feats[:3], feats[3:], threads=1))


def test_inputs_are_not_modified_and_bad_arguments_fail():
    _, feats, _, _, p = _synthetic(seed=2)
    feats = [f.float() for f in feats]
    copies = [f.clone() for f in feats]
    out = remove_position_mean(feats, p)
    assert all(torch.equal(a, b) for a, b in zip(feats, copies))
    assert all(o.dtype == torch.float32 and o.shape == f.shape for o, f in zip(out.features, feats))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="frames_per_window"):
            remove_position_mean(feats, bad)
    with pytest.raises(ValueError, match=r"\(frames, 5\)"):
        remove_position_mean([feats[0], torch.zeros(3, 4)], p)


def test_removal_undoes_a_shared_position_pattern_for_scoring():
    """Unrelated utterances sharing only a position pattern stop looking alike once it is removed."""
    g = torch.Generator().manual_seed(0)
    p, dim = 10, 16
    pattern = 3.0 * torch.randn(p, dim, generator=g)
    docs = [torch.randn(40, dim, generator=g) + pattern[torch.arange(40) % p] for _ in range(6)]
    queries = [torch.randn(10, dim, generator=g) + pattern for _ in range(3)]
    before = position_variance_fraction([*queries, *docs], p)
    out = remove_position_mean([*queries, *docs], p)
    assert before > 0.8 and out.variance_after < 1e-6
    def same_position_cosine(qs, ds):  # after QbE's standardisation, over all query x document pairs
        sq, sd = standardize(qs, ds)
        return float(torch.stack([torch.nn.functional.cosine_similarity(q, d[:p], dim=-1).mean()
                                  for q in sq for d in sd]).mean())

    assert same_position_cosine(queries, docs) > 0.7
    assert abs(same_position_cosine(out.features[:3], out.features[3:])) < 0.1


# --------------------------------------------------------------------------- declared windows


def test_m2d_frames_per_window_is_how_the_encoder_cuts_windows():
    import upstreams

    model = upstreams.load("random", arch="tiny").eval()
    cfg = model.encoder.config
    p = model.frames_per_window
    assert p == cfg.input_frames // cfg.patch_size[1] == 52
    # constant input: every full window is the same spectrogram, so frames repeat with period p
    # exactly, and with no shorter period (within a window the position embeddings differ)
    seconds = 3 * p * model.downsample_rate / model.sample_rate + 0.5
    with torch.no_grad():
        out = model([torch.zeros(int(seconds * model.sample_rate))])
    n = int(out.lengths[0])
    assert n > 3 * p
    for h in out.hidden_states:
        x = h[0, : 3 * p]
        scale = float(x.abs().max())
        assert torch.allclose(x[:p], x[p : 2 * p], atol=1e-5 * scale)
        assert torch.allclose(x[:p], x[2 * p :], atol=1e-5 * scale)
        shortest = min(float((x[k : k + p] - x[:p]).abs().max()) for k in range(1, p))
        assert shortest > 1e-3 * scale
    assert upstreams.load("fbank").frames_per_window is None


# --------------------------------------------------------------------------- the protocol


def _qbe(tiny_root, tmp_path, upstream_name, removal, **options):
    from bench.run import RunRequest, run

    req = RunRequest(upstream=upstream_name, task="qbe", protocol="dtw", profile="tiny", data_root=str(tiny_root),
                     upstream_options=options, results=str(tmp_path / "results"), cache_root=str(tmp_path / "cache"),
                     progress=False, write=False, task_options={} if removal is None else {"position_removal": removal})
    record, _ = run(req, log=lambda _m: None)
    return record


def test_protocol_records_position_removal_and_fbank_is_unchanged(tiny_root, tmp_path):
    rec_on = _qbe(tiny_root, tmp_path, "random", None, arch="tiny")
    pr = rec_on.details["scoring"]["position_removal"]
    assert pr["enabled"] and pr["applied"] and pr["frames_per_window"] == 52
    dev = pr["variance_fraction"]["dev"]
    assert len(dev) == 3 and all(r["after"] <= 1e-3 and r["before"] > r["after"] for r in dev)
    assert pr["variance_fraction"]["eval"]["layer"] == rec_on.details["chosen_layer"]
    assert all("position_variance" in r for r in rec_on.details["per_layer"])
    rec_off = _qbe(tiny_root, tmp_path, "random", False, arch="tiny")
    off = rec_off.details["scoring"]["position_removal"]
    assert not off["enabled"] and not off["applied"]
    assert [r["before"] for r in off["variance_fraction"]["dev"]] == [r["before"] for r in dev]
    assert rec_on.details["cache"]["key"] == rec_off.details["cache"]["key"] and rec_off.details["cache"]["hit"]
    json.dumps(rec_on.to_dict())

    fb_on, fb_off = (_qbe(tiny_root, tmp_path, "fbank", r) for r in (True, False))
    assert fb_on.details["scoring"]["position_removal"]["frames_per_window"] is None
    assert fb_on.details["scoring"]["position_removal"]["variance_fraction"] is None
    untimed = (lambda rec: [{k: v for k, v in r.items() if k != "dtw_seconds"} for r in rec.details["per_layer"]])
    assert fb_on.score == fb_off.score and untimed(fb_on) == untimed(fb_off)
    assert fb_on.details["eval"] == fb_off.details["eval"]


def test_cli_flag_only_for_qbe(capsys):
    from bench.cli import main

    code = main(["run", "--upstream", "fbank", "--task", "pr", "--position-removal", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--position-removal applies only to --task qbe" in err[0]
