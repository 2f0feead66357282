"""Clip classification metrics, in percent.

ICBHI 2017 challenge definitions (Rocha et al., 2019): with classes normal / crackle / wheeze /
both, specificity Sp = correctly classified normal cycles / all normal cycles; sensitivity
Se = abnormal cycles classified as exactly their class / all abnormal cycles (a crackle cycle
predicted as "both" is an error); Score = (Se + Sp) / 2.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "icbhi_scores", "per_class_accuracy"]


def accuracy(y_true, y_pred) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("accuracy of an empty split is undefined")
    return {"score": float((y_true == y_pred).mean() * 100.0)}


def per_class_accuracy(y_true, y_pred, classes: list[str]) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {c: float((y_pred[y_true == k] == k).mean() * 100.0) for k, c in enumerate(classes) if (y_true == k).any()}


def icbhi_scores(y_true, y_pred, normal: int = 0) -> dict:
    """Se, Sp and Score in percent; `normal` is the label id of normal cycles."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    is_normal = y_true == normal
    if not is_normal.any() or is_normal.all():
        raise ValueError("ICBHI score needs both normal and abnormal cycles in the split")
    sp = float((y_pred[is_normal] == normal).mean() * 100.0)
    se = float((y_pred[~is_normal] == y_true[~is_normal]).mean() * 100.0)
    return {"score": (se + sp) / 2.0, "se": se, "sp": sp}
