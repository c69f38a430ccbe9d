"""Data-parallel arithmetic (no Horovod launch): learning-rate rules, warm-up, shards, CPU threads."""
from __future__ import annotations

import math

import pytest

from microcal_hpc.parallel_math import (
    cpu_threads_per_rank,
    equal_shard_length,
    scaled_learning_rate,
    shard_indices,
    shard_sizes,
    steps_per_epoch,
    warmup_learning_rate,
    warmup_step_learning_rate,
)


@pytest.mark.parametrize("size, linear, sqrt", [(1, 1e-3, 1e-3), (2, 2e-3, math.sqrt(2) * 1e-3), (3, 3e-3, math.sqrt(3) * 1e-3),
                                                (4, 4e-3, 2e-3)])
def test_lr_rules(size, linear, sqrt):
    assert scaled_learning_rate(1e-3, size, "linear") == pytest.approx(linear, rel=1e-12)
    assert scaled_learning_rate(1e-3, size, "sqrt") == pytest.approx(sqrt, rel=1e-12)
    assert scaled_learning_rate(1e-3, size, "none") == 1e-3


def test_lr_rule_rejects_unknown_rule_and_bad_size():
    with pytest.raises(ValueError, match="unknown learning-rate rule"):
        scaled_learning_rate(1e-3, 2, "cubic")
    with pytest.raises(ValueError):
        scaled_learning_rate(1e-3, 0)


def test_warmup_ramps_linearly_from_base_to_target_then_holds():
    base, target = 1e-3, 4e-3
    assert warmup_learning_rate(base, target, 0.0, 2) == base
    assert warmup_learning_rate(base, target, 1.0, 2) == pytest.approx(2.5e-3)
    assert warmup_learning_rate(base, target, 2.0, 2) == target
    assert warmup_learning_rate(base, target, 7.5, 2) == target
    assert warmup_learning_rate(base, target, 0.3, 0) == target  # no warm-up


def test_warmup_per_step_matches_horovod_rule_and_ends_at_target():
    # Horovod's LearningRateWarmupCallback (linear rule): lr = initial_lr / size * (e * (size - 1) / W + 1),
    # initial_lr = base * size, e = epoch + (batch + 1) / steps. Ours must agree for linear scaling.
    base, size, warm, steps = 1e-3, 4, 3, 5
    target = scaled_learning_rate(base, size, "linear")
    for epoch in range(warm):
        for step in range(steps):
            e = epoch + (step + 1) / steps
            horovod = target / size * (e * (size - 1) / warm + 1)
            assert warmup_step_learning_rate(base, target, epoch, step, steps, warm) == pytest.approx(horovod, rel=1e-12)
    lrs = [warmup_step_learning_rate(base, target, ep, st, steps, warm) for ep in range(warm) for st in range(steps)]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))  # strictly increasing
    assert lrs[0] > base and lrs[-1] == pytest.approx(target)


def _tf_shard(n, size, rank):
    """What tf.data's shard does, by its documented rule: element i goes to rank i % size."""
    return [i for i in range(n) if i % size == rank]


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 508, 509, 636])
def test_shard_sizes_and_indices_match_tf_data_rule(n, size):
    sizes = shard_sizes(n, size)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= (1 if n else 0)
    seen = []
    for rank in range(size):
        idx = list(shard_indices(n, size, rank))
        assert idx == _tf_shard(n, size, rank)
        assert len(idx) == sizes[rank]
        seen += idx
    assert sorted(seen) == list(range(n))  # disjoint, union = all


def test_shard_sizes_examples():
    assert shard_sizes(7, 1) == [7]
    assert shard_sizes(7, 2) == [4, 3]
    assert shard_sizes(7, 3) == [3, 2, 2]
    assert shard_sizes(2, 3) == [1, 1, 0]


def test_shard_sizes_agree_with_tf_data():
    tf = pytest.importorskip("tensorflow")
    for n in (7, 10, 11):
        for size in (1, 2, 3):
            got = [len(list(tf.data.Dataset.range(n).shard(size, r).as_numpy_iterator())) for r in range(size)]
            assert got == shard_sizes(n, size)


def test_equal_shard_length_gives_every_rank_the_same_number_of_steps():
    # 65 items, batch 32, 2 ranks: plain shards are 33 (2 steps) and 32 (1 step): rank 0 would hang.
    assert [math.ceil(s / 32) for s in shard_sizes(65, 2)] == [2, 1]
    assert equal_shard_length(65, 2) == 32 and steps_per_epoch(65, 2, 32) == 1
    assert equal_shard_length(508, 2) == 254 and steps_per_epoch(508, 2, 32) == 8
    assert equal_shard_length(508, 3) == 169 and steps_per_epoch(508, 3, 32) == 6
    assert steps_per_epoch(508, 1, 32) == 16
    for n in range(0, 40):
        for size in (1, 2, 3):
            assert n - size < equal_shard_length(n, size) * size <= n  # drops at most size - 1 items


def test_cpu_threads_per_rank():
    assert cpu_threads_per_rank(2, 2, 1) == 2  # one rank: all cores
    assert cpu_threads_per_rank(2, 2, 2) == 1  # two unbound ranks share
    assert cpu_threads_per_rank(2, 2, 4) == 1  # never 0
    assert cpu_threads_per_rank(4, 64, 8) == 4  # bound by srun --cpus-per-task=4: use them


def test_equal_shards_agree_with_the_cnn_pipeline():
    # the CNN pipeline cuts each epoch's order to equal shards itself; both must give the same steps
    from microcal_hpc.cnn.pipeline import epoch_order
    from microcal_hpc.cnn.pipeline import steps_per_epoch as pipeline_steps

    for n in (5, 65, 508, 509):
        for size in (1, 2, 3):
            assert pipeline_steps(n, 32, size) == steps_per_epoch(n, size, 32)
            shards = [epoch_order(n, 0, 1, size, r) for r in range(size)]
            assert [len(s) for s in shards] == [equal_shard_length(n, size)] * size
