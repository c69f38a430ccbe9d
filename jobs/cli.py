"""The `microcal-hpc` command: one subcommand per job, each implemented by a module of this package.

Each job module provides ``configure_parser(parser)`` (its flags) and ``run(args) -> int``; the work
itself is done by the library (``microcal_hpc``, ``data_prep``). Modules import heavy libraries
(TensorFlow, Horovod, mpi4py) inside ``run`` so that ``microcal-hpc --help`` and light jobs start fast.
``python -m jobs ...`` is the same as ``microcal-hpc ...``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

import microcal_hpc
from microcal_hpc import __version__
from microcal_hpc.atomic import SignalReceived, signal_name, signal_number, sigterm_raises
from microcal_hpc.errors import MicrocalError, describe_os_error

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
    """Entry point: parse, run the job, turn expected failures into one line on stderr and a non-zero exit.

    Expected failures: the library's errors (exit 2 for bad input or settings, 1 for an output that
    cannot be written, 128 + N for signal N), any other OSError ("FILE: reason", exit 1), SIGTERM and
    Ctrl-C (SIGTERM raises while the job runs, so that temporary outputs are removed; exit 143 and 130).
    A closed standard output (``microcal-hpc status | head``) ends the command silently with exit 141,
    as SIGPIPE ends other tools.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with sigterm_raises():
            code = int(args._run(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
            return code
    except MicrocalError as e:
        return _fail(args.command, f"error: {e}", e.exit_code)
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as e:
        return _fail(args.command, f"error: {describe_os_error(e)}", 1)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)
    except (SignalReceived, Exception) as e:  # also an error raised while unwinding from a signal
        signum = signal_number(e)
        if signum is None:
            raise
        return _fail(args.command, f"terminated by {signal_name(signum)}", 128 + signum)


def _fail(command: str, message: str, code: int) -> int:
    try:
        print(f"microcal-hpc {command}: {message}", file=sys.stderr)
    except OSError:  # stderr itself is gone
        pass
    return code


def _stdout_closed() -> int:
    """The reader of stdout went away: drop what is left to print, without Python's exit-time complaint."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
