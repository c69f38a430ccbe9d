"""Evaluate one classifier on one feature set: group-aware k-fold CV on Train, then fit on Train, score Test.

The folds are the project's shared splitter (:mod:`microcal_hpc.splits`): ``split_groups`` on the packed
Train split in HDF5 order, then ``cv_folds(labels, groups, k, seed)``, so fold ``k`` holds the same images
as the CNN's fold-``k`` job when both use the same ``folds``, ``group_by`` and ``seed``. The ROC/AUC
comes from scores (probabilities or decision values), never from hard labels; metrics from
:mod:`microcal_hpc.metrics`. Outputs follow docs/outputs.md (metrics.json, predictions.npz, config.yaml);
``metrics.json`` is written last, so its presence means the job is complete.

Used by the wavelet classifiers (arm ``wavelet``) and the grey-level shortcut baseline (arm ``baseline``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from microcal_hpc.atomic import atomic_path, write_json
from microcal_hpc.dataset import Split
from microcal_hpc.joblog import file_handler
from microcal_hpc.metrics import binary_metrics, bootstrap_auc_ci, summarize
from microcal_hpc.splits import split_folds, split_groups
from microcal_hpc.wavelet.classifiers import score_kind, scores

log = logging.getLogger("microcal.wavelet.evaluate")

SCHEMA = 1


@dataclass
class Evaluation:
    """Everything one CV + Test evaluation produced."""

    per_fold: list[dict]
    summary: dict
    pooled: dict  # metrics of all out-of-fold scores together
    val_score: np.ndarray  # out-of-fold score of every Train image (HDF5 order)
    val_fold: np.ndarray  # fold in which each Train image was scored
    test: dict  # metrics on the official Test set, with auc_ci
    test_score: np.ndarray
    score_kind: str
    estimator: str
    elapsed_s: float


def shared_folds(meta: Split, n_folds: int, group_by: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The project's CV folds of a Train split (same function and arguments as the CNN fold jobs)."""
    return split_folds(meta, group_by, n_folds, seed)


def _fit_and_score(make_model: Callable, X_fit, y_fit, X_eval) -> tuple[np.ndarray, str, str, float]:
    """Fit a fresh model and score ``X_eval``, single-threaded (BLAS and OpenMP limited to 1 thread).

    Parallelism comes from joblib running folds side by side (``n_jobs``); threads inside each fit on
    top of that oversubscribe the cores: a gradient-boosting fit on 2 busy cores took 51 s with 2
    OpenMP threads and 16 s with one.
    """
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        model = make_model()
        model.fit(X_fit, y_fit)
        s = scores(model, X_eval)
    return s, score_kind(model), _compact_repr(model), time.perf_counter() - t0


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def _compact_repr(model) -> str:
    return " ".join(repr(model).split())


def evaluate(make_model: Callable, X_train: np.ndarray, meta_train: Split, X_test: np.ndarray, meta_test: Split,
             folds: list[tuple[np.ndarray, np.ndarray]], group_by: str = "group", n_jobs: int = 1,
             n_boot: int = 2000, boot_seed: int = 0, name: str = "model") -> Evaluation:
    """k-fold CV on Train (out-of-fold scores), then fit on all of Train and score Test.

    The k fold fits and the final fit are independent tasks run by joblib with ``n_jobs`` workers;
    one progress line per finished task.
    """
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    y, y_test = meta_train.labels, meta_test.labels
    tasks = [(X_train[tr], y[tr], X_train[va]) for tr, va in folds] + [(X_train, y, X_test)]
    labels = [f"fold {k + 1}/{len(folds)}" for k in range(len(folds))] + ["final fit on Train -> Test"]
    jobs = (delayed(_fit_and_score)(make_model, *t) for t in tasks)
    results, per_fold = [], []
    for i, res in enumerate(Parallel(n_jobs=n_jobs, return_as="generator")(jobs)):
        results.append(res)
        if i < len(folds):
            va = folds[i][1]
            m = binary_metrics(y[va], res[0])
            m["fold"] = i
            per_fold.append(m)
            log.info("%s: %s: AUC %.4f, accuracy %.3f (%d images, fit+score %.1f s)", name, labels[i], m["auc"],
                     m["accuracy"], len(va), res[3])
        else:
            log.info("%s: %s: %.1f s", name, labels[i], res[3])

    val_score = np.full(len(y), np.nan)
    val_fold = np.full(len(y), -1, dtype=np.int64)
    for k, ((_, va), res) in enumerate(zip(folds, results)):
        val_score[va] = res[0]
        val_fold[va] = k
    if np.isnan(val_score).any():
        raise ValueError("the folds do not cover every Train image")
    test_score = results[-1][0]
    test = binary_metrics(y_test, test_score)
    test_groups = split_groups(meta_test, group_by)
    lo, hi = bootstrap_auc_ci(y_test, test_score, groups=test_groups, n_boot=n_boot, seed=boot_seed)
    test["auc_ci"] = [lo, hi]
    test["auc_ci_method"] = f"group bootstrap ({group_by} + pixel duplicates), {n_boot} resamples"
    summary = summarize(per_fold)
    pooled = binary_metrics(y, val_score)
    log.info("%s: CV AUC %.4f +- %.4f (pooled out-of-fold %.4f); Test AUC %.4f [%.4f, %.4f]", name,
             summary["auc"]["mean"], summary["auc"]["std"], pooled["auc"], test["auc"], lo, hi)
    return Evaluation(per_fold=per_fold, summary=summary, pooled=pooled, val_score=val_score, val_fold=val_fold,
                      test=test, test_score=test_score, score_kind=results[-1][1], estimator=results[-1][2],
                      elapsed_s=time.perf_counter() - t0)


def fingerprint(**parts: Any) -> str:
    """sha256 of the JSON of what an evaluation depends on (decides whether outputs are up to date)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def is_complete(job_dir: str | os.PathLike, expected_fingerprint: str) -> bool:
    """True if ``job_dir/metrics.json`` exists and was written for the same inputs and settings."""
    p = Path(job_dir) / "metrics.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("fingerprint") == expected_fingerprint
    except (OSError, ValueError):
        return False


def write_outputs(job_dir: str | os.PathLike, ev: Evaluation, meta_train: Split, meta_test: Split, cfg, *,
                  arm: str, model: str, feature_set: str | None, folds: int, group_by: str, seed: int,
                  extra: dict | None = None) -> Path:
    """predictions.npz, config.yaml, then metrics.json (last: its presence marks the job complete)."""
    from microcal_hpc.config import save_config

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(job_dir / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh,
                 test_ids=np.asarray(meta_test.ids, dtype=str), test_labels=meta_test.labels.astype(np.int64),
                 test_prob=ev.test_score.astype(float), test_groups=np.asarray(meta_test.groups, dtype=str),
                 val_ids=np.asarray(meta_train.ids, dtype=str), val_labels=meta_train.labels.astype(np.int64),
                 val_prob=ev.val_score.astype(float), val_groups=np.asarray(meta_train.groups, dtype=str),
                 val_fold=ev.val_fold.astype(np.int64))
    save_config(cfg, job_dir / "config.yaml")
    metrics = {
        "schema": SCHEMA,
        "arm": arm,
        "model": model,
        "run": "cv",
        "feature_set": feature_set,
        "augment": "none",
        "fold": None,
        "folds": int(folds),
        "group_by": group_by,
        "seed": int(seed),
        "validation": None,
        "cv": {"per_fold": ev.per_fold, "summary": ev.summary, "pooled": ev.pooled},
        "test": ev.test,
        "score": ev.score_kind,
        "estimator": ev.estimator,
        "n_train": int(len(meta_train)),
        "n_test": int(len(meta_test)),
        "elapsed_s": round(ev.elapsed_s, 3),
    }
    metrics.update(extra or {})
    write_json(job_dir / "metrics.json", metrics)
    return job_dir


@contextlib.contextmanager
def job_log_file(path: str | os.PathLike):
    """Copy the ``microcal`` log lines to ``path`` (appended) while the block runs."""
    root = logging.getLogger("microcal")
    handler = file_handler(path)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_model_job(job_dir: str | os.PathLike, make_model: Callable, X_train: np.ndarray, meta_train: Split,
                  X_test: np.ndarray, meta_test: Split, cfg, *, arm: str, model: str, feature_set: str | None,
                  folds: list[tuple[np.ndarray, np.ndarray]], n_folds: int, group_by: str, seed: int,
                  n_jobs: int, log_name: str, inputs: dict, extra: dict | None = None, force: bool = False) -> str:
    """Evaluate one model and write its folder, unless it is already complete for the same ``inputs``."""
    job_dir = Path(job_dir)
    fp = fingerprint(arm=arm, model=model, feature_set=feature_set, estimator=_compact_repr(make_model()),
                     folds=n_folds, group_by=group_by, seed=seed, n_boot=cfg.report.bootstrap,
                     boot_seed=cfg.report.seed, inputs=inputs, sklearn=_sklearn_version())
    name = model if feature_set is None else f"{feature_set}/{model}"
    if not force and is_complete(job_dir, fp):
        log.info("%s: %s is already complete for these inputs and settings; nothing to do", name, job_dir)
        return str(job_dir)
    with job_log_file(job_dir / log_name):
        log.info("%s: %d Train images (%d features), %d-fold group CV (group_by=%s, seed=%d), then Test (%d images)",
                 name, len(meta_train), X_train.shape[1], n_folds, group_by, seed, len(meta_test))
        ev = evaluate(make_model, X_train, meta_train, X_test, meta_test, folds, group_by=group_by, n_jobs=n_jobs,
                      n_boot=cfg.report.bootstrap, boot_seed=cfg.report.seed, name=name)
        write_outputs(job_dir, ev, meta_train, meta_test, cfg, arm=arm, model=model, feature_set=feature_set,
                      folds=n_folds, group_by=group_by, seed=seed,
                      extra={"n_features": int(X_train.shape[1]), **(extra or {}), "inputs": inputs,
                             "fingerprint": fp})
        log.info("%s: wrote %s", name, job_dir)
    return str(job_dir)
