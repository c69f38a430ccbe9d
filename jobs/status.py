"""`microcal-hpc status`: a table of every job of a run directory (records + sacct/squeue on SLURM)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from microcal_hpc.errors import InputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="run directory of a campaign (holds jobs/*.json)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--no-slurm", action="store_true", help="do not ask sacct/squeue; records only")


def _plan(run_dir: Path) -> list:
    """The campaign's job specs (from RUN/config.yaml), to list jobs not submitted yet."""
    from microcal_hpc.config import load_config
    from microcal_hpc.errors import MicrocalError
    from microcal_hpc.launcher.plan import build_plan

    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        return []
    try:
        return build_plan(load_config(cfg_file), run_dir).specs
    except MicrocalError:
        return []


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from microcal_hpc.launcher import status

    run_dir = Path(args.run_dir).expanduser().resolve()
    if not (run_dir / "jobs").is_dir():
        raise InputError(f"{run_dir}: not a campaign run directory (no jobs/ folder; run `microcal-hpc submit`)")
    rows = status.collect(run_dir, use_slurm=False if args.no_slurm else None, plan=_plan(run_dir))
    if args.json:
        print(json.dumps([dict(asdict(r), elapsed=r.elapsed) for r in rows], indent=2))
    else:
        print(status.format_table(rows, run_dir))
    return 0
