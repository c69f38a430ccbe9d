"""`microcal-hpc train`: train the CNN once into RUN_DIR/NAME (:func:`microcal_hpc.cnn.train.train_cnn`;
resumable; skipped when complete, refused when complete with other settings).

Examples::

    microcal-hpc train --data runs/main/data/packed.h5 --run-dir runs/main/cnn --name official
    microcal-hpc train --data packed.h5 --run-dir runs/main/cnn --name fold-2 --fold 2 --folds 5
    mpiexec -n 2 microcal-hpc train --data packed.h5 --run-dir runs/hvd/cnn --name official --distributed horovod
"""
from __future__ import annotations

import argparse

from microcal_hpc import cli
from microcal_hpc.cnn.augment import PRESETS

FLAGS = {
    "fold": "train.fold",
    "folds": "train.folds",
    "group_by": "train.group_by",
    "augment": "train.augment",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "distributed": "distributed.mode",
    "input": "train.input",
}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="FILE.h5", help="packed data set (microcal-hpc pack)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="folder that receives the job folder NAME")
    p.add_argument("--name", required=True, help="job name, e.g. official, fold-2, augment-flips")
    p.add_argument("--fold", type=int, metavar="K",
                   help="0-based CV fold used as validation (default: none, train on all of Train)")
    p.add_argument("--folds", type=int, metavar="N", help="number of CV folds (default 5)")
    p.add_argument("--group-by", choices=("group", "case", "none"), help="what must not straddle a split")
    p.add_argument("--augment", metavar="PRESET", help=f"augmentation preset: {', '.join(PRESETS)}")
    p.add_argument("--epochs", type=int, metavar="E")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--input", choices=("auto", "memory", "stream"),
                   help="hold the images in memory or stream them from the packed file (auto: by size)")
    p.add_argument("--distributed", choices=("auto", "horovod", "none"),
                   help="auto: Horovod when launched with several ranks (default)")
    cli.add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = cli.config_from_args(args, FLAGS)
    from microcal_hpc.cnn.train import train_cnn

    train_cnn(cfg, args.data, args.run_dir, args.name)
    return 0
