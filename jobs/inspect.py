"""`microcal-hpc inspect FILE.h5 [--json] [--verify]`: counts, groups, and pixel-identical images of a packed
file; ``--verify`` first checks the file against its whole-file checksum and every image against its pixel
hash (an error names the first damaged image)."""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("packed", metavar="FILE.h5", help="a file written by `microcal-hpc pack`")
    p.add_argument("--json", action="store_true", help="print the inspection as JSON")
    p.add_argument("--verify", action="store_true",
                   help="check the whole-file checksum and every image's pixel hash (reads every image)")


def run(args: argparse.Namespace) -> int:
    from data_prep.inspect import format_inspection, format_verification, inspect_packed, inspection_json, verify_packed

    verified = verify_packed(args.packed) if args.verify else None
    report = inspect_packed(args.packed)
    if args.json:
        print(inspection_json(dict(report, verified=verified) if verified else report))
    else:
        print(format_inspection(report) + (f"\n{format_verification(verified)}" if verified else ""))
    return 0
