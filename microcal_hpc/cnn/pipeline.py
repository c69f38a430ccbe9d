"""tf.data input pipelines for the CNN, fed from an image source (``cnn/source.py``: memory or HDF5 stream).

Training order: every epoch visits the training images in an order that is a pure function of
``(seed, epoch)`` (:func:`epoch_windows`, computed with NumPy):

1. the packed file's chunks that hold training images are put in a random order;
2. consecutive chunks of that order form windows of ``train.shuffle_buffer`` images (whole chunks, at
   least one chunk per window);
3. within a window the images are shuffled; windows follow each other.

A streamed epoch thus holds one window at a time and reads each chunk once. On the packed real data set
(one chunk of 636 Train images) it is a plain shuffle of all images. Horovod: the order is the same on
every rank; it is cut to a multiple of the number of ranks and rank ``r`` takes every ``r``-th entry, so
shards are disjoint and equally long (every rank runs the same number of steps, which Horovod's
collective operations need); each rank reads the windows in turn and keeps its own entries. A job
resumed at epoch ``e`` sees exactly the order an uninterrupted job would have seen.

Batches never straddle epochs. Each carries a key, (seed and rank, epoch and step), from which its
random augmentation is drawn (``cnn/augment.py``). Images are scaled to [0, 1] (float32 (B, H, W, 1)),
augmented (training only) and prefetched. Evaluation pipelines read blocks of consecutive rows in file
order and never augment.

tf.data's autotuning is off (:func:`_finished`): its background thread sleeps for growing periods, and
deleting an iterator waits for it to wake (measured: 14-26 s at the end of one 25-epoch job in five).
The map runs inline and ``PREFETCH_BATCHES`` batches are prepared ahead instead.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from microcal_hpc import parallel_math
from microcal_hpc.cnn.source import InMemoryImages

EVAL_BLOCK = 4096  # images the evaluation pipeline reads at once
PREFETCH_BATCHES = 2  # batches prepared while the model works on the current one


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1] (the same values as the pipelines' scaling)."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., np.newaxis]


def epoch_windows(n: int, seed: int, epoch: int, num_shards: int = 1, shard_index: int = 0,
                  chunk_ids: np.ndarray | None = None, window_chunks: int = 1) -> list[np.ndarray]:
    """This shard's positions (0..n-1) for ``epoch`` (0-based) in visiting order, one array per window.

    ``chunk_ids``: the file chunk of each position (None: all in one chunk); ``window_chunks``: chunks
    per window. See the module docstring.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
    if n < num_shards:
        raise ValueError(f"{n} training images cannot be shared by {num_shards} ranks")
    rng = np.random.default_rng([int(seed), int(epoch)])
    chunk_ids = np.zeros(n, dtype=np.int64) if chunk_ids is None else np.asarray(chunk_ids)
    _, chunk = np.unique(chunk_ids, return_inverse=True)
    chunk_rank = rng.permutation(int(chunk.max()) + 1)  # place of each chunk in this epoch's chunk order
    window = chunk_rank[chunk] // max(1, int(window_chunks))
    order = np.lexsort((rng.random(n), window))
    usable = parallel_math.equal_shard_length(n, num_shards) * num_shards
    mine = order[:usable][shard_index::num_shards]
    return np.split(mine, np.flatnonzero(np.diff(window[mine])) + 1)


def epoch_order(n: int, seed: int, epoch: int, num_shards: int = 1, shard_index: int = 0,
                chunk_ids: np.ndarray | None = None, window_chunks: int = 1) -> np.ndarray:
    """This shard's positions for ``epoch`` in visiting order (:func:`epoch_windows` joined)."""
    return np.concatenate(epoch_windows(n, seed, epoch, num_shards, shard_index, chunk_ids, window_chunks))


def steps_per_epoch(n: int, batch_size: int, num_shards: int = 1) -> int:
    """Number of batches one rank runs per epoch (the last batch may be smaller)."""
    return parallel_math.steps_per_epoch(n, num_shards, batch_size)


def batch_key(seed: int, shard_index: int, epoch: int, step: int) -> np.ndarray:
    """int64 [2] naming one training batch: (a stream of seed and rank, epoch and step)."""
    stream = np.random.default_rng([int(seed), int(shard_index)]).integers(0, 2**62)
    return np.array([stream, (int(epoch) << 32) + int(step)], dtype=np.int64)


def training_batches(source, labels: np.ndarray, *, batch_size: int, seed: int, first_epoch: int, epochs: int,
                     num_shards: int = 1, shard_index: int = 0,
                     window_chunks: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(key, positions, images uint8 (B, H, W), labels float32 (B, 1)) of every batch of this rank for epochs
    ``first_epoch .. epochs-1``, in training order, reading ``source`` one window at a time."""
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    empty = np.zeros((0,) + tuple(source.image_shape), dtype=np.uint8)
    for epoch in range(first_epoch, epochs):
        step = 0
        held_pos, held_x = np.zeros(0, dtype=np.int64), empty
        for window in epoch_windows(len(source), seed, epoch, num_shards, shard_index, source.chunk_ids,
                                    window_chunks):
            pos = np.concatenate([held_pos, window])
            x = np.concatenate([held_x, source.read(window)]) if len(held_pos) else source.read(window)
            full = len(pos) - len(pos) % batch_size
            for i in range(0, full, batch_size):
                yield batch_key(seed, shard_index, epoch, step), pos[i:i + batch_size], x[i:i + batch_size], \
                    labels[pos[i:i + batch_size]]
                step += 1
            held_pos, held_x = pos[full:], x[full:]
        if len(held_pos):
            yield batch_key(seed, shard_index, epoch, step), held_pos, held_x, labels[held_pos]


def _scaled(images):
    """uint8 (B, H, W) tensor -> float32 (B, H, W, 1) in [0, 1]."""
    import tensorflow as tf

    return (tf.cast(images, tf.float32) / 255.0)[..., tf.newaxis]


def training_dataset(source, labels: np.ndarray, *, batch_size: int, seed: int, first_epoch: int, epochs: int,
                     augment: str = "none", num_shards: int = 1, shard_index: int = 0, window_chunks: int = 1):
    """Batches (x float32 (B, H, W, 1), y float32 (B, 1)) for epochs ``first_epoch .. epochs-1``, back to back.

    Use with ``model.fit(..., steps_per_epoch=steps_per_epoch(...), initial_epoch=first_epoch)``: the
    dataset has no known length, so Keras keeps one iterator across epochs and epoch ``e`` gets the
    ``e``-th block of batches. ``source``: a ``cnn.source`` image source (or a uint8 array held in memory).
    """
    import tensorflow as tf

    from microcal_hpc.cnn.augment import augment_batch, build_augmenter, random_generators

    if epochs <= first_epoch:
        raise ValueError(f"no epoch left to train (first_epoch={first_epoch}, epochs={epochs})")
    source = source if hasattr(source, "read") else InMemoryImages(np.asarray(source))
    h, w = source.image_shape

    def batches():
        for key, _, x, y in training_batches(source, labels, batch_size=batch_size, seed=seed, first_epoch=first_epoch,
                                             epochs=epochs, num_shards=num_shards, shard_index=shard_index,
                                             window_chunks=window_chunks):
            yield key, x, y

    ds = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec([2], tf.int64), tf.TensorSpec([None, h, w], tf.uint8), tf.TensorSpec([None, 1], tf.float32)))
    augmenter = build_augmenter(augment, seed=seed)
    if augmenter is None:
        ds = ds.map(lambda key, x, y: (_scaled(x), y))
    else:
        generators = random_generators(augmenter)
        # sequential map: the layers' generators are reset and drawn from batch after batch
        ds = ds.map(lambda key, x, y: (augment_batch(augmenter, generators, _scaled(x), key), y))
    return _finished(ds)


def evaluation_dataset(source, batch_size: int = 256):
    """Every image of ``source`` (an image source or a uint8 array) in file order, scaled, never augmented,
    batched and prefetched; read ``EVAL_BLOCK`` images at a time."""
    import tensorflow as tf

    source = source if hasattr(source, "read") else InMemoryImages(np.asarray(source))
    h, w = source.image_shape
    block = max(batch_size, EVAL_BLOCK // batch_size * batch_size)

    def batches():
        for start in range(0, len(source), block):
            x = source.read(np.arange(start, min(start + block, len(source))))
            for i in range(0, len(x), batch_size):
                yield x[i:i + batch_size]

    ds = tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec([None, h, w], tf.uint8))
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-len(source) // batch_size)))  # Keras needs the length
    return _finished(ds.map(_scaled))


def _finished(ds):
    """``ds`` prefetched by :data:`PREFETCH_BATCHES`, with tf.data's autotuning off (module docstring)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)
