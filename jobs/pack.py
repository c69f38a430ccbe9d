"""`microcal-hpc pack --data ROOT --out FILE.h5`: pack an image tree into one HDF5 file.

The job writes ``FILE.h5`` atomically and its log beside it (``FILE.pack.log``). When ``FILE.h5``
exists and the input files are unchanged (same sha256), it logs "up to date" and does nothing;
``--force`` rebuilds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from microcal_hpc.cli import add_config_arguments, config_from_args
from microcal_hpc.errors import ConfigError


def log_path_for(out: str | Path) -> Path:
    """The log file of a pack: ``FILE.h5`` -> ``FILE.pack.log``."""
    out = Path(out)
    return out.with_name(out.stem + ".pack.log")


def pack_job(cfg, out: str | None = None, force: bool = False, progress: bool | None = None) -> str:
    """Pack ``cfg.data.root`` into ``out`` (default ``cfg.data.packed``); return the HDF5 path."""
    from data_prep.pack import pack_tree
    from microcal_hpc.joblog import setup_job_logging

    out = out or cfg.data.packed
    if not out:
        raise ConfigError("no output file: give --out FILE.h5 or set data.packed")
    if not cfg.data.root:
        raise ConfigError("data.root is empty: give --data ROOT or set data.root")
    setup_job_logging(log_path_for(out), name="microcal.pack")
    pack_tree(cfg.data.root, out, cfg.data, force=force, progress=progress)
    return str(out)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="ROOT", help="image tree ROOT/{Train,Test}/{0,1}/* (sets data.root)")
    p.add_argument("--out", metavar="FILE.h5", help="output HDF5 file (default: data.packed)")
    p.add_argument("--force", action="store_true", help="rebuild even if FILE.h5 is up to date")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: only for large trees)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, {"data": "data.root"})
    pack_job(cfg, args.out, force=args.force, progress=args.progress)
    return 0
