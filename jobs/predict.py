"""`microcal-hpc predict`: score a folder of patches or a packed HDF5 file with a trained CNN job.

Example::

    microcal-hpc predict --model runs/main/cnn/official --images new_patches/ --out scores.csv

The CSV has one row per image: ``id`` (path relative to the folder, or the packed id),
``probability`` (P(microcalcification cluster)) and ``predicted_label`` (probability >= 0.5).
"""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR/NAME", help="a complete training job folder")
    p.add_argument("--images", required=True, metavar="PATH", help="folder of patches (searched recursively), "
                   "one image file, or a packed HDF5 file")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV to write (id, probability, predicted_label)")


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.cnn.predict import predict_job
    from microcal_hpc.joblog import setup_job_logging

    setup_job_logging(None)
    predict_job(args.model, args.images, args.out)
    return 0
