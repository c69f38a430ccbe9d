"""The wavelet classifier job: the classifier zoo on wavelet features (command line: ``microcal-hpc wavelet-classify``).

For every feature set (``classify.feature_sets``, names from ``wavelet.transform.FEATURE_SETS``: coeffs,
stats, ...) and classifier (``classify.classifiers``: rf, svm, lr, knn, nb, dt, mlp, hgb) it runs
group-aware stratified k-fold CV on the official Train set (the CNN's splitter and folds), fits on all
of Train and scores Test, and writes
``DIR/<feature_set>/<classifier>/`` with metrics.json, predictions.npz, config.yaml and classify.log
(docs/outputs.md). ``DIR/classify.log`` collects every line. A model folder that is already complete
for the same features and settings is skipped. Every fit of every model (k folds + the final fit each)
runs in one pool of ``classify.n_jobs`` worker processes (0: every core the job may use).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

log = logging.getLogger("microcal.wavelet.classify")


def _warn_if_folds_differ(cfg) -> None:
    """The arms share folds only with the same splitter settings: say so when classify.* and train.* differ."""
    c, t = cfg.classify, cfg.train
    diff = [f"{k}: classify {getattr(c, k)!r} vs train {getattr(t, k)!r}" for k in ("folds", "group_by", "seed")
            if getattr(c, k) != getattr(t, k)]
    if diff:
        log.warning("CV folds differ from the CNN's (%s): fold k will not hold the same images in both arms",
                    "; ".join(diff))


def classify_job(cfg, features: str, run_dir: str, force: bool = False) -> list[str]:
    """Evaluate every classifier on every feature set of ``features``; return the model folders."""
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.wavelet.classifiers import check_classifiers, make_classifier
    from microcal_hpc.wavelet.evaluate import ModelJob, resolve_n_jobs, run_model_jobs, shared_folds
    from microcal_hpc.wavelet.features_file import feature_sets_in, features_settings, load_features
    from microcal_hpc.errors import InputError

    run_dir = Path(run_dir)
    setup_job_logging(run_dir / "classify.log", name="microcal.wavelet.classify")
    cc = cfg.classify
    names = check_classifiers(cc.classifiers)
    available = feature_sets_in(features)
    missing = [fs for fs in cc.feature_sets if fs not in available]
    if missing:
        raise InputError(f"{features}: holds feature set(s) {', '.join(available)}, not {', '.join(missing)} "
                         f"(recompute with wavelet.features listing them, or choose --feature-sets)")
    _warn_if_folds_differ(cfg)
    settings = features_settings(features)
    inputs = {k: settings.get(k) for k in ("input_digest", "wavelet", "level", "keep_levels", "mode", "dtype",
                                           "effective_level")}
    wavelet_info = {k: settings.get(k) for k in ("wavelet", "level", "effective_level", "boundary_free_max_level",
                                                 "keep_levels", "mode", "dtype", "image_shape")}
    log.info("classifiers %s on feature sets %s of %s (wavelet %s level %s, keep levels %s); %d-fold CV, "
             "group_by=%s, seed=%d, n_jobs=%d (%d workers)", ",".join(names), ",".join(cc.feature_sets), features,
             settings.get("wavelet"), settings.get("level"), settings.get("keep_levels"), cc.folds, cc.group_by,
             cc.seed, cc.n_jobs, resolve_n_jobs(cc.n_jobs))
    jobs = []
    for fs in cc.feature_sets:
        X_train, meta_train = load_features(features, "train", fs)
        X_test, meta_test = load_features(features, "test", fs)
        folds = shared_folds(meta_train, cc.folds, cc.group_by, cc.seed)
        jobs += [ModelJob(job_dir=run_dir / fs / name, make_model=partial(make_classifier, name, cc.seed),
                          X_train=X_train, meta_train=meta_train, X_test=X_test, meta_test=meta_test, arm="wavelet",
                          model=name, feature_set=fs, folds=folds, group_by=cc.group_by, seed=cc.seed,
                          log_name="classify.log", inputs=dict(inputs, feature_set=fs),
                          extra={"wavelet": wavelet_info}) for name in names]
    done = run_model_jobs(jobs, cfg, cc.n_jobs, force=force)
    log.info("done: %d model folder(s) under %s", len(done), run_dir)
    return done
