"""`microcal-hpc predict`: score a folder of patches or a packed HDF5 file with a trained CNN job.

Example::

    microcal-hpc predict --model runs/main/cnn/official --images new_patches/ --out scores.csv

The CSV has one row per image: ``id`` (path relative to the folder, or the packed id),
``probability`` (P(microcalcification cluster)) and ``predicted_label`` (probability >= 0.5).
"""
from __future__ import annotations

import argparse
import csv
import io


def predict_job(model_dir: str, images: str, out: str) -> str:
    """Write ``out`` (CSV: id, probability, predicted_label) for every image under ``images``; return ``out``."""
    from microcal_hpc.atomic import write_text
    from microcal_hpc.cnn.predict import (THRESHOLD, load_trained_model, predict_probabilities, read_inputs,
                                          stack_for_model)
    from microcal_hpc.joblog import get_logger

    log = get_logger("cnn.predict")
    ids, imgs, sources = read_inputs(images)  # bad input fails here, before TensorFlow loads
    model = load_trained_model(model_dir)
    x = stack_for_model(imgs, sources, tuple(model.input_shape[1:3]))
    prob = predict_probabilities(model, x)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "probability", "predicted_label"])
    for i, p in zip(ids, prob):
        w.writerow([i, f"{p:.6f}", int(p >= THRESHOLD)])
    write_text(out, buf.getvalue())
    log.info("%d images scored -> %s (%d predicted clusters)", len(ids), out, int((prob >= THRESHOLD).sum()))
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR/NAME", help="a complete training job folder")
    p.add_argument("--images", required=True, metavar="PATH", help="folder of patches (searched recursively), "
                   "one image file, or a packed HDF5 file")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV to write (id, probability, predicted_label)")


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.joblog import setup_job_logging

    setup_job_logging(None)
    predict_job(args.model, args.images, args.out)
    return 0
