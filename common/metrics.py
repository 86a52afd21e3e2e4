"""GLUE metric values in plain numpy (same numbers as sklearn / scipy.stats)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from common.glue import GlueTask


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two non-empty vectors of equal length, got {a.size} and {b.size}")
    return a, b


def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of ``preds`` equal to ``labels``."""
    preds, labels = _pair(preds, labels)
    return float(np.mean(preds == labels))


def f1(preds: ArrayLike, labels: ArrayLike) -> float:
    """Binary F1 of the positive class 1 (0.0 when it has no true, predicted or gold positive)."""
    preds, labels = _pair(preds, labels)
    tp = np.sum((preds == 1) & (labels == 1))
    denom = np.sum(preds == 1) + np.sum(labels == 1)
    return float(2 * tp / denom) if denom else 0.0


def matthews_corr(preds: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation (multiclass form, as sklearn's); 0.0 when undefined."""
    preds, labels = _pair(preds, labels)
    classes, idx = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    n, k = labels.size, classes.size
    confusion = np.zeros((k, k))
    np.add.at(confusion, (idx[:n], idx[n:]), 1)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    cov_tp = np.trace(confusion) * n - t_sum @ p_sum
    cov_pp = n * n - p_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation; nan when either vector is constant (as scipy)."""
    x, y = _pair(x, y)
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    denom = np.sqrt((x @ x) * (y @ y))
    if denom == 0:
        return float("nan")
    return float(np.clip(x @ y / denom, -1.0, 1.0))


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy.stats.rankdata's default)."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    new_value = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    starts = np.flatnonzero(new_value)  # 0-based first position of each tie group
    ends = np.r_[starts[1:], a.size]  # one past its last position
    group = np.cumsum(new_value) - 1
    ranks = np.empty(a.size)
    ranks[order] = (starts[group] + ends[group] + 1) / 2
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation, ties given average ranks (as scipy.stats.spearmanr)."""
    x, y = _pair(x, y)
    return pearson(_average_ranks(x), _average_ranks(y))


_METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_corr": matthews_corr,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_metrics(task: GlueTask, predictions: np.ndarray,
                 label_ids: np.ndarray) -> dict[str, float]:
    """``task.metric_names`` -> value, from logits ``[n, num_labels]`` (argmax taken)
    or, for stsb, scores ``[n]`` / ``[n, 1]``."""
    predictions, label_ids = np.asarray(predictions), np.asarray(label_ids).ravel()
    if task.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        if predictions.ndim != 1:
            raise ValueError(f"{task.name}: expected scores of shape [n] or [n, 1], "
                             f"got {predictions.shape}")
    else:
        if predictions.ndim != 2 or predictions.shape[1] != task.num_labels:
            raise ValueError(f"{task.name}: expected logits of shape [n, {task.num_labels}], "
                             f"got {predictions.shape}")
        predictions = predictions.argmax(axis=-1)
    return {name: _METRICS[name](predictions, label_ids) for name in task.metric_names}
