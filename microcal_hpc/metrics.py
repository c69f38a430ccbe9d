"""Classification metrics shared by every model of the project (CNN, wavelet classifiers, baselines).

AUC is always computed from scores (probabilities or decision values), never from hard labels.
Class 1 (microcalcification cluster) is the positive class. The module needs NumPy only (no
scikit-learn import, which a training job would otherwise pay for); its results equal scikit-learn's
``roc_auc_score``, ``confusion_matrix`` and ``precision_recall_fscore_support(zero_division=0)``
(tests/test_metrics.py).

The group bootstrap draws every resample at once: resample ``b`` takes ``G`` groups with replacement
(the same draws, in the same order, as ``G`` calls of ``rng.integers(0, G, G)`` per resample), which
gives each image a weight (how often its group was drawn), and the AUC of a resample is the
weighted Mann-Whitney statistic (ties count 1/2): exactly the AUC of the resample's images
concatenated, computed for all resamples with one sort and a few array sums.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

METRIC_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")

_BOOT_CHUNK_ELEMENTS = 4_000_000  # resample weights held at once (resamples x images): 32 MB of float64


def _labels_and_scores(y_true: Sequence[int], score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y, s


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den else empty


def roc_auc(y_true: Sequence[int], score: Sequence[float]) -> float:
    """Area under the ROC curve of ``score`` for class 1 (ties count 1/2); NaN unless both classes occur."""
    y, s = _labels_and_scores(y_true, score)
    return float(_weighted_aucs(y, s, np.ones((1, len(y))))[0])


def binary_metrics(y_true: Sequence[int], score: Sequence[float], threshold: float = 0.5,
                   loss: float | None = None) -> dict[str, Any]:
    """AUC (from ``score``), and accuracy, sensitivity, specificity, precision, F1, confusion
    matrix and per-class precision/recall/F1 at ``score >= threshold``."""
    y, s = _labels_and_scores(y_true, score)
    pred = (s >= threshold).astype(int)
    tp = int(np.sum((pred == 1) & (y == 1)))
    tn = int(np.sum((pred == 0) & (y == 0)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    nan = float("nan")
    # per class c: (true positives, false positives, false negatives) when c is the positive class
    counts = {0: (tn, fn, fp), 1: (tp, fp, fn)}
    per_class = {}
    for c, (t, f_pos, f_neg) in counts.items():
        per_class[str(c)] = {"precision": _ratio(t, t + f_pos, 0.0), "recall": _ratio(t, t + f_neg, 0.0),
                             "f1": _ratio(2 * t, 2 * t + f_pos + f_neg, 0.0), "support": t + f_neg}
    out: dict[str, Any] = {
        "n": int(len(y)),
        "auc": roc_auc(y, s),
        "accuracy": _ratio(tp + tn, max(len(y), 1), 0.0),
        "sensitivity": _ratio(tp, tp + fn, nan),
        "specificity": _ratio(tn, tn + fp, nan),
        "precision": _ratio(tp, tp + fp, 0.0),
        "f1": per_class["1"]["f1"],
        "threshold": float(threshold),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "per_class": per_class,
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def _weighted_aucs(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``s`` under each row of image weights ``weights`` (resamples x images); NaN for a row
    whose positive or negative weights sum to 0.

    Images are sorted by score once; per block of tied scores, the positive and negative weight of
    every row; AUC = sum over blocks of pos * (neg below + neg in the block / 2) / (pos total * neg total).
    """
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    w = weights[:, order]
    is_pos = y[order] == 1
    pos = np.add.reduceat(np.where(is_pos, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(is_pos, 0.0, w), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _resample_weights(groups: Sequence | None, n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Image weights of ``n_boot`` cluster-bootstrap resamples, in chunks of rows (resamples x images).

    Resample ``b`` draws ``G`` group indices (into the sorted distinct groups) with replacement; an
    image's weight is the number of times its group was drawn.
    """
    gid = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if len(gid) != n:
        raise ValueError(f"{len(gid)} groups for {n} images")
    n_groups = int(gid.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_CHUNK_ELEMENTS // max(n, n_groups, 1))
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        pick = rng.integers(0, n_groups, (b, n_groups))
        flat = (pick + n_groups * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups)
        yield counts[:, gid].astype(float)


def _bootstrap_aucs(y: np.ndarray, scores: list[np.ndarray], groups: Sequence | None, n_boot: int,
                    seed: int) -> np.ndarray:
    """AUC of each score vector on the ``n_boot`` cluster-bootstrap resamples that hold both classes
    (rows: resamples, columns: score vectors)."""
    out = [np.empty((0, len(scores)))]
    if not len(y):
        return out[0]
    for w in _resample_weights(groups, len(y), n_boot, seed):
        aucs = np.stack([_weighted_aucs(y, s, w) for s in scores], axis=1)
        out.append(aucs[~np.isnan(aucs[:, 0])])
    return np.concatenate(out)


def _quantiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    if not len(values):  # no resample held both classes
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_auc_ci(y_true: Sequence[int], score: Sequence[float], groups: Sequence | None = None,
                     n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile (1-alpha) confidence interval of the AUC, resampling whole groups (cluster bootstrap).

    Resamples holding one class only are left out; (NaN, NaN) when every resample is such.
    """
    y, s = _labels_and_scores(y_true, score)
    return _quantiles(_bootstrap_aucs(y, [s], groups, n_boot, seed)[:, 0], alpha)


def paired_bootstrap_auc(y_true: Sequence[int], score_a: Sequence[float], score_b: Sequence[float],
                         groups: Sequence | None = None, n_boot: int = 2000, seed: int = 0,
                         alpha: float = 0.05) -> dict[str, float]:
    """Paired cluster bootstrap of AUC(a) - AUC(b) on the same images.

    Returns the observed difference, its percentile CI and a two-sided bootstrap p-value
    (twice the smaller tail share of differences on the other side of zero); NaN where no resample
    holds both classes.
    """
    y, a = _labels_and_scores(y_true, score_a)
    _, b = _labels_and_scores(y_true, score_b)
    boots = _bootstrap_aucs(y, [a, b], groups, n_boot, seed)
    d = boots[:, 0] - boots[:, 1]
    lo, hi = _quantiles(d, alpha)
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))) if len(d) else float("nan")
    auc_a, auc_b = roc_auc(y, a), roc_auc(y, b)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": auc_a - auc_b,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": float(p),
        "n_boot": int(len(d)),
    }


def summarize(per_run: list[dict[str, Any]], keys: Sequence[str] = METRIC_KEYS + ("loss",)) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (ddof=1) and count of each metric over folds or runs."""
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        vals = np.array([r[k] for r in per_run if k in r and r[k] is not None], dtype=float)
        vals = vals[~np.isnan(vals)]
        if len(vals):
            out[k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                      "n": int(len(vals))}
    return out
