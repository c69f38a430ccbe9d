"""The baselines job (:data:`BASELINES`); command line: ``microcal-hpc baseline``.

Two random forests (the wavelet arm's ``rf``) on global grey-level statistics of each patch
(:mod:`microcal_hpc.greylevel`), which ignore where pixels are:

- ``brightness-rf``: brightness only (location and central spread, no extremes). It cannot see
  calcification specks; what it reaches is what the acquisition/brightness cue alone gives.
- ``greylevel-rf``: 12 statistics including max, high percentiles and kurtosis. These do respond to
  bright specks, i.e. to the calcifications themselves, so it is an upper reference for "global
  statistics", not a pure shortcut.

Each is cross-validated with the same folds as every other model (``classify.folds``,
``classify.group_by``, ``classify.seed`` through the shared splitter), then fitted on all of Train and
scored on Test. One job writes ``DIR/<name>/`` per baseline (metrics.json with arm "baseline" and model
<name>, predictions.npz, config.yaml, baseline.log) and ``DIR/baseline.log`` with every line; a folder
already complete for the same inputs is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from microcal_hpc.greylevel import BRIGHTNESS_NAMES, GREYLEVEL_NAMES, brightness_features, greylevel_features


@dataclass(frozen=True)
class Baseline:
    """One baseline model: its features, a short label and the one line that says what it can see."""

    features: Callable[[np.ndarray], np.ndarray]
    feature_names: tuple[str, ...]
    label: str
    description: str


# The baselines by folder name: the one declaration the job, the campaign plan and the report read.
BASELINES: dict[str, Baseline] = {
    "brightness-rf": Baseline(
        brightness_features, BRIGHTNESS_NAMES, "Brightness baseline",
        "random forest on global brightness (mean, percentiles 5-75, spread of the central pixels): no extremes, "
        "blind to small bright specks"),
    "greylevel-rf": Baseline(
        greylevel_features, GREYLEVEL_NAMES, "Grey-level statistics with extremes",
        "random forest on 12 global grey-level statistics including the extremes (max, 95th percentile, "
        "kurtosis), which respond to calcification specks"),
}


def baseline_job(cfg, data: str, run_dir: str, force: bool = False) -> list[str]:
    """Evaluate every baseline on the packed file ``data``; return the model folders ``run_dir/<name>``."""
    from functools import partial

    from microcal_hpc.dataset import load_split
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.wavelet.classifiers import make_classifier
    from microcal_hpc.wavelet.evaluate import ModelJob, run_model_jobs, shared_folds
    from microcal_hpc.wavelet.features_file import input_digest

    log = setup_job_logging(Path(run_dir) / "baseline.log", name="microcal.baseline")
    cc = cfg.classify
    train, test = load_split(data, "train"), load_split(data, "test")
    folds = shared_folds(train, cc.folds, cc.group_by, cc.seed)
    digest = input_digest(data)
    jobs = []
    for name, b in BASELINES.items():
        X_train, X_test = b.features(train.images), b.features(test.images)
        log.info("%s on %s: %d Train / %d Test patches, features: %s", name, data, len(train), len(test),
                 ", ".join(b.feature_names))
        jobs.append(ModelJob(
            job_dir=Path(run_dir) / name, make_model=partial(make_classifier, "rf", cc.seed), X_train=X_train,
            meta_train=train, X_test=X_test, meta_test=test, arm="baseline", model=name, feature_set=None,
            folds=folds, group_by=cc.group_by, seed=cc.seed, log_name="baseline.log",
            inputs={"input_digest": digest, "features": list(b.feature_names)},
            extra={"features": list(b.feature_names), "description": b.description}))
    return run_model_jobs(jobs, cfg, cc.n_jobs, force=force)
