"""QbE `dtw`: subsequence DTW on frozen frame features per layer, layer chosen on dev, MTWV on eval.

Nothing is trained. Frame features of the dev queries, eval queries and the shared documents are
extracted once into the embedding cache. For every layer, `tasks.qbe.qbe_scores` (s3prl's
`quesst14_dtw` scoring, batched) scores all dev query x document pairs and `tasks.metrics.twv`
computes MTWV against the dev ground truth; the layer with the highest dev MTWV (ties: the lower
layer) is the only one ever scored on eval.

Scoring follows s3prl's recipe with the official scorer: the detection list covers the English
queries and documents, and trials of the ground truth outside it (the other QUESST languages on
the real corpus) count with the default score -10, i.e. as misses (`score-TWV-Cnxe.sh <dir> <gt>
-10`). That is how SUPERB's QbE numbers were computed; MTWV over the English trials alone is
reported as a secondary number. ATWV uses s3prl's YES decisions (z-score > 2). The chosen layer's
`benchmark.stdlist.xml` for dev and eval is written under `<results>/qbe/<upstream>/<run>/` so
that anyone with the official scorer can check the numbers.

Position removal (`task_options["position_removal"]`, default on): for an upstream that encodes in
independent windows (`frames_per_window` set, the M2D ViTs) the mean frame at each within-window
position, taken over the split's own queries and documents, is subtracted per layer before
scoring (`tasks.qbe.remove_position_mean`, whose docstring says why); the cached frames are never
changed. Upstreams without windows (fbank) are scored exactly as before.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.clip_tasks import read_identity
from tasks.data.identity import DatasetIdentity
from tasks.datasets.quesst14 import QbESplit, find_root, load_quesst14
from tasks.metrics.twv import QUESST2014, load_groundtruth, score_matrix
from tasks.qbe import DECISION_THRESHOLD, position_variance_fraction, qbe_scores, remove_position_mean, write_stdlist

from ..cache import CacheEntry, EmbeddingCache
from .partial import PartialResult, dataset_record
from ..errors import UserError
from ..extract import ExtractionSettings, extract_to

__all__ = ["DEFAULT_SCORE", "LANGUAGE", "QbEFeatures", "qbe_features", "run_qbe"]

DEFAULT_SCORE = -10.0  # s3prl's third argument to score-TWV-Cnxe.sh: score of trials not in the list
LANGUAGE = "nnenglish"  # the QUESST subset SUPERB scores


def _twv(gt, queries, docs, scores) -> dict:
    decisions = scores > DECISION_THRESHOLD
    full = score_matrix(gt, queries, docs, scores, decisions, default_score=DEFAULT_SCORE)
    english = score_matrix(gt.restrict(queries, docs), queries, docs, scores, decisions)
    return {"mtwv": full.mtwv, "atwv": full.atwv, "threshold": full.threshold, "p_miss": full.p_miss,
            "p_fa": full.p_fa, "queries_scored": full.n_queries, "mtwv_english": english.mtwv,
            "atwv_english": english.atwv}


def _run_dir(results: str, upstream: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", upstream)[:80]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return Path(results) / "qbe" / slug / f"{stamp}-{os.getpid()}"


@dataclass
class QbEFeatures:
    """Frame features (all layers, cached) of the dev and eval queries and the shared documents."""

    root: Path
    splits: dict[str, QbESplit]  # "dev" / "eval"
    entry: CacheEntry
    rows: dict[str, list[int]]  # "dev" / "eval" / "docs" -> cache example rows
    identity: DatasetIdentity | None = None  # content fingerprint of the files read (record's dataset identity)

    @property
    def documents(self):
        return self.splits["dev"].documents

    def names(self, part: str) -> list[str]:
        """Query ids of a split, or document ids for "docs" (as the ground truth spells them)."""
        examples = self.documents if part == "docs" else self.splits[part].queries
        return [e.key for e in examples]

    def layer(self, part: str, layer: int) -> list[torch.Tensor]:
        """float32 `(frames, dim)` features of `layer` for each query of a split, or each document."""
        features, index = self.entry.features, self.entry.index
        return [torch.from_numpy(np.asarray(features[s : s + n, layer], dtype=np.float32))
                for s, n in index[self.rows[part]]]


def qbe_features(upstream, dataset=None, *, profile: str = "mini", data_root=None, cache_root=None,
                 precision: str = "fp32", batch_seconds: float = 120.0, progress: bool = True,
                 skip_bad: bool = False) -> QbEFeatures:
    """Load the English QUESST queries and documents and their frame features (extracted once, cached)."""
    root = find_root(dataset, profile, data_root)
    splits = {s: load_quesst14(dataset, s, language=LANGUAGE, profile=profile, data_root=data_root,
                               skip_bad_audio=skip_bad) for s in ("dev", "eval")}
    for s, sp in splits.items():
        if not sp.queries:
            raise ValueError(f"{root}: no {LANGUAGE} queries in the {s} split")
    docs = splits["dev"].documents
    if not docs:
        raise ValueError(f"{root}: no {LANGUAGE} documents")
    examples = [*splits["dev"].queries, *splits["eval"].queries, *docs]
    identity = read_identity(root, splits["dev"].queries, splits["eval"].queries, docs)
    settings = ExtractionSettings("frames", None, "repeat", precision)
    ident = upstream.describe()
    material = {"upstream": {k: ident[k] for k in ("name", "options", "checkpoint_sha256")},
                "task": "quesst14-frames", "language": LANGUAGE,
                "dataset_manifest": identity.manifest_sha256,
                "audio_sha256": identity.sha256_of(e.path for e in examples), "settings": settings.key()}
    def build(tmp):
        from .ctc import _adaptive_threads  # threads that follow what other jobs leave free

        with _adaptive_threads() as cpu:
            return extract_to(tmp, upstream, examples, settings, batch_seconds, progress, on_batch=cpu.apply)

    entry = EmbeddingCache(cache_root).get_or_create(material, build, [e.key for e in examples])
    n_dev, n_eval = len(splits["dev"].queries), len(splits["eval"].queries)
    rows = {"dev": list(range(n_dev)), "eval": list(range(n_dev, n_dev + n_eval)),
            "docs": list(range(n_dev + n_eval, len(examples)))}
    return QbEFeatures(root, splits, entry, rows, identity)


def run_qbe(req, spec, protocol: str, upstream, device, log=print) -> PartialResult:
    if protocol != "dtw":
        raise UserError(f"qbe has only the 'dtw' protocol, got '{protocol}'")
    if req.lrs:
        raise UserError("--lr does not apply to qbe: the dtw protocol trains nothing")
    feats = qbe_features(upstream, req.dataset, profile=req.profile, data_root=req.data_root,
                         cache_root=req.cache_root, precision=req.precision, batch_seconds=req.batch_seconds,
                         progress=req.progress, skip_bad=req.skip_bad)
    entry, splits = feats.entry, feats.splits
    log(f"[run] frame features {'reused from' if entry.hit else 'written to'} cache {entry.path}")
    skipped = {**feats.documents.skipped, **splits["dev"].queries.skipped, **splits["eval"].queries.skipped}
    dataset = dataset_record(spec, req, feats.identity, skipped)
    dataset["queries"] = {s: len(sp.queries) for s, sp in splits.items()}
    dataset["documents"] = len(feats.documents)
    names = {s: feats.names(s) for s in splits}
    doc_names = feats.names("docs")
    gts = {s: load_groundtruth(splits[s].ground_truth_dir) for s in splits}
    removal = bool(req.task_options.get("position_removal", True))
    window = getattr(upstream, "frames_per_window", None)
    position = {}  # (split, layer) -> summary of the position statistic

    def layer_features(split: str, layer: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The split's queries and the documents; position mean removed over both (this split only)."""
        queries, docs = feats.layer(split, layer), feats.layer("docs", layer)
        if window is None:
            return queries, docs
        if not removal:  # still report how much of the variance is position
            fraction = round(position_variance_fraction([*queries, *docs], window), 4)
            position[split, layer] = {"before": fraction, "after": fraction}
            return queries, docs
        pr = remove_position_mean([*queries, *docs], window)
        position[split, layer] = {"before": round(pr.variance_before, 4), "after": round(pr.variance_after, 4)}
        return pr.features[: len(queries)], pr.features[len(queries) :]

    def score_layer(split: str, layer: int) -> tuple[torch.Tensor, dict, float]:
        t0 = time.perf_counter()
        scores = qbe_scores(*layer_features(split, layer), device=device)  # the DTW runs where the upstream does
        seconds = time.perf_counter() - t0
        return scores, _twv(gts[split], names[split], doc_names, scores.numpy()), seconds

    per_layer, dev_scores, dev_mtwv = [], {}, {}
    for layer in range(upstream.num_layers):
        scores, res, seconds = score_layer("dev", layer)
        dev_scores[layer], dev_mtwv[layer] = scores, res["mtwv"]
        per_layer.append({"layer": layer, "dev_mtwv": round(res["mtwv"], 4), "dev_atwv": round(res["atwv"], 4),
                          "dtw_seconds": round(seconds, 2)})
        pos = position.get(("dev", layer))
        if pos:
            per_layer[-1]["position_variance"] = dict(pos)
        log(f"[run] qbe layer {layer}: dev MTWV {res['mtwv']:.4f} ({seconds:.1f} s)"
            + (f", position variance {pos['before']:.3f} -> {pos['after']:.3f}" if pos else ""))
    best = max(dev_mtwv, key=lambda layer: (dev_mtwv[layer], -layer))
    dev_res = _twv(gts["dev"], names["dev"], doc_names, dev_scores[best].numpy())
    eval_scores, eval_res, eval_seconds = score_layer("eval", best)
    if window is None:
        method = "none (the upstream encodes without windows)"
    elif removal:
        method = ("per layer and split, subtract the mean frame at each within-window position (frame t -> t % "
                  "frames_per_window) over the split's queries and documents, overall mean kept")
    else:
        method = "off (--position-removal off)"
    position_record = {
        "enabled": removal, "applied": removal and window is not None, "method": method,
        "frames_per_window": window,
        "variance_fraction": None if window is None else {
            "definition": "share of the standardised variance (mean over dims of between-position / total sum "
                          "of squares) over the split's queries and documents",
            "dev": [{"layer": layer, **position["dev", layer]} for layer in range(upstream.num_layers)],
            "eval": {"layer": best, **position["eval", best]},
        },
    }

    details = {
        "per_layer": per_layer,
        "chosen_layer": best,
        "cache": {"hit": entry.hit, "key": entry.meta["key"][:16], "extract_seconds": entry.meta.get("build_seconds")},
        "scoring": {"distance": "cosine-exp, min-max normalised per query frame",
                    "dtw": "subsequence, asymmetric steps",
                    "feature_normalization": "standardised over all queries and documents of the split",
                    "position_removal": position_record,
                    "score_normalization": "per-query z-score", "yes_threshold": DECISION_THRESHOLD,
                    "default_score": DEFAULT_SCORE, "costs": {"p_target": QUESST2014.p_target,
                                                              "c_miss": QUESST2014.c_miss, "c_fa": QUESST2014.c_fa}},
        "eval": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in eval_res.items()},
        "dev": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dev_res.items()},
        "eval_dtw_seconds": round(eval_seconds, 2),
    }
    if req.write:
        out = _run_dir(req.results, req.upstream)
        details["stdlist"] = {
            "dev": str(write_stdlist(out / "dev" / "benchmark.stdlist.xml", names["dev"], doc_names, dev_scores[best])),
            "eval": str(write_stdlist(out / "eval" / "benchmark.stdlist.xml", names["eval"], doc_names, eval_scores)),
            "check_with": "score-TWV-Cnxe.sh <dir> groundtruth_quesst14_<split> -10",
        }
    secondary = {"atwv": round(eval_res["atwv"], 4), "dev_mtwv": round(dev_res["mtwv"], 4),
                 "mtwv_english_only": round(eval_res["mtwv_english"], 4),
                 "atwv_english_only": round(eval_res["atwv_english"], 4)}
    selection = {"on": "validation", "criterion": "highest dev MTWV over layers (ties: lower layer)",
                 "grid": [{"layer": r["layer"], "dev_mtwv": r["dev_mtwv"]} for r in per_layer],
                 "chosen": {"layer": best}, "test_used_for_selection": False}
    return PartialResult(round(eval_res["mtwv"], 4), None, "eval", secondary, selection, details, dataset)
