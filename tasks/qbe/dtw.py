"""Subsequence-DTW detection scores for QbE, equal to s3prl 0.4.18's `quesst14_dtw`, batched in torch.

What s3prl does (read from `s3prl/downstream/quesst14_dtw/expert.py` and its `config.yaml`:
`dist_method: cosine_exp`, `minmax_norm: True`, `step_pattern: asymmetric`, `subsequence: True`,
`feature_normalization: True`, `silence_frame:` empty), and what this module reproduces:

1. Standardise every feature dimension with the mean and the *unbiased* std (`torch.std`, clamped
   at 1e-9) over all frames of all queries and all documents together (dev or eval separately).
2. Local cost of query frame i and document frame j: `exp(cosine_distance) - 1`, with scipy's
   cosine distance `1 - u.v / (|u| |v|)` (clipped to [0, 2]).
3. Min-max normalise that cost matrix per *query frame* (row i, over the document frames j):
   `(d - min_j d) / max(max_j d - min_j d, 1e-9)`.
4. dtw-python's `dtw(x=cost, step_pattern="asymmetric", open_begin=True, open_end=True)`. The
   asymmetric pattern advances the query by exactly one frame per step and the document by 0, 1
   or 2 frames, all steps with weight 1, so with a free start anywhere in the document
   (open begin: dtw-python prepends a zero row) the accumulated cost is the row recursion

       g[0, j] = d[0, j]
       g[i, j] = d[i, j] + min(g[i-1, j], g[i-1, j-1], g[i-1, j-2])

   and `normalizedDistance` (pattern normalisation "N") is `min_j g[N-1, j] / N`, N the number of
   query frames (open end: the best end column).
5. Score = `-normalizedDistance`; queries shorter than 5 frames get score 0 for every document
   (after standardisation, which still includes their frames).
6. Per query, z-normalise the scores over documents with the *population* std (numpy's default),
   clipped at 1e-9. Scores above 2.0 are the system's YES decisions in s3prl's stdlist.

The brief this was written from said "per-row min-max normalisation"; the source confirms rows =
query frames normalised over document frames. Everything else above matched it.

Speed: every query-document pair costs one small matmul (the distance) plus an O(N M) recursion
that is sequential only along the query. Here queries are stacked into blocks and documents into
padded chunks, so each block x chunk is one GEMM, one `exp`, a min and a max, one subtraction and N
row updates of three vectorised ops over the whole block; nothing loops per pair in Python.
Documents are padded by repeating their last frame, which leaves every row's min and max
unchanged, and padded columns never influence valid ones (the recursion only looks left), so only
the final minimum is masked. Standardisation and unit-normalisation are folded into building
each chunk (no standardised copy of all features). Cores are used by worker threads that each
score whole chunks with single-threaded torch, rather than by torch's intra-op threads.

Devices: every step above is plain torch on tensors of one device, so the whole pipeline (GEMM,
min-max, the recursion, the final minimum) runs where `device` says, by default where the
documents are: features on CUDA are scored on CUDA. The row recursion is exact on any device (row
i needs only row i - 1, so each row is one vectorised update over every query x document x column
of a block; no anti-diagonal wavefront is needed). Off the CPU there are no worker threads (one
stream) and blocks are larger (`_DEVICE_BLOCK_ROWS` x `_DEVICE_CHUNK_COLUMNS`: a 512 MiB float32
similarity block), because kernel launches, not arithmetic, dominate small blocks. The same plan
runs on the CPU too (`_match_scores(..., balance=False)` with those sizes), which is how the tests
and `benchmarks/qbe_dtw.py --device cpu` check it without a GPU. Devices need float64 (CPU, CUDA). Scores equal the CPU path's to float rounding (GEMM and reduction order), unless
the process lets float32 matmuls use TF32 (`torch.backends.cuda.matmul`), which this module
leaves as it finds it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch

__all__ = [
    "DECISION_THRESHOLD",
    "MIN_QUERY_FRAMES",
    "qbe_scores",
    "raw_match_scores",
    "feature_stats",
    "standardize",
    "subsequence_dtw",
    "znormalize",
]

MIN_QUERY_FRAMES = 5  # s3prl: `if len(query) < 5: score 0 for every document`
DECISION_THRESHOLD = 2.0  # s3prl: decision="YES" if z-score > 2.0 ("top 2.5 % as YES")
_MIN_CHUNK_COLUMNS = 2048  # keeps each vectorised op large enough to amortise its overhead
_STD_FLOOR = 1e-9  # s3prl's clamp for the feature std, the min-max range and the score std
_CPU_BLOCK_ROWS, _CPU_CHUNK_COLUMNS = 256, 16384  # cache-sized blocks for single-threaded workers
_DEVICE_BLOCK_ROWS, _DEVICE_CHUNK_COLUMNS = 2048, 65536  # few, large kernels on an accelerator


def feature_stats(queries: Sequence[torch.Tensor], docs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and unbiased std (clamped at 1e-9) over all frames of all inputs.

    Mean and squared deviations per tensor, merged in float64 (Chan et al.'s pairwise update), so
    no copy of all features is ever made; agrees with s3prl's float32 `torch.cat(...).mean(0) / .std(0)`
    to float32 rounding.
    """
    feats = [*queries, *docs]
    if not feats:
        raise ValueError("no features to standardise")
    dim, dev = feats[0].shape[-1], feats[0].device
    count = 0
    mean, m2 = torch.zeros(dim, dtype=torch.float64, device=dev), torch.zeros(dim, dtype=torch.float64, device=dev)
    for f in feats:
        if f.dim() != 2 or f.shape[-1] != dim:
            raise ValueError(f"every feature must be (frames, {dim}); got {tuple(f.shape)}")
        n = f.shape[0]
        if n == 0:
            continue
        f = f.detach().to(dev)
        mean_f = f.mean(0)  # (torch.var_mean over dim 0 is ~100x slower on CPU than two passes)
        m2_i = (f - mean_f).square_().sum(0).to(torch.float64)
        mean_i = mean_f.to(torch.float64)
        total = count + n
        delta = mean_i - mean
        m2 += m2_i + delta.square() * (count * n / total)
        mean += delta * (n / total)
        count = total
    if count < 2:
        raise ValueError("standardisation needs at least two frames in total")
    std = (m2 / (count - 1)).sqrt().clamp(min=_STD_FLOOR)
    return mean.to(feats[0].dtype), std.to(feats[0].dtype)


def standardize(
    queries: Sequence[torch.Tensor], docs: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`(x - mean) / std` per feature dimension with `feature_stats` over all queries and docs.

    Args:
        queries, docs: `(frames, dim)` tensors. Returns the two lists standardised.
    """
    mean, std = feature_stats(queries, docs)
    return [(q - mean) / std for q in queries], [(d - mean) / std for d in docs]


def subsequence_dtw(
    dist: torch.Tensor,
    query_lengths: torch.Tensor | None = None,
    doc_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Open-begin, open-end DTW with dtw-python's "asymmetric" step pattern on given local costs.

    Args:
        dist: `(batch, N, M)` local costs (query frames x document frames), padded.
        query_lengths, doc_lengths: `(batch,)` valid sizes; default all N / all M.
    Returns:
        `(batch,)` normalised distance `min_j g[n-1, j] / n` (dtw-python's `normalizedDistance`),
        on the device of `dist` (which may be any: CPU, CUDA, ...).
    """
    if dist.dim() != 3:
        raise ValueError(f"dist must be (batch, N, M); got {tuple(dist.shape)}")
    batch, n, m = dist.shape
    qlen = _lengths(query_lengths, batch, n, "query_lengths").to(dist.device)
    dlen = _lengths(doc_lengths, batch, m, "doc_lengths").to(dist.device)
    rows = dist.transpose(0, 1)  # (N, batch, M) view: row i of every pair
    cost = _accumulate(rows.unsqueeze(1), None, qlen.unsqueeze(0), dlen)[0]
    return cost / qlen.to(cost.dtype)


def raw_match_scores(
    queries: Sequence[torch.Tensor],
    docs: Sequence[torch.Tensor],
    *,
    standardize_features: bool = True,
    min_query_frames: int = MIN_QUERY_FRAMES,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
    chunk_columns: int | None = None,
    threads: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """s3prl's per-pair `match` scores (`-normalizedDistance`) for every query x document.

    Args:
        queries: Q tensors `(frames, dim)`; docs: D tensors `(frames, dim)`, same dim.
        standardize_features: s3prl's `feature_normalization` (True in its config).
        min_query_frames: queries shorter than this score 0 everywhere (s3prl: 5).
        dtype: compute dtype (float32 is within ~1e-6 of s3prl's float64; float64 for checks).
        block_rows: query frames per GEMM block (queries are grouped up to this many rows);
            default 256 on the CPU, 2048 elsewhere.
        chunk_columns: padded document frames per chunk; default 16384 on the CPU, 65536 elsewhere.
        threads: CPU worker threads, each running single-threaded torch on its own document
            chunks (default `torch.get_num_threads()`; torch's thread count is set to 1 while
            this runs and restored after). Off the CPU: always one (a single stream).
        device: where to compute; default the documents' device (features on CUDA are scored
            on CUDA). Features elsewhere are copied block by block.
    Returns:
        `(Q, D)` float64 scores on the CPU, before the per-query z-normalisation.
    """
    if not docs:
        raise ValueError("no documents to search")
    dev = torch.device(device) if device is not None else docs[0].device
    on_cpu = dev.type == "cpu"
    block_rows = block_rows or (_CPU_BLOCK_ROWS if on_cpu else _DEVICE_BLOCK_ROWS)
    chunk_columns = chunk_columns or (_CPU_CHUNK_COLUMNS if on_cpu else _DEVICE_CHUNK_COLUMNS)
    args = (queries, docs, standardize_features, min_query_frames, dtype, block_rows, chunk_columns)
    if not on_cpu:
        return _match_scores(*args, 1, dev, balance=False).cpu()
    workers = max(1, threads or torch.get_num_threads())
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # see _match_scores: parallelism comes from worker threads
    try:
        return _match_scores(*args, workers, dev, balance=True)
    finally:
        torch.set_num_threads(previous)


def _match_scores(queries, docs, standardize_features, min_query_frames, dtype, block_rows, chunk_columns, workers,
                  device, balance):
    """`raw_match_scores` on `device`; `workers` threads score document chunks (CPU: torch single-threaded).

    `balance`: cut the documents into at least ~4 chunks per worker (CPU threads); otherwise
    chunks are as large as `chunk_columns` allows (one stream: fewer, larger kernels).
    """
    if not docs:
        raise ValueError("no documents to search")
    dim = docs[0].shape[-1]
    for i, d in enumerate(docs):
        if d.dim() != 2 or d.shape[0] == 0 or d.shape[1] != dim:
            raise ValueError(f"document {i} must be a non-empty (frames, {dim}) tensor; got {tuple(d.shape)}")
    for i, q in enumerate(queries):
        if q.dim() != 2 or q.shape[1] != dim:
            raise ValueError(f"query {i} must be a (frames, {dim}) tensor; got {tuple(q.shape)}")
    stats = feature_stats(queries, docs) if standardize_features else None
    if stats is not None:
        stats = (stats[0].to(device), stats[1].to(device))
    scores = torch.zeros(len(queries), len(docs), dtype=torch.float64, device=device)
    live = [i for i, q in enumerate(queries) if q.shape[0] >= max(min_query_frames, 1)]
    if not live:
        return scores

    # Queries: unit rows, negated so that one GEMM gives -cos, and exp(-cos) = exp(cos_dist) / e.
    live.sort(key=lambda i: -queries[i].shape[0])
    blocks = _query_blocks([queries[i].shape[0] for i in live], block_rows)
    prepared = []
    for start, stop in blocks:
        idx = live[start:stop]
        n_max = queries[idx[0]].shape[0]
        qb = torch.zeros(len(idx), n_max, queries[idx[0]].shape[1], dtype=dtype, device=device)
        for k, qi in enumerate(idx):
            _unit_rows_into(qb[k, : queries[qi].shape[0]], queries[qi], stats)
        qb.neg_()
        qlen = torch.tensor([queries[qi].shape[0] for qi in idx], device=device)
        prepared.append((torch.tensor(idx, device=device), qb.reshape(-1, qb.shape[-1]), qlen, n_max))

    def score_chunk(didx: list[int]) -> None:
        m_max = docs[didx[-1]].shape[0]
        dlen = torch.tensor([docs[i].shape[0] for i in didx], device=device)
        dflat = _edge_padded_unit(docs, didx, m_max, dtype, stats, device).flatten(0, 1)  # (B * M, dim)
        dcols = torch.tensor(didx, device=device)
        for qrows, qflat, qlen, n_max in prepared:
            sim = (qflat @ dflat.T).view(len(qrows), n_max, len(didx), m_max)  # -cos
            cost = _normalized_costs(sim, qlen, dlen)  # (Qb, B), consumes sim
            scores[qrows[:, None], dcols[None, :]] = -cost.to(torch.float64)

    # Parallelism: `workers` threads, each running (single-threaded) torch on its own document
    # chunks (torch ops release the GIL). Letting torch parallelise inside each op instead makes
    # every one of the hundreds of small row updates a parallel region that waits for all cores,
    # which on a shared machine costs more than it gains (measured 2-4x slower, with idle OpenMP
    # threads spinning). Chunks are cut small enough that every worker gets several.
    order = sorted(range(len(docs)), key=lambda i: docs[i].shape[0])
    lengths = [docs[i].shape[0] for i in order]
    columns = min(chunk_columns, max(_MIN_CHUNK_COLUMNS, -(-sum(lengths) // (4 * workers)))) if balance else chunk_columns
    chunks = [order[a:b] for a, b in _doc_chunks(lengths, columns)]
    if workers == 1 or len(chunks) == 1:
        for didx in chunks:
            score_chunk(didx)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            for future in [pool.submit(score_chunk, didx) for didx in chunks]:
                future.result()
    return scores


def znormalize(scores: torch.Tensor) -> torch.Tensor:
    """Per-query (row) z-normalisation with the population std clipped at 1e-9, as s3prl does.

    Args:
        scores: `(Q, D)`. Returns `(Q, D)` float64.
    """
    s = scores.to(torch.float64)
    mean = s.mean(dim=1, keepdim=True)
    std = s.std(dim=1, correction=0, keepdim=True).clamp(min=_STD_FLOOR)
    return (s - mean) / std


def qbe_scores(queries: Sequence[torch.Tensor], docs: Sequence[torch.Tensor], **kwargs) -> torch.Tensor:
    """Final detection scores `(Q, D)`: `znormalize(raw_match_scores(queries, docs, **kwargs))`.

    Decisions as in s3prl's stdlist: `scores > DECISION_THRESHOLD`. `device=` (see
    `raw_match_scores`) picks where the DTW runs; by default where the documents are.
    """
    return znormalize(raw_match_scores(queries, docs, **kwargs))


# ---------------------------------------------------------------------------------------------
# internals


def _lengths(lengths: torch.Tensor | None, batch: int, full: int, name: str) -> torch.Tensor:
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
    if lengths.numel() != batch:
        raise ValueError(f"{name} must have {batch} entries; got {lengths.numel()}")
    if bool((lengths < 1).any()) or bool((lengths > full).any()):
        raise ValueError(f"{name} must lie in [1, {full}]; got {lengths.tolist()}")
    return lengths


def _accumulate(
    rows: torch.Tensor,
    scale: torch.Tensor | None,
    query_lengths: torch.Tensor,
    doc_lengths: torch.Tensor,
) -> torch.Tensor:
    """Accumulated cost `min_j g[n_q - 1, j]` of the asymmetric open-begin recursion.

    Args:
        rows: `(N, Qb, B, M)` local costs (any strides); the cost of cell (i, j) is
            `rows[i, q, b, j] * scale[i, q, b]` when `scale` is given.
        query_lengths: `(Qb, 1)` or `(Qb, B)` frames per query; doc_lengths: `(B,)`.
    Returns:
        `(Qb, B)` accumulated (unnormalised) costs.
    """
    n, qb, b, m = rows.shape
    # g lives in a buffer with two +inf guard columns on the left, so the three predecessors
    # (j, j-1, j-2) are three aligned slices and each row update is three vectorised ops.
    like = {"dtype": rows.dtype, "device": rows.device}
    buf = torch.full((qb, b, m + 2), math.inf, **like)
    g = buf[..., 2:]
    best = torch.full((qb, b), math.inf, **like)
    qlen = query_lengths.expand(qb, b)
    pad = torch.arange(m, device=rows.device)[None, :] >= doc_lengths[:, None]  # (B, M) padded document frames
    ends = set(qlen.unique().tolist())  # the rows where some query ends (one host sync per block)
    tmp = torch.empty((qb, b, m), **like)
    for i in range(n):
        if i == 0:
            if scale is None:
                g.copy_(rows[0])
            else:
                torch.mul(rows[0], scale[0].unsqueeze(-1), out=g)
        else:
            torch.minimum(buf[..., 2:], buf[..., 1:-1], out=tmp)
            torch.minimum(tmp, buf[..., :-2], out=tmp)
            if scale is None:
                torch.add(tmp, rows[i], out=g)
            else:
                torch.addcmul(tmp, rows[i], scale[i].unsqueeze(-1), out=g)
        if i + 1 in ends:
            done = qlen == i + 1
            row_best = g.masked_fill(pad, math.inf).amin(-1)
            best = torch.where(done, row_best, best)
    return best


def _normalized_costs(sim: torch.Tensor, query_lengths: torch.Tensor, doc_lengths: torch.Tensor) -> torch.Tensor:
    """Min-max-normalised cosine-exp costs -> DTW; `sim` is `-cos`, shape `(Qb, N, B, M)`, consumed.

    `exp(-cos) = exp(cos_dist) / e`; the per-row min-max normalisation is invariant to that scale
    (the 1e-9 range floor is divided by e accordingly), so the cost is never formed twice.
    """
    e = sim.exp_()
    # (Qb, N, B); padded columns repeat a valid frame. amax + amin: 5x faster than aminmax on CPU.
    emin, emax = e.amin(-1), e.amax(-1)
    scale = (emax - emin).clamp_(min=_STD_FLOOR / math.e).reciprocal_()
    e.sub_(emin.unsqueeze(-1))
    rows = e.permute(1, 0, 2, 3)  # (N, Qb, B, M) view
    cost = _accumulate(rows, scale.permute(1, 0, 2), query_lengths[:, None], doc_lengths)
    return cost / query_lengths[:, None].to(cost.dtype)


def _edge_padded_unit(
    docs: Sequence[torch.Tensor], idx: list[int], m_max: int, dtype: torch.dtype, stats, device: torch.device
) -> torch.Tensor:
    """`(B, m_max, dim)` standardised unit-norm document frames, padded by repeating the last frame."""
    out = torch.empty(len(idx), m_max, docs[idx[0]].shape[1], dtype=dtype, device=device)
    for k, di in enumerate(idx):
        n = docs[di].shape[0]
        _unit_rows_into(out[k, :n], docs[di], stats)
        out[k, n:] = out[k, n - 1]
    return out


def _unit_rows_into(out: torch.Tensor, feats: torch.Tensor, stats) -> None:
    """`out <- normalize((feats - mean) / std)` row-wise, in place (no full-size temporaries)."""
    out.copy_(feats.detach())
    if stats is not None:
        out.sub_(stats[0].to(out.dtype)).div_(stats[1].to(out.dtype))
    out.div_(torch.linalg.vector_norm(out, dim=-1, keepdim=True).clamp_(min=1e-12))


def _query_blocks(lengths: list[int], block_rows: int) -> list[tuple[int, int]]:
    """Group length-sorted (descending) queries so that count x longest <= block_rows (>= 1 query)."""
    blocks, start = [], 0
    while start < len(lengths):
        stop = start + 1
        while stop < len(lengths) and (stop - start + 1) * lengths[start] <= block_rows:
            stop += 1
        blocks.append((start, stop))
        start = stop
    return blocks


def _doc_chunks(lengths: list[int], chunk_columns: int) -> list[tuple[int, int]]:
    """Group length-sorted (ascending) documents so that count x longest <= chunk_columns."""
    chunks, start = [], 0
    while start < len(lengths):
        stop = start + 1
        while stop < len(lengths) and (stop - start + 1) * lengths[stop] <= chunk_columns:
            stop += 1
        chunks.append((start, stop))
        start = stop
    return chunks
