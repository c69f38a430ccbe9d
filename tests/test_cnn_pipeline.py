"""The tf.data pipelines: per-epoch order (chunks and shuffle windows), sharding for Horovod, scaling,
augmentation presets, and the streamed image source (the same batches as in memory, bounded reads)."""
from __future__ import annotations

import numpy as np
import pytest

from microcal_hpc.errors import ConfigError

tf = pytest.importorskip("tensorflow")


def _images(n=30, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size), dtype=np.uint8), np.arange(n) % 2


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return xs, ys


def test_epoch_order_is_a_fresh_permutation_per_epoch_and_reproducible():
    from microcal_hpc.cnn.pipeline import epoch_order

    orders = [epoch_order(50, seed=3, epoch=e) for e in range(4)]
    for o in orders:
        assert sorted(o) == list(range(50))
    assert len({tuple(o) for o in orders}) == 4  # reshuffled every epoch
    assert np.array_equal(epoch_order(50, 3, 2), orders[2])  # a pure function of (seed, epoch)
    assert not np.array_equal(epoch_order(50, 4, 2), orders[2])


@pytest.mark.parametrize("n,shards", [(50, 2), (51, 2), (53, 4)])
def test_shards_are_disjoint_equal_and_cut_from_the_same_order(n, shards):
    from microcal_hpc.cnn.pipeline import epoch_order, steps_per_epoch

    for epoch in range(3):
        parts = [epoch_order(n, 7, epoch, shards, r) for r in range(shards)]
        assert len({len(p) for p in parts}) == 1  # every rank runs the same number of steps
        joined = np.concatenate(parts)
        assert len(set(joined.tolist())) == len(joined) == n - n % shards  # disjoint, nearly everything
        full = epoch_order(n, 7, epoch)
        # interleaving the shards gives back the single-process order: all ranks agree on the shuffle
        assert np.array_equal(np.stack(parts, axis=1).reshape(-1), full[: n - n % shards])
        assert steps_per_epoch(n, 4, shards) == -(-len(parts[0]) // 4)


def test_training_batches_follow_the_epoch_orders_scaled_to_unit_range():
    from microcal_hpc.cnn.pipeline import epoch_order, training_dataset

    images, labels = _images()
    ds = training_dataset(images, labels, batch_size=8, seed=1, first_epoch=0, epochs=3)
    xs, ys = _collect(ds)
    assert [len(x) for x in xs] == [8, 8, 8, 6] * 3  # batches never straddle epochs
    x = np.concatenate(xs)
    assert x.dtype == np.float32 and x.shape[1:] == (12, 12, 1)
    expected = np.concatenate([epoch_order(30, 1, e) for e in range(3)])
    np.testing.assert_array_equal(x[..., 0], images[expected].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.concatenate(ys)[:, 0], labels[expected])


@pytest.mark.parametrize("augment", ["none", "flips", "reference", "strong"])
def test_a_resumed_pipeline_sees_the_same_batches_as_an_uninterrupted_one(augment):
    from microcal_hpc.cnn.pipeline import training_dataset

    images, labels = _images(n=30, size=16)
    kw = dict(batch_size=8, seed=1, epochs=3, augment=augment)
    full = np.concatenate(_collect(training_dataset(images, labels, first_epoch=0, **kw))[0])
    resumed = np.concatenate(_collect(training_dataset(images, labels, first_epoch=2, **kw))[0])
    # the same images and the same random transforms: augmentation is a function of (seed, rank, epoch, step)
    np.testing.assert_array_equal(resumed, full[-30:])


def test_windows_are_whole_chunks_in_a_new_order_every_epoch():
    from microcal_hpc.cnn.pipeline import epoch_order, epoch_windows

    chunk_ids = np.repeat(np.arange(10), 7)[:65]  # 10 chunks of 7 positions, the last one short
    n = len(chunk_ids)
    seen = []
    for epoch in range(3):
        windows = epoch_windows(n, 5, epoch, chunk_ids=chunk_ids, window_chunks=3)
        assert [len(set(chunk_ids[w])) for w in windows] == [3, 3, 3, 1]  # consecutive groups of 3 chunks
        for w in windows:  # each window holds its chunks completely, shuffled
            assert sorted(w.tolist()) == np.flatnonzero(np.isin(chunk_ids, chunk_ids[w])).tolist()
            assert w.tolist() != sorted(w.tolist())
        order = epoch_order(n, 5, epoch, chunk_ids=chunk_ids, window_chunks=3)
        np.testing.assert_array_equal(order, np.concatenate(windows))
        assert sorted(order.tolist()) == list(range(n))
        seen.append([tuple(sorted(set(chunk_ids[w]))) for w in windows])
    assert seen[0] != seen[1] != seen[2]  # the chunks are regrouped every epoch
    # two ranks: the same order cut in two interleaved halves, each grouped by the same windows
    both = [epoch_windows(n, 5, 1, 2, r, chunk_ids, 3) for r in range(2)]
    assert len(both[0]) == len(both[1]) == 4
    full = epoch_order(n, 5, 1, chunk_ids=chunk_ids, window_chunks=3)
    np.testing.assert_array_equal(np.stack([np.concatenate(b) for b in both], axis=1).reshape(-1), full[:64])


def test_sharded_pipelines_split_each_epoch_between_ranks():
    from microcal_hpc.cnn.pipeline import training_dataset

    images, labels = _images(n=31)
    per_rank = [np.concatenate(_collect(training_dataset(images, labels, batch_size=4, seed=5, first_epoch=0,
                                                         epochs=2, num_shards=2, shard_index=r))[0])
                for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 30  # 15 per rank per epoch
    for e in range(2):
        a, b = per_rank[0][e * 15:(e + 1) * 15], per_rank[1][e * 15:(e + 1) * 15]
        keys = {x.tobytes() for x in a} | {x.tobytes() for x in b}
        assert len(keys) == 30  # disjoint within the epoch


def _dihedral(img):
    return [np.rot90(f, k) for f in (img, img[:, ::-1]) for k in range(4)]


def test_augmentation_changes_training_images_but_never_evaluation_images():
    from microcal_hpc.cnn.pipeline import evaluation_dataset, scale_images, training_dataset

    images, labels = _images(n=40, size=16)
    kw = dict(batch_size=8, seed=2, first_epoch=0, epochs=2)
    plain_x, plain_y = _collect(training_dataset(images, labels, augment="none", **kw))
    aug_x, aug_y = _collect(training_dataset(images, labels, augment="flips", **kw))
    plain_x, aug_x = np.concatenate(plain_x), np.concatenate(aug_x)
    np.testing.assert_array_equal(np.concatenate(plain_y), np.concatenate(aug_y))  # same order, same labels
    changed = [not np.array_equal(a, p) for a, p in zip(aug_x, plain_x)]
    assert sum(changed) > len(changed) // 2  # 7 of 8 symmetries change an image
    for a, p in zip(aug_x, plain_x):  # and each is a flip/rotation of its own image, pixels untouched
        assert any(np.array_equal(a[..., 0], d) for d in _dihedral(p[..., 0]))
    study = np.concatenate(_collect(training_dataset(images, labels, augment="reference", **kw))[0])
    assert not np.allclose(study, plain_x)
    assert study.min() >= 0.0 and study.max() <= 1.0

    # the evaluation pipeline: file order, exact scaled pixels, the same on every pass
    ev = evaluation_dataset(images, batch_size=16)
    first = np.concatenate([x.numpy() for x in ev])
    second = np.concatenate([x.numpy() for x in ev])
    np.testing.assert_array_equal(first, scale_images(images))
    np.testing.assert_array_equal(first, second)


def test_augmented_batches_are_reproducible_from_the_seed():
    from microcal_hpc.cnn.pipeline import training_dataset

    images, labels = _images(n=24, size=16)
    run = lambda seed: np.concatenate(_collect(training_dataset(  # noqa: E731
        images, labels, batch_size=8, seed=seed, first_epoch=0, epochs=1, augment="strong"))[0])
    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_every_preset_builds_and_keeps_shape_and_range():
    from microcal_hpc.cnn.augment import PRESETS, build_augmenter

    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (4, 20, 20, 1)).astype(np.float32))
    for name in PRESETS:
        aug = build_augmenter(name, seed=1)
        if name == "none":
            assert aug is None
            continue
        y = aug(x, training=True).numpy()
        assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0 + 1e-6, name


def test_unknown_preset_is_a_config_error_listing_the_known_ones():
    from microcal_hpc.cnn.augment import build_augmenter

    with pytest.raises(ConfigError) as e:
        build_augmenter("mixup")
    msg = str(e.value)
    assert "mixup" in msg and all(p in msg for p in ("none", "flips", "reference", "strong"))


# ------------------------------------------------------------------------------------------------
# the streamed source


@pytest.fixture(scope="module")
def small_chunks(tmp_path_factory):
    """A packed synthetic set whose HDF5 chunks hold 8 images (Train 40/40: 10 chunks)."""
    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig
    from microcal_hpc.synthetic import make_image_tree

    base = tmp_path_factory.mktemp("chunks")
    root = make_image_tree(base / "tree", counts={"Train": (40, 40), "Test": (6, 5)}, shape=(16, 16))
    pack_tree(root, base / "p.h5", DataConfig(chunk_size=8))
    return base / "p.h5"


def test_streamed_batches_equal_the_in_memory_ones_and_reads_stay_within_a_window(small_chunks):
    from microcal_hpc.cnn.pipeline import evaluation_dataset, training_dataset
    from microcal_hpc.cnn.source import StreamedImages, open_source
    from microcal_hpc.dataset import load_split

    tr = load_split(small_chunks, "train")
    rows = np.flatnonzero(np.arange(len(tr)) % 5 != 2)  # a fold-like subset of the file's rows
    memory = open_source(small_chunks, "train", rows, "memory")
    stream = open_source(small_chunks, "train", rows, "stream")
    assert isinstance(stream, StreamedImages) and stream.chunk_len == memory.chunk_len == 8
    chunks_per_read = []
    read_chunk = stream.read_chunk

    def spy(chunk):
        chunks_per_read[-1].add(chunk)
        return read_chunk(chunk)

    stream.read_chunk = spy
    read = stream.read
    stream.read = lambda positions: (chunks_per_read.append(set()), read(positions))[1]
    for shards in (1, 2):
        kw = dict(batch_size=6, seed=4, first_epoch=0, epochs=2, augment="flips", window_chunks=3,
                  num_shards=shards, shard_index=shards - 1)
        a = list(zip(*_collect(training_dataset(memory, tr.labels[rows], **kw))))
        b = list(zip(*_collect(training_dataset(stream, tr.labels[rows], **kw))))
        assert len(a) == len(b) > 4
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert chunks_per_read and max(len(c) for c in chunks_per_read) <= 3  # never more than one window
    ev_memory = np.concatenate([x.numpy() for x in evaluation_dataset(memory, batch_size=7)])
    ev_stream = np.concatenate([x.numpy() for x in evaluation_dataset(stream, batch_size=7)])
    np.testing.assert_array_equal(ev_memory, ev_stream)
    np.testing.assert_array_equal(ev_memory[..., 0] * 255.0, tr.images[rows].astype(np.float32))


def test_auto_input_streams_a_split_larger_than_the_memory_limit():
    from microcal_hpc.cnn.source import input_mode
    from microcal_hpc.config import TrainConfig

    auto = TrainConfig(input_memory_mb=1.0)  # 1 MiB: 291 patches of 60x60
    assert input_mode(auto, 291, (60, 60)) == "memory" and input_mode(auto, 292, (60, 60)) == "stream"
    assert input_mode(TrainConfig(input="stream"), 10, (60, 60)) == "stream"
    assert input_mode(TrainConfig(input="memory", input_memory_mb=1.0), 10**6, (60, 60)) == "memory"
