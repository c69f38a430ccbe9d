"""`[mpiexec -n N] microcal-hpc wavelet-features --data FILE.h5 --out FEATURES.h5`: wavelet features of every patch.

MPI-parallel when started by an MPI launcher (``mpiexec -n N``, ``srun`` with N tasks); a plain process
runs serially and does not import mpi4py. Settings come from the ``wavelet`` config section, overridden
by ``--wavelet --level --keep-levels --mode --features --chunk-size --dtype --engine``. The output is written
atomically by rank 0, with its log beside it (``FEATURES.log``). When the output is already complete
for the same settings and input, the job says so and returns. On any error, rank 0 prints one line
and every rank exits non-zero; a signal to one rank (SIGTERM, SIGINT) makes that rank say so in one line
and ends every rank (exit 128 + the signal's number).

Examples::

    microcal-hpc wavelet-features --data RUN/data/packed.h5 --out RUN/wavelet/features.h5
    mpiexec -n 2 microcal-hpc wavelet-features --data RUN/data/packed.h5 --out RUN/wavelet/features.h5 --features coeffs,stats
"""
from __future__ import annotations

import argparse
import sys

from microcal_hpc.cli import add_config_arguments, config_from_args
from microcal_hpc.errors import MicrocalError
from microcal_hpc.wavelet.features_job import features_job


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="FILE.h5", help="packed data file (microcal-hpc pack)")
    p.add_argument("--out", required=True, metavar="FEATURES.h5", help="output features file")
    p.add_argument("--wavelet", help="discrete PyWavelets wavelet (wavelet.wavelet, default db5)")
    p.add_argument("--level", type=int, help="decomposition level (wavelet.level, default 4)")
    p.add_argument("--keep-levels", metavar="2,3,4", help="detail levels kept as coefficients (1 = finest)")
    p.add_argument("--mode", help="signal extension mode (wavelet.mode, default symmetric)")
    p.add_argument("--features", metavar="coeffs,stats", help="feature sets to compute, by name (wavelet.features; "
                   "coeffs, stats, approx_stats, other_levels_stats)")
    p.add_argument("--chunk-size", type=int, help="images per read/transform batch on each rank")
    p.add_argument("--dtype", choices=("float64", "float32"), help="storage precision (wavelet.dtype)")
    p.add_argument("--engine", choices=("matrix", "pywt"),
                   help="how the DWT is computed: matrix products (default) or PyWavelets (wavelet.engine)")
    p.add_argument("--force", action="store_true", help="recompute even if the output is complete")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check the packed file's whole-file checksum and every image's pixel hash (default: "
                        "only for packed files up to 16 MB, where it is cheap)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the run summary (timings, ranks, "
                                                          "per-rank peak memory) to FILE (rank 0)")
    add_config_arguments(p)


_FLAGS = {"wavelet": "wavelet.wavelet", "level": "wavelet.level", "keep_levels": "wavelet.keep_levels",
          "mode": "wavelet.mode", "features": "wavelet.features", "chunk_size": "wavelet.chunk_size",
          "dtype": "wavelet.dtype", "engine": "wavelet.engine"}


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.distributed import launcher_rank
    from microcal_hpc.wavelet.mpi_features import PeerFailed

    rank = launcher_rank()
    try:
        cfg = config_from_args(args, _FLAGS)
        summary: dict = {}
        features_job(cfg, args.data, args.out, force=args.force, summary=summary, verify=args.verify)
        if args.summary_json and rank == 0:
            from microcal_hpc.atomic import write_json

            write_json(args.summary_json, summary)
    except PeerFailed as e:  # rank 0 prints the error; this rank only exits non-zero
        return e.exit_code
    except MicrocalError as e:
        if rank != 0:  # the same error on every rank (e.g. a bad --set): print it once
            return e.exit_code
        raise
    sys.stdout.flush()
    return 0
