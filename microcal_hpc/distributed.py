"""Where a training job runs: one process, or one of N data-parallel Horovod ranks.

The training code talks only to a :class:`Context`; :func:`init_context` picks the implementation.
The single-process context below does nothing special; ``microcal_hpc.horovod_context`` provides
the Horovod one (gradient averaging, variable broadcast, metric averaging, sharding).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from microcal_hpc.config import DistributedConfig
from microcal_hpc.errors import ConfigError

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
