"""`microcal-hpc status`: a table of every job of a run directory (records + sacct/squeue on SLURM, checked
against the outputs and the campaign's settings); exit code 1 when any job failed, is missing, incomplete
or stale."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from microcal_hpc import cli
from microcal_hpc.errors import InputError, MicrocalError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="run directory of a campaign (holds jobs/*.json)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--no-slurm", action="store_true", help="do not ask sacct/squeue; records only")
    cli.add_config_arguments(p)
    p.epilog = ("Exit code 0 when every job is COMPLETED or still pending/running, 1 otherwise. Jobs are checked "
                "against RUN/config.yaml (the last submission's settings), or against --config and --set: "
                "`status --run-dir RUN --set train.epochs=50` shows which results that would make stale.")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from microcal_hpc.launcher import status

    run_dir = Path(args.run_dir).expanduser().resolve()
    if not (run_dir / "jobs").is_dir() and not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir}: not a campaign run directory (no jobs/ folder; run `microcal-hpc submit`)")
    try:
        plan = status.campaign_plan(run_dir, args.config, args.overrides)
    except MicrocalError as e:
        if args.config or args.overrides:
            raise
        print(f"microcal-hpc status: warning: {run_dir / 'config.yaml'}: {e}; listing the records only",
              file=sys.stderr)
        plan = None
    rows = status.collect(run_dir, use_slurm=False if args.no_slurm else None, plan=plan)
    if args.json:
        print(json.dumps([dict(asdict(r), elapsed=r.elapsed) for r in rows], indent=2))
    else:
        print(status.format_table(rows, run_dir))
    return status.exit_code(rows)
