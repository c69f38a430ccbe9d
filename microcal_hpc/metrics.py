"""Classification metrics shared by every model of the project (CNN, wavelet classifiers, baselines).

AUC is always computed from scores (probabilities or decision values), never from hard labels.
Class 1 (microcalcification cluster) is the positive class.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METRIC_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")


def binary_metrics(y_true: Sequence[int], score: Sequence[float], threshold: float = 0.5,
                   loss: float | None = None) -> dict[str, Any]:
    """AUC (from ``score``), and accuracy, sensitivity, specificity, precision, F1, confusion
    matrix and per-class precision/recall/F1 at ``score >= threshold``."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    auc = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "auc": auc,
        "accuracy": float((tp + tn) / max(len(y), 1)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "f1": float(f1[1]),
        "threshold": float(threshold),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "per_class": {
            str(c): {"precision": float(prec[c]), "recall": float(rec[c]), "f1": float(f1[c]), "support": int(sup[c])}
            for c in (0, 1)
        },
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def _group_index(groups: Sequence | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.array([i]) for i in range(n)]
    g = np.asarray(groups)
    _, inv = np.unique(g, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    return np.split(order, bounds)


def _bootstrap_aucs(y: np.ndarray, scores: list[np.ndarray], groups: Sequence | None, n_boot: int,
                    seed: int) -> np.ndarray:
    """AUC of each score vector on ``n_boot`` cluster-bootstrap resamples (rows: resamples)."""
    from sklearn.metrics import roc_auc_score

    members = _group_index(groups, len(y))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[i] for i in pick])
        if len(np.unique(y[idx])) < 2:
            continue
        out.append([roc_auc_score(y[idx], s[idx]) for s in scores])
    return np.asarray(out)


def bootstrap_auc_ci(y_true: Sequence[int], score: Sequence[float], groups: Sequence | None = None,
                     n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile (1-alpha) confidence interval of the AUC, resampling whole groups (cluster bootstrap)."""
    y = np.asarray(y_true).astype(int)
    aucs = _bootstrap_aucs(y, [np.asarray(score, float)], groups, n_boot, seed)[:, 0]
    lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap_auc(y_true: Sequence[int], score_a: Sequence[float], score_b: Sequence[float],
                         groups: Sequence | None = None, n_boot: int = 2000, seed: int = 0,
                         alpha: float = 0.05) -> dict[str, float]:
    """Paired cluster bootstrap of AUC(a) - AUC(b) on the same images.

    Returns the observed difference, its percentile CI and a two-sided bootstrap p-value
    (twice the smaller tail share of differences on the other side of zero).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(int)
    a, b = np.asarray(score_a, float), np.asarray(score_b, float)
    boots = _bootstrap_aucs(y, [a, b], groups, n_boot, seed)
    d = boots[:, 0] - boots[:, 1]
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    p = 2 * min(np.mean(d <= 0), np.mean(d >= 0))
    return {
        "auc_a": float(roc_auc_score(y, a)),
        "auc_b": float(roc_auc_score(y, b)),
        "diff": float(roc_auc_score(y, a) - roc_auc_score(y, b)),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": float(min(1.0, p)),
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
