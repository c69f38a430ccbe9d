"""`microcal-hpc wavelet-classify --features FEATURES.h5 --run-dir DIR`: the classifier zoo on wavelet features
(:mod:`microcal_hpc.wavelet.classify`).

Example::

    microcal-hpc wavelet-classify --features RUN/wavelet/features.h5 --run-dir RUN/wavelet \\
        --classifiers rf,svm --feature-sets coeffs,stats --folds 5 --group-by group
"""
from __future__ import annotations

import argparse

from microcal_hpc.cli import CV_FLAGS, add_config_arguments, add_cv_arguments, config_from_args
from microcal_hpc.wavelet.classify import classify_job


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, metavar="FEATURES.h5", help="features file (wavelet-features)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="output folder (RUN/wavelet)")
    p.add_argument("--classifiers", metavar="rf,svm,...", help="classifiers (classify.classifiers)")
    p.add_argument("--feature-sets", metavar="coeffs,stats", help="feature sets (classify.feature_sets)")
    add_cv_arguments(p)
    p.add_argument("--force", action="store_true", help="recompute complete model folders too")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, {"classifiers": "classify.classifiers", "feature_sets": "classify.feature_sets",
                                  **CV_FLAGS})
    classify_job(cfg, args.features, args.run_dir, force=args.force)
    return 0
