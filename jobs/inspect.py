"""`microcal-hpc inspect FILE.h5 [--json]`: counts, groups, and pixel-identical images of a packed file."""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("packed", metavar="FILE.h5", help="a file written by `microcal-hpc pack`")
    p.add_argument("--json", action="store_true", help="print the inspection as JSON")


def run(args: argparse.Namespace) -> int:
    from data_prep.inspect import format_inspection, inspect_packed, inspection_json

    report = inspect_packed(args.packed)
    print(inspection_json(report) if args.json else format_inspection(report))
    return 0
