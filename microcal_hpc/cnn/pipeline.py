"""tf.data input pipelines for the CNN, fed from the packed arrays (uint8 (N, H, W)) in memory.

Training: every epoch visits the training images in its own shuffled order, a pure function of
``(seed, epoch)`` computed with NumPy (:func:`epoch_order`). So the order is the same on every
Horovod rank, each rank takes a disjoint shard of it, and a job resumed at epoch ``e`` sees exactly
the order an uninterrupted job would have seen. Images are scaled to [0, 1], augmented (training
only), and prefetched. Evaluation pipelines keep the file order and never augment.
"""
from __future__ import annotations

import numpy as np

from microcal_hpc import parallel_math


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., np.newaxis]


def epoch_order(n: int, seed: int, epoch: int, num_shards: int = 1, shard_index: int = 0) -> np.ndarray:
    """Indices of this shard's training images for ``epoch`` (0-based), in visiting order.

    The permutation of all ``n`` images depends only on (seed, epoch). It is cut to a multiple of
    ``num_shards`` (the few images left over change every epoch) and rank ``shard_index`` takes every
    ``num_shards``-th entry, so shards are disjoint and equally long: every rank runs the same number
    of steps, which Horovod's collective operations need.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
    if n < num_shards:
        raise ValueError(f"{n} training images cannot be shared by {num_shards} ranks")
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    usable = parallel_math.equal_shard_length(n, num_shards) * num_shards
    return perm[:usable][shard_index::num_shards]


def steps_per_epoch(n: int, batch_size: int, num_shards: int = 1) -> int:
    """Number of batches one rank runs per epoch (the last batch may be smaller)."""
    return parallel_math.steps_per_epoch(n, num_shards, batch_size)


def training_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int, first_epoch: int,
                     epochs: int, augment: str = "none", num_shards: int = 1, shard_index: int = 0,
                     record_batches: list | None = None):
    """Batches (x float32 (B, H, W, 1), y float32 (B, 1)) for epochs ``first_epoch .. epochs-1``, back to back.

    Use with ``model.fit(..., steps_per_epoch=steps_per_epoch(...), initial_epoch=first_epoch)``: the
    dataset has no known length, so Keras keeps one iterator across epochs and epoch ``e`` gets the
    ``e``-th block of batches. Augmentation layers are seeded from (seed, shard_index, first_epoch).
    ``record_batches`` (test hook): a list that receives each batch's training-image indices as produced.
    """
    import tensorflow as tf

    from microcal_hpc.cnn.augment import build_augmenter

    n = len(labels)
    if epochs <= first_epoch:
        raise ValueError(f"no epoch left to train (first_epoch={first_epoch}, epochs={epochs})")
    orders = np.stack([epoch_order(n, seed, e, num_shards, shard_index) for e in range(first_epoch, epochs)])
    x_all = tf.constant(scale_images(images))
    y_all = tf.constant(np.asarray(labels, np.float32).reshape(-1, 1))

    ds = tf.data.Dataset.from_tensor_slices(orders.astype(np.int32))  # one element per epoch
    ds = ds.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    if record_batches is not None:
        def _record(idx):
            record_batches.append(idx.numpy().tolist())
            return idx

        def _recorded(idx):
            out = tf.py_function(_record, [idx], tf.int32)
            out.set_shape([None])
            return out

        ds = ds.map(_recorded)  # sequential: batches are recorded in the order training consumes them
    ds = ds.map(lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    augmenter = build_augmenter(augment, seed=_augment_seed(seed, shard_index, first_epoch))
    if augmenter is not None:
        # sequential map: the random layers draw from one generator in batch order (reproducible)
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y))
    return ds.prefetch(tf.data.AUTOTUNE)


def _augment_seed(seed: int, shard_index: int, first_epoch: int) -> int:
    return int(np.random.default_rng([int(seed), int(shard_index), int(first_epoch), 7]).integers(0, 2**31 - 1))


def evaluation_dataset(images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 256):
    """Images in file order, scaled, never augmented (with labels when given), batched and prefetched."""
    import tensorflow as tf

    x = scale_images(images)
    ds = tf.data.Dataset.from_tensor_slices(x if labels is None else
                                            (x, np.asarray(labels, np.float32).reshape(-1, 1)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
