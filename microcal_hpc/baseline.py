"""The shortcut baseline job (greylevel-rf); command line: ``microcal-hpc baseline``.

A Random Forest (the wavelet arm's ``rf``) on 12 global grey-level statistics of each patch
(:mod:`microcal_hpc.greylevel`: mean, std, min, max, percentiles 5/25/50/75/95, skewness, kurtosis,
histogram entropy). It cannot see microcalcifications as such; its AUC shows how much of the task is
solvable from global acquisition differences. Cross-validated with the same folds as every other model
(``classify.folds``, ``classify.group_by``, ``classify.seed`` through the shared splitter), then fitted on
all of Train and scored on Test. Writes ``DIR/greylevel-rf/`` (metrics.json with arm "baseline", model
"greylevel-rf", predictions.npz, config.yaml, baseline.log); skipped when already complete.
"""
from __future__ import annotations

from pathlib import Path

BASELINE_NAME = "greylevel-rf"


def baseline_job(cfg, data: str, run_dir: str, force: bool = False) -> str:
    """Evaluate the grey-level baseline on the packed file ``data``; return ``run_dir/greylevel-rf``."""
    from functools import partial

    from microcal_hpc.dataset import load_split
    from microcal_hpc.greylevel import GREYLEVEL_NAMES, greylevel_features
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.wavelet.classifiers import make_classifier
    from microcal_hpc.wavelet.evaluate import run_model_job, shared_folds
    from microcal_hpc.wavelet.features_file import input_digest

    job_dir = Path(run_dir) / BASELINE_NAME
    log = setup_job_logging(job_dir / "baseline.log", name="microcal.baseline")
    cc = cfg.classify
    train, test = load_split(data, "train"), load_split(data, "test")
    X_train, X_test = greylevel_features(train.images), greylevel_features(test.images)
    log.info("grey-level baseline on %s: %d Train / %d Test patches, features: %s", data, len(train), len(test),
             ", ".join(GREYLEVEL_NAMES))
    folds = shared_folds(train, cc.folds, cc.group_by, cc.seed)
    # the model: the wavelet arm's random forest (the features are already global statistics)
    return run_model_job(job_dir, partial(make_classifier, "rf", cc.seed), X_train, train, X_test, test, cfg,
                         arm="baseline", model=BASELINE_NAME, feature_set=None, folds=folds, n_folds=cc.folds,
                         group_by=cc.group_by, seed=cc.seed, n_jobs=cc.n_jobs, log_name="baseline.log",
                         inputs={"input_digest": input_digest(data), "features": list(GREYLEVEL_NAMES)},
                         extra={"features": list(GREYLEVEL_NAMES)}, force=force)
