"""Where a job runs: one process, or one of N ranks (Horovod training, MPI wavelet features).

The training code talks only to a :class:`Context`; :func:`init_context` picks the implementation.
The single-process context below does nothing special; ``microcal_hpc.horovod_context`` provides
the Horovod one (gradient averaging, variable broadcast, metric averaging, sharding).

A rank stopped by a signal (SIGTERM from ``kill`` or a time limit, SIGINT) must end every rank, or
the others wait for it forever in their next collective: :meth:`Peers.stop_after_signal`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from typing import Callable, Iterator, NoReturn

from microcal_hpc.atomic import process_alive, signal_name
from microcal_hpc.config import DistributedConfig
from microcal_hpc.errors import ConfigError
from microcal_hpc.joblog import log_to_file_only

# Variables that launchers set for every rank: horovodrun/gloo, Open MPI's mpirun, SLURM's srun, PMI.
_WORLD_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")


def launched_world_size() -> int:
    """How many ranks the launcher started (1 when run as a plain process)."""
    for var in _WORLD_SIZE_VARS:
        if os.environ.get(var):
            return int(os.environ[var])
    if os.environ.get("SLURM_STEP_NUM_TASKS") and os.environ.get("SLURM_PROCID") is not None:
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


def launcher_rank() -> int:
    """This process's rank according to the launcher's environment (0 for a plain process)."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class Peers:
    """The processes of the ranks of one job, as ``(host, pid)`` by rank (gathered when the job starts).

    When this rank is stopped by a signal, they tell where the stop started: if another rank of this
    host has already ended, the launcher (mpiexec, srun, horovodrun) is stopping the rest because of
    it, and this rank ends quietly; otherwise the signal was sent to this rank, which says so.
    """

    GRACE_SECONDS = 0.5  # how long a stopped rank waits for an ended peer to be reaped by its launcher

    def __init__(self, rank: int, addresses: list[tuple[str, int]]):
        self.rank = rank
        self.size = len(addresses)
        self.addresses = [(str(h), int(p)) for h, p in addresses]

    @staticmethod
    def here() -> tuple[str, int]:
        """This process's ``(host, pid)``: what each rank contributes to the gather."""
        return socket.gethostname(), os.getpid()

    def ended(self) -> list[int]:
        """The other ranks of this host whose process has ended (waiting up to GRACE_SECONDS for one)."""
        host = socket.gethostname()
        local = [r for r, (h, _) in enumerate(self.addresses) if h == host and r != self.rank]
        deadline = time.monotonic() + self.GRACE_SECONDS
        while True:
            gone = [r for r in local if not process_alive(self.addresses[r][1])]
            if gone or not local or time.monotonic() >= deadline:
                return gone
            time.sleep(0.02)

    def stop_after_signal(self, signum: int, consequence: str, abort: Callable[[int], None] | None = None) -> NoReturn:
        """End this rank at once after signal ``signum``, with exit code 128 + signum.

        Where the stop started here, one line on stderr (and in the job log) names the rank and the
        signal, followed by ``consequence`` (e.g. "; every rank stops, nothing written"), and ``abort``
        (e.g. an MPI communicator's Abort) makes the launcher end every rank; where it came from an
        ended rank, the line goes to the job log only. The process exits without the MPI library's
        exit-time synchronisation, which would wait forever for the ranks still working.
        """
        stopped = f"rank {self.rank} of {self.size} stopped by {signal_name(signum)}"
        gone = self.ended()
        if gone:
            end_rank(None, 128 + signum, note=f"{stopped} after rank {gone[0]} ended")
        else:
            end_rank(stopped + consequence, 128 + signum, abort)


def end_rank(message: str | None, code: int, abort: Callable[[int], None] | None = None,
             note: str | None = None) -> NoReturn:
    """Print ``message`` (one line on stderr, also in the job log), record ``note`` in the job log only,
    flush, then ``abort(code)`` if given, else exit with ``code`` without running exit handlers."""
    for line in (message, note):
        if line:
            log_to_file_only("microcal.distributed", line)
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        if message:
            print(f"microcal-hpc: error: {message}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    if abort is not None:
        with contextlib.suppress(Exception):
            abort(code)
    os._exit(code)


class Context:
    """A single-process run: rank 0 of 1. Subclasses override for data-parallel runs."""

    size = 1
    rank = 0
    local_rank = 0
    name = "none"

    @property
    def is_root(self) -> bool:
        """True on the rank that writes checkpoints, outputs and the job log."""
        return self.rank == 0

    def learning_rate(self, base_lr: float) -> float:
        """The learning rate to use with this many ranks (unchanged for one process)."""
        return base_lr

    def wrap_optimizer(self, optimizer):
        """The optimizer to compile with (Horovod: gradient averaging over ranks)."""
        return optimizer

    def callbacks(self, base_lr: float, steps_per_epoch: int) -> list:
        """Keras callbacks that the distribution needs (broadcast, metric averaging, LR warm-up)."""
        return []

    def broadcast_variables(self, model, optimizer=None) -> None:
        """Make every rank start from rank 0's variables (no-op for one process)."""

    def allreduce_mean(self, value: float, name: str = "value") -> float:
        """Mean of ``value`` over ranks."""
        return float(value)

    def barrier(self) -> None:
        """Wait for every rank."""

    def pin_device(self) -> None:
        """Choose this rank's GPU (by local rank) when GPUs exist; CPU otherwise."""

    @contextlib.contextmanager
    def fail_fast(self, logger=None) -> Iterator[None]:
        """Wrap a job's body: with several ranks, an exception logs and aborts every rank (here: re-raised)."""
        yield


def init_context(cfg: DistributedConfig) -> Context:
    """The context for this process: Horovod when asked for, or (``auto``) when launched with >1 rank."""
    world = launched_world_size()
    use_horovod = cfg.mode == "horovod" or (cfg.mode == "auto" and world > 1)
    if not use_horovod:
        if world > 1:
            raise ConfigError(f"distributed.mode=none but the launcher started {world} ranks; "
                              "use --distributed auto or horovod")
        return Context()
    from microcal_hpc.horovod_context import HorovodContext

    return HorovodContext(cfg)
