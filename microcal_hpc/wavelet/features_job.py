"""The wavelet features job: logging around :func:`microcal_hpc.wavelet.mpi_features.extract_to_file`
(command line: ``[mpiexec -n N] microcal-hpc wavelet-features``, jobs/wavelet_features.py).

Rank 0 logs to ``FEATURES.log`` beside the output; the other ranks log warnings only.
"""
from __future__ import annotations

from pathlib import Path


def log_path_for(out: str | Path) -> Path:
    """The log of a features job: ``features.h5`` -> ``features.log``."""
    return Path(out).with_suffix(".log")


def features_job(cfg, data: str, out: str, force: bool = False, summary: dict | None = None,
                 verify: bool | None = None) -> str:
    """Compute the wavelet features of the packed file ``data`` into ``out``; return ``out``.

    Collective when launched with several MPI ranks (every rank calls it). ``summary``, if given,
    receives the run summary (timings, ranks, per-rank peak memory on rank 0). ``verify``: check the
    packed file's checksum and pixel hashes (None: when cheap; see extract_to_file).
    """
    import logging

    from microcal_hpc.distributed import launcher_rank
    from microcal_hpc.joblog import log_to_file_only, setup_job_logging
    from microcal_hpc.wavelet.mpi_features import PeerFailed, extract_to_file, get_comm

    root = launcher_rank() == 0
    log = None
    if root:
        try:
            log = setup_job_logging(log_path_for(out), name="microcal.wavelet.features")
        except OSError:  # the output folder is unusable: extract_to_file reports it on every rank
            log = setup_job_logging(None, name="microcal.wavelet.features")
    else:  # other ranks: no log file, warnings only
        setup_job_logging(None, name="microcal.wavelet.features", level=logging.WARNING)
    try:
        result = extract_to_file(cfg.wavelet, data, out, comm=get_comm(), force=force, verify=verify)
    except PeerFailed:
        raise
    except Exception as e:
        if log is not None:  # the console line comes from the command line's error report
            log_to_file_only(log.name, f"failed: {e}")
        raise
    if summary is not None:
        summary.update(result)
    return str(out)
