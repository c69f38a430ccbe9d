"""Command-line helpers shared by the job adapters in ``jobs/``: the config flags every job takes
(``--config``, ``--set``), the classifier jobs' CV flags, and loading a Config from parsed arguments.

The ``microcal-hpc`` command itself (one subcommand per job) is built on top of these, outside the library.
"""
from __future__ import annotations

import argparse

def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every job shares: a YAML config and ``section.key=value`` overrides."""
    p.add_argument("--config", help="YAML configuration file (see configs/campaign.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable), e.g. --set train.epochs=2")


# flags of the cross-validated classifier jobs (wavelet-classify, baseline) -> config keys
CV_FLAGS = {"folds": "classify.folds", "group_by": "classify.group_by", "seed": "classify.seed",
            "n_jobs": "classify.n_jobs"}


def add_cv_arguments(p: argparse.ArgumentParser) -> None:
    """The splitter and parallelism flags shared by the classifier jobs (see CV_FLAGS)."""
    p.add_argument("--folds", type=int, help="CV folds (classify.folds)")
    p.add_argument("--group-by", choices=("group", "case", "none"), help="CV grouping (classify.group_by)")
    p.add_argument("--seed", type=int, help="splitter and model seed (classify.seed)")
    p.add_argument("--n-jobs", type=int,
                   help="worker processes for the fits (classify.n_jobs; 0: every core the job may use)")


def config_from_args(args: argparse.Namespace, flags: dict[str, str] | None = None):
    """Load the Config of a job: ``--config`` YAML, then ``--set`` overrides, then job flags.

    ``flags`` maps an argparse destination to a dotted config key (e.g. ``{"epochs": "train.epochs"}``);
    a flag left at ``None`` does not override anything.
    """
    from microcal_hpc.config import load_config

    overrides = list(getattr(args, "overrides", []) or [])
    for dest, key in (flags or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            overrides.append(f"{key}={value}")
    return load_config(getattr(args, "config", None), overrides)
