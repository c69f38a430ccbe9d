"""`microcal-hpc baseline --data FILE.h5 --run-dir DIR`: the grey-level baselines (:mod:`microcal_hpc.baseline`)."""
from __future__ import annotations

import argparse

from microcal_hpc.baseline import baseline_job
from microcal_hpc.cli import CV_FLAGS, add_config_arguments, add_cv_arguments, config_from_args


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="FILE.h5", help="packed data file (microcal-hpc pack)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="output folder (RUN/baseline)")
    add_cv_arguments(p)
    p.add_argument("--force", action="store_true", help="recompute even if complete")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, CV_FLAGS)
    baseline_job(cfg, args.data, args.run_dir, force=args.force)
    return 0
