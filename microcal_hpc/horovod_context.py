"""Horovod data-parallel training: one process per GPU (or CPU slot), gradients averaged every step.

Launch N copies of the same ``microcal-hpc train`` command with any of::

    horovodrun -np 2 --gloo microcal-hpc train ...      # no MPI needed
    mpirun -np 2 microcal-hpc train ...                 # Open MPI
    srun --mpi=pmix microcal-hpc train ...              # SLURM (see slurm/train_horovod.sbatch)

Each rank trains on its own shard of every epoch's shuffled training part (``cnn.pipeline.epoch_order``:
equal shards of the same shuffled order on every rank); the ranks' gradients are averaged before every update, so all
ranks keep identical weights and the run equals one-process training with a ``size``-times larger
batch. Rank 0 writes every output; see :class:`HorovodContext` for what the training job must call.

Keras path, not DistributedGradientTape: the CNN job trains with ``model.fit`` (callbacks, history,
checkpoints, early stopping). ``hvd.DistributedOptimizer`` hooks the optimizer's gradient aggregation
inside ``fit``'s own train step, so ``fit`` runs unchanged; ``DistributedGradientTape`` needs a custom
training loop that would re-implement all of that. Both average identically (checked with TF 2.15 +
Horovod 0.28.1, bit-identical weights across ranks; tests/test_horovod.py checks it on every run).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import traceback
from typing import Iterator

import numpy as np
import tensorflow as tf

from microcal_hpc.atomic import SignalReceived, signal_number
from microcal_hpc.config import DistributedConfig
from microcal_hpc.distributed import Context, Peers, end_rank, launched_world_size
from microcal_hpc.errors import ConfigError, MicrocalError
from microcal_hpc.joblog import log_file, log_to_file_only
from microcal_hpc.parallel_math import cpu_threads_per_rank, scaled_learning_rate, warmup_step_learning_rate

log = logging.getLogger("microcal.horovod")


def weights_sha256(model) -> str:
    """sha256 of all of a model's weights, concatenated in order (equal on every rank after averaging)."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


class WarmupLearningRate(tf.keras.callbacks.Callback):
    """Ramp the learning rate linearly from ``base_lr`` to ``target_lr`` over ``warmup_epochs``, per step.

    Our own rather than ``hvd.callbacks.LearningRateWarmupCallback``: Horovod's ramp assumes the target
    is ``base_lr * size`` (linear scaling) and would start the ``sqrt`` rule at the wrong rate. Epoch
    numbers are Keras' absolute ones, so a run resumed after the warm-up does not warm up again. After
    the warm-up the callback does nothing (a later schedule owns the rate).
    """

    def __init__(self, base_lr: float, target_lr: float, warmup_epochs: int, steps_per_epoch: int):
        super().__init__()
        self.base_lr, self.target_lr = float(base_lr), float(target_lr)
        self.warmup_epochs, self.steps_per_epoch = int(warmup_epochs), max(1, int(steps_per_epoch))
        self._epoch = 0

    def on_train_begin(self, logs=None):
        if isinstance(self.model.optimizer.learning_rate, tf.keras.optimizers.schedules.LearningRateSchedule):
            raise ConfigError("distributed.warmup_epochs > 0 needs a plain learning rate, but the optimizer uses "
                              "a schedule object; use a schedule callback or set distributed.warmup_epochs=0")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch >= self.warmup_epochs:
            return
        lr = warmup_step_learning_rate(self.base_lr, self.target_lr, self._epoch, batch, self.steps_per_epoch,
                                       self.warmup_epochs)
        tf.keras.backend.set_value(self.model.optimizer.learning_rate, lr)


class RankReport(tf.keras.callbacks.Callback):
    """Log, on every rank, the checksum of the final weights (they must be equal on all ranks)."""

    def __init__(self, rank: int, size: int):
        super().__init__()
        self.rank, self.size = rank, size

    def on_train_end(self, logs=None):
        log.info("rank %d/%d final weights sha256=%s", self.rank, self.size, weights_sha256(self.model))


class HorovodContext(Context):
    """One Horovod rank. What the training job does with it, in order::

        ctx = init_context(cfg.distributed)      # hvd.init()
        with ctx.fail_fast(log):                 # an exception on any rank ends the whole job
            ctx.pin_device()                     # before any TensorFlow op
            lr = ctx.learning_rate(base_lr)      # scaled by distributed.lr_scaling
            opt = ctx.wrap_optimizer(Adam(lr))   # gradient averaging
            model.fit(training_dataset(..., num_shards=size, shard_index=rank), callbacks=ctx.callbacks(base_lr, steps) + [...])
            # after a resume: ctx.broadcast_variables(model, opt); only ctx.is_root writes outputs

    The per-rank batch is ``train.batch_size``; the global batch is ``size`` times that.
    """

    name = "horovod"

    def __init__(self, cfg: DistributedConfig):
        import horovod.tensorflow.keras as hvd

        hvd.init()
        self._hvd = hvd
        self.cfg = cfg
        self.size = hvd.size()
        self.rank = hvd.rank()
        self.local_rank = hvd.local_rank()
        self.local_size = hvd.local_size()
        self.controller = "mpi" if hvd.mpi_enabled() else "gloo"
        self.device = "CPU"
        self._barriers = 0
        launched = launched_world_size()
        if launched > 1 and self.size != launched:
            # e.g. srun without --mpi=pmix: every task would train alone and overwrite the others' outputs
            raise ConfigError(f"the launcher started {launched} tasks but Horovod sees {self.size} rank(s); "
                              "under srun use --mpi=pmix (or pmi2), or launch with horovodrun/mpirun")

    # ---- placement -------------------------------------------------------------------------------

    def pin_device(self) -> None:
        """One GPU per rank (by local rank, memory growth on); without GPUs, split the CPU cores."""
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            gpu = gpus[self.local_rank % len(gpus)]
            tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices(gpu, "GPU")
            self.device = gpu.name
        else:
            # N ranks on one node each defaulting to all cores would oversubscribe the CPU N times.
            allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = cpu_threads_per_rank(allowed, os.cpu_count() or allowed, self.local_size)
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already initialised: keep its threads
                log.warning("rank %d: TensorFlow already initialised; CPU threads not set", self.rank)
            self.device = f"CPU ({threads} threads)"
        log.info("Horovod rank %d/%d (local %d/%d, %s controller) on %s", self.rank, self.size, self.local_rank,
                 self.local_size, self.controller, self.device)

    # ---- optimisation ----------------------------------------------------------------------------

    def learning_rate(self, base_lr: float) -> float:
        """``base_lr`` scaled for the global batch by ``distributed.lr_scaling`` (linear, sqrt, none)."""
        return scaled_learning_rate(base_lr, self.size, self.cfg.lr_scaling)

    def wrap_optimizer(self, optimizer):
        """``hvd.DistributedOptimizer``: gradients are averaged over ranks before every update.

        Horovod builds a new subclass of the optimizer's class in module ``horovod._keras``; a model saved
        with it records that module and plain ``tf.keras.models.load_model`` (the predict job, a reader
        without Horovod) cannot load it. Giving the subclass the original module makes the saved model
        name the plain optimizer (same class name, same config), so a 2-rank ``model.keras`` loads like a
        1-rank one. Consequence: a model *loaded* from disk has a plain optimizer; to resume training
        under Horovod, build and wrap the optimizer again and load weights (then broadcast_variables).
        """
        wrapped = self._hvd.DistributedOptimizer(optimizer)
        type(wrapped).__module__ = type(optimizer).__module__
        return wrapped

    def callbacks(self, base_lr: float, steps_per_epoch: int) -> list:
        """Put these first in ``fit``'s callbacks: later ones (history, checkpoints) see averaged metrics.

        Broadcast of rank 0's variables after the first step (a no-op when all ranks start from the
        same seed, a fix when they do not), averaging of the epoch's logged metrics over ranks, the
        learning-rate warm-up, and a log line with the final weights' checksum on every rank.
        """
        hvd = self._hvd
        cbs = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback()]
        target = self.learning_rate(base_lr)
        if self.cfg.warmup_epochs > 0 and target != base_lr:
            cbs.append(WarmupLearningRate(base_lr, target, self.cfg.warmup_epochs, steps_per_epoch))
        cbs.append(RankReport(self.rank, self.size))
        return cbs

    def broadcast_variables(self, model, optimizer=None) -> None:
        """Copy rank 0's model (and optimizer) variables to every rank, e.g. after a resume."""
        import horovod.tensorflow as hvd_tf

        hvd_tf.broadcast_variables(model.variables, root_rank=0)
        if optimizer is not None:
            variables = optimizer.variables
            variables = variables() if callable(variables) else variables
            if variables:
                hvd_tf.broadcast_variables(list(variables), root_rank=0)

    # ---- collectives -----------------------------------------------------------------------------

    def allreduce_mean(self, value: float, name: str = "value") -> float:
        """Mean of ``value`` over ranks (every rank must call it, with the same name)."""
        import horovod.tensorflow as hvd_tf

        out = hvd_tf.allreduce(tf.constant(float(value), tf.float64), op=hvd_tf.Average,
                               name=f"allreduce_mean.{name}")
        return float(out.numpy())

    def barrier(self) -> None:
        """Wait for every rank (an allreduce of a scalar; Horovod 0.28's TensorFlow API has no barrier)."""
        self._barriers += 1
        self.allreduce_mean(0.0, name=f"barrier.{self._barriers}")

    # ---- failure ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def fail_fast(self, logger: logging.Logger | None = None) -> Iterator[None]:
        """A failure or a signal on this rank ends the whole job at once, with a non-zero exit.

        Without this, the other ranks would wait in their next allreduce until the launcher or the
        time limit kills them. Every rank ends through :func:`~microcal_hpc.distributed.end_rank`:
        with MPI, ``MPI_Abort`` makes mpirun and srun (PMIx) kill every rank; with Gloo, the exit makes
        horovodrun kill the others. What this rank says on stderr (one line) and in its log:

        - SIGTERM or SIGINT (:class:`~microcal_hpc.distributed.Peers`): "rank R of N stopped by SIGTERM"
          (exit 128 + the signal), unless another rank had already ended (then the log only);
        - another rank ended (Horovod shuts down, connections are lost): the log only, exit 1;
        - bad input or settings (MicrocalError): its message, with its exit code;
        - any other exception: one line naming it and the log file, which holds the traceback (exit 1).

        One rank: the exception propagates.
        """
        if self.size == 1:
            yield
            return
        import horovod.tensorflow as hvd_tf

        peers = Peers(self.rank, hvd_tf.allgather_object(Peers.here()))
        logger = logger or log
        abort = self._mpi_abort if self.controller == "mpi" else None
        where = f"rank {self.rank} of {self.size}"
        try:
            yield
        except (Exception, KeyboardInterrupt, SignalReceived) as e:
            signum = signal_number(e)
            if signum is not None:
                peers.stop_after_signal(signum, "; stopping every rank", abort)
            if _another_rank_ended(e) or peers.ended():
                end_rank(None, 1, note=f"{where}: stopping because another rank ended ({_first_line(e)})")
            if isinstance(e, MicrocalError):  # bad input or config: one line, as the command line prints it
                end_rank(f"{where}: {e}", e.exit_code, abort)
            log_to_file_only(logger.name, f"{where} failed; aborting all ranks:\n"
                             + "".join(traceback.format_exception(e)).rstrip())
            end_rank(f"{where} failed: {type(e).__name__}: {_first_line(e)} (traceback in {log_file() or 'the job log'})",
                     1, abort)

    @staticmethod
    def _mpi_abort(code: int) -> None:
        """MPI_Abort through mpi4py, which must not initialise or finalise MPI itself (Horovod did)."""
        import mpi4py

        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = False
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(code)


# how Horovod reports that a peer has gone: its own exception, or TensorFlow's wrapping of it
_PEER_GONE = ("Horovod has been shut down", "Connection reset by peer", "Connection closed by peer")


def _another_rank_ended(e: BaseException) -> bool:
    from horovod.common.exceptions import HorovodInternalError

    return isinstance(e, HorovodInternalError) or any(text in str(e) for text in _PEER_GONE)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
