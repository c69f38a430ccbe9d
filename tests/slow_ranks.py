"""Run the microcal-hpc command with its ranks held in their working loop, so that a test can signal one rank
(or have one fail) while every rank is busy: the fault tests' way in from outside the production code.

    python tests/slow_ranks.py READY_DIR -- wavelet-features --data ... (microcal-hpc arguments)
    python tests/slow_ranks.py READY_DIR -- train --data ...

Each rank touches ``READY_DIR/rank-R`` once it is working (wavelet features: before each piece it reads;
training: at the end of each epoch, before its checkpoint), then sleeps ``SLOW_SECONDS`` (default 0.5) there.
What the job computes is unchanged. With ``FAIL_RANK=R``, rank R raises a RuntimeError at the end of its
first training step instead. The launcher's job specs can name :func:`features_job` (this module must then
be importable: tests/ on PYTHONPATH) to get the same wavelet-features behaviour through the launcher.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _rank() -> int:
    from microcal_hpc.distributed import launcher_rank

    return int(os.environ.get("HOROVOD_RANK") or launcher_rank())


def _ready_and_wait() -> None:
    ready = Path(os.environ["SLOW_READY_DIR"])
    ready.mkdir(parents=True, exist_ok=True)
    (ready / f"rank-{_rank()}").touch()
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.5")))


def _patch_wavelet() -> None:
    import microcal_hpc.wavelet.mpi_features as mf

    read_piece = mf._read_piece

    def slow_read_piece(*args, **kwargs):
        _ready_and_wait()
        return read_piece(*args, **kwargs)

    mf._read_piece = slow_read_piece


def _patch_training() -> None:
    import tensorflow as tf

    from microcal_hpc.horovod_context import HorovodContext

    callbacks = HorovodContext.callbacks
    fail_rank = os.environ.get("FAIL_RANK")

    class Slow(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if fail_rank is not None and int(fail_rank) == _rank():
                raise RuntimeError(f"failure injected by tests/slow_ranks.py on rank {_rank()} after step {batch}")

        def on_epoch_end(self, epoch, logs=None):
            _ready_and_wait()

    def slow_callbacks(self, base_lr, steps_per_epoch):
        return callbacks(self, base_lr, steps_per_epoch) + [Slow()]

    HorovodContext.callbacks = slow_callbacks


def features_job(*args, **kwargs):
    """The wavelet features job with slow ranks (for a launcher job spec)."""
    from microcal_hpc.wavelet.features_job import features_job as job

    _patch_wavelet()
    return job(*args, **kwargs)


def main() -> int:
    ready, sep, *cli_args = sys.argv[1:]
    if sep != "--":
        raise SystemExit("usage: slow_ranks.py READY_DIR -- MICROCAL-HPC ARGS...")
    os.environ["SLOW_READY_DIR"] = ready
    if cli_args[0] == "train":
        _patch_training()
    else:
        _patch_wavelet()
    from jobs.cli import main as cli_main

    return cli_main(cli_args)


if __name__ == "__main__":
    sys.exit(main())
