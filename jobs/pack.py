"""`microcal-hpc pack --data ROOT --out FILE.h5`: pack an image tree into one HDF5 file.

The job writes ``FILE.h5`` atomically and its log beside it (``FILE.pack.log``). When ``FILE.h5``
exists and the input files are unchanged (same sha256), it logs "up to date" and does nothing;
``--force`` rebuilds.
"""
from __future__ import annotations

import argparse

from data_prep.pack import pack_job
from microcal_hpc.cli import add_config_arguments, config_from_args


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
