"""Evaluate classifiers on feature sets: group-aware k-fold CV on Train, then fit on Train, score Test.

The folds are the project's shared splitter (:mod:`microcal_hpc.splits`): ``split_groups`` on the packed
Train split in HDF5 order, then ``cv_folds(labels, groups, k, seed)``, so fold ``k`` holds the same images
as the CNN's fold-``k`` job when both use the same ``folds``, ``group_by`` and ``seed``. The ROC/AUC
comes from scores (probabilities or decision values), never from hard labels; metrics from
:mod:`microcal_hpc.metrics`. Outputs follow docs/outputs.md (metrics.json, predictions.npz, config.yaml);
``metrics.json`` is written last, so its presence means the job is complete.

Parallelism: every fit of every model a job evaluates (k folds + the final fit, for each model) is one
task, and all tasks go to one pool of ``n_jobs`` worker processes (joblib/loky; ``n_jobs = 0``: every
core of this process's CPU affinity mask). Each fit runs single-threaded (BLAS and OpenMP limited to
one thread), so the results do not depend on ``n_jobs`` and the cores are not oversubscribed. A model's
folder is written as soon as its last fit is done.

Used by the wavelet classifiers (arm ``wavelet``) and the grey-level shortcut baseline (arm ``baseline``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

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
    fit_seconds: list[float]  # wall time of each fit + scoring (folds in order, then the final fit)
    fit_cpu_seconds: list[float]  # CPU time of the same (each fit is single-threaded)
    elapsed_s: float  # from the start of the model's first fit to the end of its last
    fits_not_converged: int  # fits that stopped at their iteration limit (ConvergenceWarning)


@dataclass
class ModelJob:
    """One model folder to produce: a classifier factory, the features it sees, and what to record."""

    job_dir: Path
    make_model: Callable
    X_train: np.ndarray
    meta_train: Split
    X_test: np.ndarray
    meta_test: Split
    arm: str
    model: str
    feature_set: Optional[str]
    folds: list[tuple[np.ndarray, np.ndarray]]
    group_by: str
    seed: int
    log_name: str
    inputs: dict
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model if self.feature_set is None else f"{self.feature_set}/{self.model}"

    def fingerprint(self, cfg) -> str:
        return fingerprint(arm=self.arm, model=self.model, feature_set=self.feature_set,
                           estimator=_compact_repr(self.make_model()), folds=len(self.folds),
                           group_by=self.group_by, seed=self.seed, n_boot=cfg.report.bootstrap,
                           boot_seed=cfg.report.seed, inputs=self.inputs, sklearn=_sklearn_version())

    def tasks(self) -> list[tuple]:
        """Arguments of :func:`fit_and_score` for each fit: the k folds in order, then Train -> Test."""
        y = self.meta_train.labels
        return ([(self.make_model, self.X_train, tr, y[tr], self.X_train, va) for tr, va in self.folds]
                + [(self.make_model, self.X_train, None, y, self.X_test, None)])

    def task_label(self, k: int) -> str:
        return f"fold {k + 1}/{len(self.folds)}" if k < len(self.folds) else "final fit on Train -> Test"


def resolve_n_jobs(n_jobs: int) -> int:
    """Worker processes for ``classify.n_jobs``: the number itself, or for 0 every core of this
    process's CPU affinity mask (what a scheduler or the local executor gave the job)."""
    if n_jobs > 0:
        return int(n_jobs)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this platform
        return os.cpu_count() or 1


def shared_folds(meta: Split, n_folds: int, group_by: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The project's CV folds of a Train split (same function and arguments as the CNN fold jobs)."""
    return split_folds(meta, group_by, n_folds, seed)


def fit_and_score(make_model: Callable, X_fit: np.ndarray, fit_rows: Optional[np.ndarray], y_fit: np.ndarray,
                  X_eval: np.ndarray, eval_rows: Optional[np.ndarray]) -> dict:
    """Fit a fresh model on ``X_fit[fit_rows]`` (all rows for None) and score ``X_eval[eval_rows]``,
    single-threaded (BLAS and OpenMP limited to 1 thread).

    Parallelism comes from running fits side by side in worker processes; threads inside each fit on
    top of that oversubscribe the cores: a gradient-boosting fit on 2 busy cores took 51 s with 2
    OpenMP threads and 16 s with one.
    """
    from threadpoolctl import threadpool_limits

    started, t0, cpu0 = time.time(), time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1), _convergence_noted() as converged:
        model = make_model()
        model.fit(X_fit if fit_rows is None else X_fit[fit_rows], y_fit)
        s = scores(model, X_eval if eval_rows is None else X_eval[eval_rows])
    return {"score": s, "score_kind": score_kind(model), "estimator": _compact_repr(model), "started": started,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0, "pid": os.getpid(),
            "converged": converged[0]}


@contextlib.contextmanager
def _convergence_noted():
    """Yield a one-item list that ends up False if the block raised scikit-learn's ConvergenceWarning (a fit
    that stopped at its iteration limit: the MLP's fixed number of epochs, by design); that warning is
    counted there instead of printed (once per fit, it filled the job's log). Every other warning goes
    through the filters and printing it would have met without this block."""
    from sklearn.exceptions import ConvergenceWarning

    converged = [True]
    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.filterwarnings("always", category=ConvergenceWarning)  # each fit's own, not once per process
        show = warnings.showwarning

        def show_or_count(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ConvergenceWarning):
                converged[0] = False
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_or_count
        yield converged


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def _compact_repr(model) -> str:
    return " ".join(repr(model).split())


def _evaluation(job: ModelJob, results: list[dict], n_boot: int, boot_seed: int) -> Evaluation:
    """Metrics of one model from the results of its fits (k folds in order, then the final fit)."""
    folds, y, y_test = job.folds, job.meta_train.labels, job.meta_test.labels
    per_fold = []
    val_score = np.full(len(y), np.nan)
    val_fold = np.full(len(y), -1, dtype=np.int64)
    for k, ((_, va), res) in enumerate(zip(folds, results)):
        val_score[va] = res["score"]
        val_fold[va] = k
        per_fold.append(dict(binary_metrics(y[va], res["score"]), fold=k))
    if np.isnan(val_score).any():
        raise ValueError("the folds do not cover every Train image")
    test_score = results[-1]["score"]
    test = binary_metrics(y_test, test_score)
    lo, hi = bootstrap_auc_ci(y_test, test_score, groups=split_groups(job.meta_test, job.group_by), n_boot=n_boot,
                              seed=boot_seed)
    test["auc_ci"] = [lo, hi]
    test["auc_ci_method"] = f"group bootstrap ({job.group_by} + pixel duplicates), {n_boot} resamples"
    ended = max(r["started"] + r["seconds"] for r in results)
    return Evaluation(per_fold=per_fold, summary=summarize(per_fold), pooled=binary_metrics(y, val_score),
                      val_score=val_score, val_fold=val_fold, test=test, test_score=test_score,
                      score_kind=results[-1]["score_kind"], estimator=results[-1]["estimator"],
                      fit_seconds=[round(r["seconds"], 3) for r in results],
                      fit_cpu_seconds=[round(r["cpu_seconds"], 3) for r in results],
                      elapsed_s=ended - min(r["started"] for r in results),
                      fits_not_converged=sum(not r["converged"] for r in results))


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


def write_outputs(job: ModelJob, ev: Evaluation, cfg, fp: str) -> Path:
    """predictions.npz, config.yaml, then metrics.json (last: its presence marks the job complete)."""
    from microcal_hpc.config import save_config

    job_dir, meta_train, meta_test = Path(job.job_dir), job.meta_train, job.meta_test
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
        "arm": job.arm,
        "model": job.model,
        "run": "cv",
        "feature_set": job.feature_set,
        "augment": "none",
        "fold": None,
        "folds": len(job.folds),
        "group_by": job.group_by,
        "seed": int(job.seed),
        "validation": None,
        "cv": {"per_fold": ev.per_fold, "summary": ev.summary, "pooled": ev.pooled},
        "test": ev.test,
        "score": ev.score_kind,
        "estimator": ev.estimator,
        "n_train": int(len(meta_train)),
        "n_test": int(len(meta_test)),
        "n_features": int(job.X_train.shape[1]),
        "fit_seconds": ev.fit_seconds,
        "fit_cpu_seconds": ev.fit_cpu_seconds,
        "elapsed_s": round(ev.elapsed_s, 3),
        "fits_not_converged": ev.fits_not_converged,
    }
    metrics.update(job.extra, inputs=job.inputs, fingerprint=fp)
    write_json(job_dir / "metrics.json", metrics)
    return job_dir


def _model_logger(job: ModelJob) -> tuple[logging.Logger, Optional[logging.Handler]]:
    """A logger for one model's lines: they go to the job's log (``microcal`` handlers) and to the model's
    own log file, unless the ``microcal`` handlers already write that file."""
    logger = logging.getLogger(f"microcal.wavelet.evaluate.{job.name}")
    path = os.path.abspath(Path(job.job_dir) / job.log_name)
    root = logging.getLogger("microcal")
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
        return logger, None
    handler = file_handler(path)
    logger.addHandler(handler)
    return logger, handler


def run_model_jobs(jobs: list[ModelJob], cfg, n_jobs: int, force: bool = False) -> list[str]:
    """Evaluate every model of ``jobs`` that is not already complete for the same inputs and settings;
    all their fits run in one pool of :func:`resolve_n_jobs` workers. Returns the model folders."""
    from joblib import Parallel, delayed

    pending = []
    for job in jobs:
        fp = job.fingerprint(cfg)
        if not force and is_complete(job.job_dir, fp):
            log.info("%s: %s is already complete for these inputs and settings; nothing to do", job.name, job.job_dir)
        else:
            pending.append((job, fp))
    tasks = [(j, k, args) for j, (job, _) in enumerate(pending) for k, args in enumerate(job.tasks())]
    workers = min(resolve_n_jobs(n_jobs), max(len(tasks), 1))
    names = ", ".join(job.name for job, _ in pending)
    if tasks:
        log.info("%d model(s) to evaluate (%s): %d fits on %d worker process(es)", len(pending), names, len(tasks),
                 workers)
    loggers = [_model_logger(job) for job, _ in pending]
    results: list[dict[int, dict]] = [{} for _ in pending]
    t0 = time.perf_counter()
    try:
        for (job, _), (mlog, _) in zip(pending, loggers):
            mlog.info("%s: %d Train images (%d features), %d-fold group CV (group_by=%s, seed=%d), then Test "
                      "(%d images)", job.name, len(job.meta_train), job.X_train.shape[1], len(job.folds),
                      job.group_by, job.seed, len(job.meta_test))
        calls = (delayed(_with_task)(i, fit_and_score, *args) for i, (_, _, args) in enumerate(tasks))
        for done, (i, res) in enumerate(Parallel(n_jobs=workers, return_as="generator_unordered")(calls), 1):
            j, k, _ = tasks[i]
            job, mlog = pending[j][0], loggers[j][0]
            results[j][k] = res
            _log_fit(mlog, job, k, res, f"[{done}/{len(tasks)}]")
            if len(results[j]) == len(job.folds) + 1:
                _finish(job, pending[j][1], [results[j][k] for k in sorted(results[j])], cfg, mlog)
    finally:
        for mlog, handler in loggers:
            if handler is not None:
                mlog.removeHandler(handler)
                handler.close()
    if tasks:
        log.info("%d model(s) evaluated (%s) in %.1f s", len(pending), names, time.perf_counter() - t0)
    return [str(job.job_dir) for job in jobs]


def _log_fit(mlog: logging.Logger, job: ModelJob, k: int, res: dict, progress: str) -> None:
    """One line per finished fit: the fold's AUC and accuracy (not for the final fit), time and worker."""
    where = f"fit+score {res['seconds']:.1f} s, worker {res['pid']}"
    if k < len(job.folds):
        va = job.folds[k][1]
        m = binary_metrics(job.meta_train.labels[va], res["score"])
        mlog.info("%s %s: %s: AUC %.4f, accuracy %.3f (%d images, %s)", progress, job.name, job.task_label(k),
                  m["auc"], m["accuracy"], len(va), where)
    else:
        mlog.info("%s %s: %s: %s", progress, job.name, job.task_label(k), where)


def _with_task(i: int, fn: Callable, *args) -> tuple[int, Any]:
    """``(i, fn(*args))``: results that arrive out of order keep their task index."""
    return i, fn(*args)


def _finish(job: ModelJob, fp: str, results: list[dict], cfg, mlog: logging.Logger) -> None:
    ev = _evaluation(job, results, cfg.report.bootstrap, cfg.report.seed)
    write_outputs(job, ev, cfg, fp)
    lo, hi = ev.test["auc_ci"]
    limit = (f"; {ev.fits_not_converged} of {len(results)} fits stopped at their iteration limit before "
             "converging" if ev.fits_not_converged else "")
    mlog.info("%s: CV AUC %.4f +- %.4f (pooled out-of-fold %.4f); Test AUC %.4f [%.4f, %.4f]%s; wrote %s",
              job.name, ev.summary["auc"]["mean"], ev.summary["auc"]["std"], ev.pooled["auc"], ev.test["auc"], lo,
              hi, limit, job.job_dir)


def run_model_job(job_dir: str | os.PathLike, make_model: Callable, X_train: np.ndarray, meta_train: Split,
                  X_test: np.ndarray, meta_test: Split, cfg, *, arm: str, model: str, feature_set: str | None,
                  folds: list[tuple[np.ndarray, np.ndarray]], n_folds: int, group_by: str, seed: int,
                  n_jobs: int, log_name: str, inputs: dict, extra: dict | None = None, force: bool = False) -> str:
    """Evaluate one model and write its folder, unless it is already complete for the same ``inputs``
    (:func:`run_model_jobs` for a single model; ``n_folds`` must be ``len(folds)``)."""
    if n_folds != len(folds):
        raise ValueError(f"n_folds={n_folds} but {len(folds)} folds were given")
    job = ModelJob(job_dir=Path(job_dir), make_model=make_model, X_train=X_train, meta_train=meta_train,
                   X_test=X_test, meta_test=meta_test, arm=arm, model=model, feature_set=feature_set, folds=folds,
                   group_by=group_by, seed=seed, log_name=log_name, inputs=inputs, extra=dict(extra or {}))
    return run_model_jobs([job], cfg, n_jobs, force)[0]
