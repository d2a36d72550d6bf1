"""sentmtl/data/sampler.py: task batches stay in one source, are seeded per epoch, share steps as each strategy says,
take per-source sizes and fixed counts, and split into the processes' shares of one global batch."""

import pytest

from sentmtl.data.sampler import TaskBatchSampler

LENGTHS = [[3, 5, 2, 7, 1] * 8, [4, 2] * 6, [9] * 5]  # 40, 12 and 5 rows: 10, 3 and 2 batches of 4


@pytest.mark.parametrize("strategy", ["proportional", "round_robin", "temperature"])
def test_sampler_batches_stay_in_one_source_and_are_seeded_per_epoch(strategy):
    sampler = TaskBatchSampler(LENGTHS, 4, strategy, seed=3)
    offsets = [0, 40, 52, 57]
    first = list(sampler)
    assert len(first) == len(sampler)
    for batch in first:
        source = next(k for k in range(3) if offsets[k] <= batch[0] < offsets[k + 1])
        assert all(offsets[source] <= i < offsets[source + 1] for i in batch)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # a resumed epoch replays the same order
    assert list(TaskBatchSampler(LENGTHS, 4, strategy, seed=3)) == first


def test_sampler_strategies_share_steps_as_documented():
    def per_source(strategy, **kwargs):
        counts = [0, 0, 0]
        for batch in TaskBatchSampler(LENGTHS, 4, strategy, seed=0, **kwargs):
            counts[0 if batch[0] < 40 else 1 if batch[0] < 52 else 2] += 1
        return counts

    assert per_source("proportional") == [10, 3, 2]  # every batch once
    assert per_source("round_robin") == [2, 2, 2]  # in turn, until the smallest runs out
    hot = per_source("temperature", temperature=100.0)  # nearly uniform over sources
    assert sum(hot) == 15 and min(hot) >= 2
    assert per_source("temperature", temperature=1.0)[0] >= 7  # T = 1: ∝ size (40 of 57 rows: 10.5 of 15 expected)
    with pytest.raises(ValueError, match="task sampling 'mixed' is not supported"):
        TaskBatchSampler(LENGTHS, 4, "mixed")


def test_per_source_batch_size_and_batches_per_epoch():
    lengths = [[5] * 40, [5] * 30, [5] * 100]
    sampler = TaskBatchSampler(lengths, [4, 5, 16], strategy="round_robin", seed=3, batches_per_epoch=[None, None, 3])
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 * 6 + 3  # round robin to the smaller of 10 and 6, and 3 fixed
    third = [b for b in batches if b[0] >= 70]
    assert len(third) == 3 and all(len(b) == 16 for b in third)
    assert len({i for b in third for i in b}) == 48  # no row twice within an epoch
    positions = [i for i, b in enumerate(batches) if b[0] >= 70]
    assert positions == [2, 7, 12]  # spread evenly through the epoch
    assert batches == list(sampler)  # seeded by (seed, epoch)
    sampler.set_epoch(1)
    assert {i for b in list(sampler) if b[0] >= 70 for i in b} != {i for b in third for i in b}  # a fresh subset
    # More batches than one pass has: a second pass in a new order.
    many = TaskBatchSampler([[5] * 10], 4, batches_per_epoch=[5])
    assert len(list(many)) == 5


def test_the_fixed_source_is_shuffled_in_under_proportional():
    sampler = TaskBatchSampler([[5] * 40, [5] * 64], [4, 8], strategy="proportional", batches_per_epoch=[None, 2])
    batches = list(sampler)
    assert len(batches) == 12 and sum(b[0] >= 40 for b in batches) == 2


def test_each_process_takes_its_share_of_the_same_global_batch():
    """Under DDP every process trains the same source at the same step, and 2 × b rows are the rows of one batch of
    2b (accelerate's own sharding gave processes different sources' batches and never advanced the epoch)."""
    from sentmtl.data.sampler import RankBatches

    inner = TaskBatchSampler(LENGTHS, 8, "round_robin", seed=1)
    shares = [list(RankBatches(inner, 2, rank)) for rank in (0, 1)]
    for global_batch, a, b in zip(inner, *shares):
        assert abs(len(a) - len(b)) <= 1 and sorted(a + b) == sorted(global_batch)
    # One batch of 3 rows over 2 processes: shares of 2 and 1, no row repeated (a repeated row would count twice in
    # a loss that compares the rows of the gathered batch).
    odd = TaskBatchSampler([[1, 2, 3]], 8, within="sequential", min_batch_size=2)
    assert [list(RankBatches(odd, 2, r)) for r in (0, 1)] == [[[0, 2]], [[1]]]
    # A source's last batch smaller than the process count joins the one before it: every process gets a row.
    tail = TaskBatchSampler([[1] * 9], 4, within="sequential", min_batch_size=2)
    assert list(tail) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]] and len(tail) == 2
    with pytest.raises(ValueError, match="fewer rows than the 2 processes"):
        TaskBatchSampler([[1]], 4, min_batch_size=2)
    wrapper = RankBatches(inner, 2, 0)
    wrapper.set_epoch(3)
    assert inner.epoch == 3
