"""Query-by-example spoken term detection: subsequence-DTW scoring and the scorer's stdlist file.

`dtw` turns query and document frame features into one detection score per (query, document)
pair exactly as s3prl 0.4.18's `quesst14_dtw` does, only batched; `stdlist` writes and reads the
`stdlist.xml` that the official QUESST scorer (score-TWV-Cnxe.sh) consumes; `position` removes the
within-window position component of windowed encoders' frames before scoring. The metric itself
(ATWV/MTWV) lives in `tasks.metrics.twv`.
"""

from .dtw import (
    DECISION_THRESHOLD,
    MIN_QUERY_FRAMES,
    qbe_scores,
    raw_match_scores,
    standardize,
    subsequence_dtw,
    znormalize,
)
from .position import PositionRemoval, position_means, position_variance_fraction, remove_position_mean
from .stdlist import read_stdlist, write_stdlist

__all__ = [
    "DECISION_THRESHOLD",
    "MIN_QUERY_FRAMES",
    "PositionRemoval",
    "position_means",
    "position_variance_fraction",
    "qbe_scores",
    "raw_match_scores",
    "read_stdlist",
    "remove_position_mean",
    "standardize",
    "subsequence_dtw",
    "write_stdlist",
    "znormalize",
]
