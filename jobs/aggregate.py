"""`microcal-hpc aggregate --run-dir RUN [--config FILE] [--set report.bootstrap=500] [--force]`: the report.

Without ``--config`` the run's own config.yaml is used. The job itself: :mod:`microcal_hpc.report.aggregate`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    from microcal_hpc.cli import add_config_arguments

    p.add_argument("--run-dir", required=True, help="the run directory to report on (RUN/ of docs/outputs.md)")
    p.add_argument("--force", action="store_true", help="rebuild the report even if no input changed")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.cli import config_from_args
    from microcal_hpc.errors import InputError
    from microcal_hpc.report.aggregate import aggregate_job, report_dir, report_metrics

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory not found")
    if not args.config and (run_dir / "config.yaml").is_file():
        args.config = str(run_dir / "config.yaml")
    cfg = config_from_args(args)
    path = aggregate_job(cfg, str(run_dir), force=args.force)
    meta = report_metrics(report_dir(run_dir))
    if meta.get("complete") is False:
        st = meta.get("status", {})
        n = sum(len(st.get(k, [])) for k in ("missing", "incomplete", "failed_jobs", "unfinished_jobs"))
        print(f"microcal-hpc aggregate: warning: partial run: {n} job output(s) missing, incomplete, failed or "
              f"unfinished; the report lists them ({path})", file=sys.stderr)
    print(path)
    return 0
