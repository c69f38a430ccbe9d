"""`microcal-hpc submit`: run a whole campaign (slurm: submit and return; local/debug: run and wait)."""
from __future__ import annotations

import argparse

from microcal_hpc import cli


def configure_parser(p: argparse.ArgumentParser) -> None:
    cli.add_config_arguments(p)
    p.add_argument("--executor", choices=("slurm", "local", "debug"),
                   help="slurm: sbatch every job and return; local: run here and wait, independent jobs at once "
                        "as the cores allow; debug: in this process, one after the other (default: campaign.executor)")
    p.add_argument("--serial", action="store_true", default=None,
                   help="local executor: one job at a time, for debugging (campaign.serial)")
    p.add_argument("--run-dir", help="run directory (default: campaign.run_dir)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (jobs, dependencies, resources, stale results and why, each job's "
                        "microcal-hpc command) and, for slurm, the sbatch scripts; change nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("--write-sbatch", action="store_true",
                   help="do not submit: write the plain sbatch scripts of this submission to RUN/sbatch/ and "
                        "print one line per script (slurm/submit_all.sh submits them)")
    p.add_argument("--record-sbatch", nargs=2, metavar=("JOB_ID", "KEYS"),
                   help="with --run-dir: record that the plain sbatch script of the jobs KEYS (comma-separated, "
                        "an array's in task order) was submitted as SLURM job JOB_ID (slurm/submit_all.sh does this)")
    p.epilog = ("A job whose outputs were computed with other settings (e.g. --set train.epochs=50 on a finished "
                "25-epoch run) is stale: it runs again, and its previous outputs are moved to RUN/superseded/<time>/.")


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.errors import ConfigError
    from microcal_hpc.launcher.campaign import record_sbatch, submit_campaign, write_sbatch

    if args.record_sbatch:
        if not args.run_dir or args.write_sbatch or args.dry_run:
            raise ConfigError("--record-sbatch JOB_ID KEYS goes with --run-dir alone")
        job_id, keys = args.record_sbatch
        return record_sbatch(args.run_dir, job_id, [k for k in keys.split(",") if k])
    if args.json and not args.dry_run:
        raise ConfigError("--json goes with --dry-run (the plan as JSON)")
    if args.write_sbatch and args.dry_run:
        raise ConfigError("--write-sbatch writes the scripts of a submission; for a plan only, use --dry-run alone")
    cfg = cli.config_from_args(args, {"executor": "campaign.executor", "run_dir": "campaign.run_dir",
                                      "serial": "campaign.serial"})
    if args.write_sbatch:
        return write_sbatch(cfg, cfg.campaign.run_dir)
    return submit_campaign(cfg, executor=cfg.campaign.executor, run_dir=cfg.campaign.run_dir, dry_run=args.dry_run,
                           as_json=args.json)
