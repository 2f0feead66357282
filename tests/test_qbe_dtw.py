"""QbE subsequence DTW: equal to a naive per-pair reference, to dtw-python and to s3prl 0.4.18."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from script_module import load_script
from tasks.qbe import dtw as qdtw
from tasks.qbe.stdlist import read_stdlist, write_stdlist


# --------------------------------------------------------------------------- naive reference


def naive_subsequence_dtw(d: np.ndarray) -> float:
    """dtw-python's asymmetric pattern, open begin and end, written cell by cell."""
    n, m = d.shape
    g = np.full((n, m), np.inf)
    g[0] = d[0]
    for i in range(1, n):
        for j in range(m):
            best = g[i - 1, j]
            if j >= 1:
                best = min(best, g[i - 1, j - 1])
            if j >= 2:
                best = min(best, g[i - 1, j - 2])
            g[i, j] = d[i, j] + best
    return g[n - 1].min() / n


def naive_qbe_scores(queries, docs) -> np.ndarray:
    """s3prl's quesst14_dtw pipeline per pair in float64 numpy, without s3prl or dtw-python."""
    qs = [q.double().numpy() for q in queries]
    ds = [d.double().numpy() for d in docs]
    allf = np.concatenate(qs + ds)
    mean, std = allf.mean(0), np.clip(allf.std(0, ddof=1), 1e-9, None)
    qs = [(q - mean) / std for q in qs]
    ds = [(d - mean) / std for d in ds]
    raw = np.zeros((len(qs), len(ds)))
    for i, q in enumerate(qs):
        if len(q) < 5:
            continue
        for j, d in enumerate(ds):
            cos = 1 - (q @ d.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(d, axis=1))
            c = np.exp(np.clip(cos, 0, 2)) - 1
            lo, hi = c.min(1, keepdims=True), c.max(1, keepdims=True)
            c = (c - lo) / np.clip(hi - lo, 1e-9, None)
            raw[i, j] = -naive_subsequence_dtw(c)
    return (raw - raw.mean(1, keepdims=True)) / np.clip(raw.std(1, keepdims=True), 1e-9, None)


def random_set(seed: int, n_q: int = 5, n_d: int = 7, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randn(int(torch.randint(5, 15, (1,), generator=g)), dim, generator=g) for _ in range(n_q - 1)]
    queries.append(torch.randn(3, dim, generator=g))  # shorter than 5 frames: scores 0
    docs = [torch.randn(int(torch.randint(1, 40, (1,), generator=g)), dim, generator=g) for _ in range(n_d)]
    return queries, docs


# --------------------------------------------------------------------------- core recursion


@pytest.mark.parametrize("seed", range(4))
def test_subsequence_dtw_equals_naive_on_padded_batch(seed):
    g = torch.Generator().manual_seed(seed)
    batch, n, m = 6, 9, 13
    dist = torch.rand(batch, n, m, generator=g, dtype=torch.float64)
    qlen = torch.randint(1, n + 1, (batch,), generator=g)
    dlen = torch.randint(1, m + 1, (batch,), generator=g)
    ours = qdtw.subsequence_dtw(dist, qlen, dlen)
    for b in range(batch):
        ref = naive_subsequence_dtw(dist[b, : qlen[b], : dlen[b]].numpy())
        assert ours[b].item() == pytest.approx(ref, abs=1e-12)


def test_subsequence_dtw_step_pattern():
    d = torch.ones(1, 4, 10, dtype=torch.float64)
    for i, j in enumerate([5, 6, 6, 8]):  # steps of +1, +0 and +2 document frames are legal
        d[0, i, j] = 0.0
    assert qdtw.subsequence_dtw(d).item() == 0.0
    d = torch.ones(1, 2, 10, dtype=torch.float64)
    d[0, 0, 2] = d[0, 1, 5] = 0.0  # a +3 step is not: one of the two rows must pay 1
    assert qdtw.subsequence_dtw(d).item() == pytest.approx(0.5)


def test_subsequence_dtw_rejects_bad_lengths():
    with pytest.raises(ValueError, match="doc_lengths"):
        qdtw.subsequence_dtw(torch.rand(2, 3, 4), doc_lengths=torch.tensor([4, 5]))


# --------------------------------------------------------------------------- full scoring


@pytest.mark.parametrize("seed", range(3))
def test_qbe_scores_equal_naive_pipeline(seed):
    queries, docs = random_set(seed)
    ref = naive_qbe_scores(queries, docs)
    ours64 = qdtw.qbe_scores(queries, docs, dtype=torch.float64)
    np.testing.assert_allclose(ours64.numpy(), ref, atol=1e-5)  # features stay float32 after standardising
    ours32 = qdtw.qbe_scores(queries, docs)
    assert np.abs(ours32.numpy() - ref).max() < 1e-4
    assert (ours32[-1] == 0).all()  # the 3-frame query


def test_double_inputs_match_naive_to_machine_precision():
    queries, docs = random_set(7)
    queries = [q.double() for q in queries]
    docs = [d.double() for d in docs]
    ours = qdtw.qbe_scores(queries, docs, dtype=torch.float64)
    np.testing.assert_allclose(ours.numpy(), naive_qbe_scores(queries, docs), atol=1e-9)


def test_blocking_chunking_and_threads_do_not_change_scores():
    queries, docs = random_set(11, n_q=9, n_d=15)
    reference = qdtw.raw_match_scores(queries, docs, dtype=torch.float64)
    threads_before = torch.get_num_threads()
    for block_rows, chunk_columns, threads in [(1, 1, 1), (20, 50, 2), (10_000, 10_000, 1), (30, 40, 3)]:
        other = qdtw.raw_match_scores(
            queries, docs, dtype=torch.float64, block_rows=block_rows, chunk_columns=chunk_columns, threads=threads
        )
        np.testing.assert_allclose(other.numpy(), reference.numpy(), atol=1e-12)
        assert torch.get_num_threads() == threads_before  # the worker pool restores torch's setting


def test_standardize_matches_s3prl_formula():
    queries, docs = random_set(3)
    sq, sd = qdtw.standardize(queries, docs)
    feats = torch.cat(queries + docs)
    mean, std = feats.mean(0), feats.std(0).clamp(min=1e-9)
    for a, b in zip(sq + sd, queries + docs):
        torch.testing.assert_close(a, (b - mean) / std, atol=1e-5, rtol=1e-5)


def test_empty_document_is_an_error():
    with pytest.raises(ValueError, match="document 1"):
        qdtw.raw_match_scores([torch.randn(6, 4)], [torch.randn(3, 4), torch.randn(0, 4)])


def test_znormalize_uses_population_std():
    s = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    z = qdtw.znormalize(s)
    np.testing.assert_allclose(z[0].numpy(), (np.arange(1, 5) - 2.5) / np.std(np.arange(1, 5)))
    assert (z[1] == 0).all()


# --------------------------------------------------------------------------- interop with s3prl


@pytest.fixture(scope="module")
def s3prl_expert():
    pytest.importorskip("dtw", reason="dtw-python is needed to run s3prl's match")
    pytest.importorskip("lxml")
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    from s3prl.downstream.quesst14_dtw import expert

    return expert


@pytest.mark.interop
def test_subsequence_dtw_equals_dtw_python(s3prl_expert):
    from dtw import dtw

    g = torch.Generator().manual_seed(5)
    for n, m in [(5, 5), (7, 30), (12, 3), (1, 9)]:
        d = torch.rand(n, m, generator=g, dtype=torch.float64)
        ref = dtw(x=d.numpy(), step_pattern="asymmetric", open_begin=True, open_end=True).normalizedDistance
        assert qdtw.subsequence_dtw(d[None]).item() == pytest.approx(ref, abs=1e-12)


@pytest.mark.interop
def test_match_equals_s3prl_match(s3prl_expert):
    queries, docs = random_set(2, dim=48)
    ours = qdtw.raw_match_scores(queries, docs)
    feats = torch.cat(queries + docs)
    mean, std = feats.mean(0), torch.clamp(feats.std(0), 1e-9)
    dtwrc = dict(step_pattern="asymmetric", keep_internals=False, distance_only=False, open_begin=True, open_end=True)
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            if len(q) < 5:
                assert ours[i, j] == 0
                continue
            _, _, ref = s3prl_expert.match(
                ((q - mean) / std).numpy(), ((d - mean) / std).numpy(), i, j, s3prl_expert.cosine_exp, True, dtwrc
            )
            assert abs(ours[i, j].item() - ref) < 1e-5


@pytest.mark.interop
def test_stdlist_equals_s3prl_log_records(s3prl_expert, tmp_path):
    """s3prl's own log_records (standardise, pool of match, z-norm, XML) against ours end to end."""
    queries, docs = random_set(4, n_q=4, n_d=6, dim=24)
    qnames = [f"quesst14_dev_{i:04d}" for i in range(len(queries))]
    dnames = [f"quesst14_{i:05d}" for i in range(len(docs))]
    config = {
        "max_workers": 2,
        "feature_normalization": True,
        "silence_frame": None,
        "datarc": {},
        "dtwrc": {"dist_method": "cosine_exp", "minmax_norm": True, "step_pattern": "asymmetric", "subsequence": True},
    }
    s3prl_dir = tmp_path / "s3prl"
    s3prl_dir.mkdir()
    expert = s3prl_expert.DownstreamExpert(upstream_dim=24, downstream_expert=config, expdir=str(s3prl_dir))
    expert.test_dataset = SimpleNamespace(n_queries=len(queries))
    expert.log_records("dev", {"features": queries + docs, "audio_names": qnames + dnames})
    theirs = read_stdlist(s3prl_dir / "benchmark.stdlist.xml")

    ours_path = write_stdlist(tmp_path, qnames, dnames, qdtw.qbe_scores(queries, docs))
    ours = read_stdlist(ours_path)
    assert ours.keys() == theirs.keys()
    for key, det in theirs.items():
        assert abs(ours[key].score - det.score) <= 1e-4 + 1e-9  # both rounded to 4 decimals
        assert ours[key].decision == det.decision
    # same element/attribute structure as s3prl's file
    a, b = ET.parse(ours_path).getroot(), ET.parse(s3prl_dir / "benchmark.stdlist.xml").getroot()
    assert a.attrib == b.attrib
    assert a[0].attrib.keys() == b[0].attrib.keys() and a[0][0].attrib.keys() == b[0][0].attrib.keys()


@pytest.mark.interop
def test_benchmark_script_tiny_reports_small_difference(s3prl_expert, capsys):
    module = load_script("benchmarks/qbe_dtw.py")
    assert module.main(["--synthetic", "--size", "tiny", "--workers", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] < 1e-4
    assert report["decisions_equal"]
    assert report["scored_pairs"] == 3 * 6  # the 3-frame query is not scored


# --------------------------------------------------------------------------- the accelerator plan


def naive_raw_scores(queries, docs, min_query_frames: int) -> np.ndarray:
    """`naive_qbe_scores` before z-normalisation, with the short-query rule as a parameter."""
    qs = [q.double().numpy() for q in queries]
    ds = [d.double().numpy() for d in docs]
    allf = np.concatenate(qs + ds)
    mean, std = allf.mean(0), np.clip(allf.std(0, ddof=1), 1e-9, None)
    raw = np.zeros((len(qs), len(ds)))
    for i, q in enumerate(qs):
        if len(q) < max(min_query_frames, 1):
            continue
        for j, d in enumerate(ds):
            q_, d_ = (q - mean) / std, (d - mean) / std
            cos = 1 - (q_ @ d_.T) / np.outer(np.linalg.norm(q_, axis=1), np.linalg.norm(d_, axis=1))
            c = np.exp(np.clip(cos, 0, 2)) - 1
            lo, hi = c.min(1, keepdims=True), c.max(1, keepdims=True)
            raw[i, j] = -naive_subsequence_dtw((c - lo) / np.clip(hi - lo, 1e-9, None))
    return raw


def edge_case_set(seed: int, dim: int = 8):
    """Length-1 queries and documents, queries longer than every document, very uneven lengths."""
    g = torch.Generator().manual_seed(seed)
    q_lengths = [1, 1, 2, 7, 30, 45]  # 30 and 45 frames: longer than most documents
    d_lengths = [1, 2, 3, 5, 12, 40, 1, 9]
    queries = [torch.randn(n, dim, generator=g, dtype=torch.float64) for n in q_lengths]
    docs = [torch.randn(n, dim, generator=g, dtype=torch.float64) for n in d_lengths]
    return queries, docs


@pytest.mark.parametrize("seed", range(2))
def test_device_plan_on_cpu_equals_naive_and_threaded_path(seed):
    """The plan `raw_match_scores` uses off the CPU (one stream, 2048 x 65536 blocks, no balancing),
    run here on the CPU: equal to the naive pipeline and to the threaded CPU path, edge cases included."""
    queries, docs = edge_case_set(seed)
    ref = naive_raw_scores(queries, docs, min_query_frames=1)
    threaded = qdtw.raw_match_scores(queries, docs, dtype=torch.float64, min_query_frames=1, threads=2,
                                     block_rows=8, chunk_columns=16)
    device_plan = qdtw._match_scores(queries, docs, True, 1, torch.float64, qdtw._DEVICE_BLOCK_ROWS,
                                     qdtw._DEVICE_CHUNK_COLUMNS, 1, torch.device("cpu"), balance=False)
    np.testing.assert_allclose(threaded.numpy(), ref, atol=1e-9)
    np.testing.assert_allclose(device_plan.numpy(), ref, atol=1e-9)
    np.testing.assert_allclose(device_plan.numpy(), threaded.numpy(), atol=1e-12)


def test_device_argument_defaults_to_the_documents_device():
    queries, docs = random_set(5)
    default = qdtw.raw_match_scores(queries, docs, dtype=torch.float64)
    explicit = qdtw.raw_match_scores(queries, docs, dtype=torch.float64, device="cpu")
    assert default.device.type == "cpu" and default.dtype == torch.float64
    assert torch.equal(default, explicit)


def test_subsequence_dtw_query_longer_than_document_and_length_one():
    g = torch.Generator().manual_seed(3)
    dist = torch.rand(4, 20, 5, generator=g, dtype=torch.float64)
    qlen, dlen = torch.tensor([20, 1, 13, 1]), torch.tensor([5, 5, 1, 1])
    ours = qdtw.subsequence_dtw(dist, qlen, dlen)
    for b in range(4):
        ref = naive_subsequence_dtw(dist[b, : qlen[b], : dlen[b]].numpy())
        assert ours[b].item() == pytest.approx(ref, abs=1e-12)
    assert ours[1].item() == pytest.approx(dist[1, 0, :5].min().item())  # one query frame: best single cell
    assert ours[3].item() == pytest.approx(dist[3, 0, 0].item())


def test_benchmark_device_mode_cpu_smoke(capsys):
    """`benchmarks/qbe_dtw.py --device cpu`: the device comparison gpu_check runs on CUDA, here on the CPU."""
    module = load_script("benchmarks/qbe_dtw.py")
    assert module.main(["--synthetic", "--size", "tiny", "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] == 0.0 and report["decisions_equal"]
    assert report["scored_pairs"] == 3 * 6 and report["device"] == "cpu"
