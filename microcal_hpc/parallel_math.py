"""The arithmetic of data-parallel training, free of Horovod and TensorFlow (unit-testable).

- :func:`scaled_learning_rate`: the learning rate for ``size`` ranks (global batch = size x per-rank batch).
- :func:`warmup_learning_rate`: the rate during the warm-up ramp from the one-rank rate to the scaled one.
- :func:`shard_sizes` / :func:`shard_indices`: what plain round-robin sharding (``tf.data.Dataset.shard``)
  would hand each rank, and why it is not enough: uneven shards.
- :func:`equal_shard_length` / :func:`steps_per_epoch`: how many items (and batches) every rank trains on
  per epoch so that all ranks run the same number of steps (an extra step on one rank would wait forever
  for the others in its gradient allreduce); ``cnn.pipeline.epoch_order`` cuts each epoch to these.
- :func:`cpu_threads_per_rank`: TensorFlow threads per rank when ranks share a node's CPU cores.

See docs/scaling.md for why these rules and when to choose which.
"""
from __future__ import annotations

import math

LR_RULES = ("linear", "sqrt", "none")


def scaled_learning_rate(base_lr: float, size: int, rule: str = "linear") -> float:
    """Learning rate for ``size`` ranks, each with the one-rank batch size.

    ``linear``: base_lr * size (Goyal et al. 2017: the gradient of a size-times larger batch has the same
    mean, so the same progress per epoch needs size-times larger steps); ``sqrt``: base_lr * sqrt(size)
    (keeps the variance of the update constant; safer for Adam and very large global batches);
    ``none``: base_lr.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if rule == "linear":
        return base_lr * size
    if rule == "sqrt":
        return base_lr * math.sqrt(size)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown learning-rate rule {rule!r}; known: {', '.join(LR_RULES)}")


def warmup_learning_rate(base_lr: float, target_lr: float, epoch: float, warmup_epochs: int) -> float:
    """Learning rate at (fractional) ``epoch`` of a linear ramp from ``base_lr`` to ``target_lr``.

    ``epoch`` counts completed training progress: 0 at the start, 1.0 after the first epoch. The ramp
    reaches ``target_lr`` at ``epoch == warmup_epochs`` and stays there; ``warmup_epochs == 0`` means no
    ramp. This is Horovod's LearningRateWarmupCallback rule (Goyal et al.), written for any target, so
    that the sqrt rule ramps too.
    """
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return target_lr
    frac = max(0.0, epoch) / warmup_epochs
    return base_lr + (target_lr - base_lr) * frac


def warmup_step_learning_rate(base_lr: float, target_lr: float, epoch: int, step: int, steps_per_epoch: int,
                              warmup_epochs: int) -> float:
    """Learning rate used for batch ``step`` (0-based) of ``epoch`` (0-based) during the warm-up.

    The rate of a step is the ramp's value at the end of that step, so the last warm-up step runs at
    ``target_lr`` exactly (as in Horovod's callback) and the first at slightly above ``base_lr``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return warmup_learning_rate(base_lr, target_lr, epoch + (step + 1) / steps_per_epoch, warmup_epochs)


def shard_sizes(n_items: int, size: int) -> list[int]:
    """Items per rank of ``tf.data.Dataset.shard(size, rank)`` over ``n_items`` items.

    Rank r gets items r, r + size, r + 2*size, ...: the first ``n_items % size`` ranks get one more.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    q, r = divmod(n_items, size)
    return [q + (1 if rank < r else 0) for rank in range(size)]


def shard_indices(n_items: int, size: int, rank: int) -> range:
    """Positions (in the shuffled order) that rank ``rank`` of ``size`` gets from ``.shard(size, rank)``."""
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size - 1}], got {rank}")
    return range(rank, n_items, size)


def equal_shard_length(n_items: int, size: int) -> int:
    """Items every rank trains on per epoch: the smallest shard (``n_items // size``).

    Taking this many from each shard (``.shard(size, rank).take(n)``) drops at most ``size - 1`` items
    per epoch (different ones each epoch, since the order is reshuffled) and guarantees that all ranks
    run the same number of steps.
    """
    return min(shard_sizes(n_items, size))


def steps_per_epoch(n_items: int, size: int, batch_size: int) -> int:
    """Batches per epoch on every rank (last batch may be partial), with :func:`equal_shard_length` items."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return math.ceil(equal_shard_length(n_items, size) / batch_size)


def cpu_threads_per_rank(allowed_cpus: int, node_cpus: int, local_size: int) -> int:
    """CPU threads for one of ``local_size`` ranks on a node without GPUs.

    When the launcher already bound the rank to a subset of cores (``allowed_cpus < node_cpus``: mpirun's
    core binding, srun's --cpus-per-task), use them all; otherwise share the node's cores.
    """
    if allowed_cpus < node_cpus:
        return max(1, allowed_cpus)
    return max(1, node_cpus // max(1, local_size))
