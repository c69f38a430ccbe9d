"""The `microcal-hpc` command: one subcommand per job, each implemented by a module of this package.

Each job module provides ``configure_parser(parser)`` (its flags) and ``run(args) -> int``; the work
itself is done by the library (``microcal_hpc``, ``data_prep``). Modules import heavy libraries
(TensorFlow, Horovod, mpi4py) inside ``run`` so that ``microcal-hpc --help`` and light jobs start fast.
``python -m jobs ...`` is the same as ``microcal-hpc ...``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import microcal_hpc
from microcal_hpc import __version__
from microcal_hpc.errors import MicrocalError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pack": ("jobs.pack", "pack an image tree ROOT/{Train,Test}/{0,1}/* into one HDF5 file"),
    "inspect": ("jobs.inspect", "summarise a packed HDF5 file: counts, groups, pixel-identical images"),
    "train": ("jobs.train", "train the CNN once (official split, one CV fold, or an augmentation run)"),
    "predict": ("jobs.predict", "score a folder of patches or a packed file with a trained CNN"),
    "wavelet-features": ("jobs.wavelet_features", "MPI-parallel wavelet features of every patch"),
    "wavelet-classify": ("jobs.wavelet_classify", "cross-validated scikit-learn classifiers on wavelet features"),
    "baseline": ("jobs.baseline", "baselines: random forests on global grey-level statistics"),
    "submit": ("jobs.submit", "run a whole campaign with submitit (slurm, local or debug executor)"),
    "status": ("jobs.status", "table of every job of a run directory"),
    "aggregate": ("jobs.aggregate", "gather every job's outputs into the final report"),
}



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microcal-hpc", description=microcal_hpc.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"microcal-hpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not part of this installation
                continue
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run the job, turn expected errors into one line and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except MicrocalError as e:
        print(f"microcal-hpc {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"microcal-hpc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
