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
                   help="print the plan (jobs, dependencies, resources) and the sbatch files; submit nothing")
    p.add_argument("--write-config", action="store_true",
                   help="only write RUN/config.yaml and RUN/manifest.json and print the campaign as shell "
                        "variables (used by slurm/submit_all.sh); run nothing")


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.launcher.campaign import submit_campaign, write_run_config

    cfg = cli.config_from_args(args, {"executor": "campaign.executor", "run_dir": "campaign.run_dir",
                                      "serial": "campaign.serial"})
    if args.write_config:
        return write_run_config(cfg, cfg.campaign.run_dir)
    return submit_campaign(cfg, executor=cfg.campaign.executor, run_dir=cfg.campaign.run_dir, dry_run=args.dry_run)
