"""sentmtl/data/distinct_batches.py: a contrastive source's batches keep rows that share a text apart where the
count allows, spread the rest evenly, keep the plain split's batch count, and say once when they cannot."""

import logging

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

from sentmtl.data.sampler import TaskBatchSampler, distinct_batches
from sentmtl.model.task_types import in_batch_negatives_loss


def test_distinct_batches_never_repeat_a_key_and_keep_every_row():
    keys = [(0, 1), (2, 3), (0, 4), (5, 6), (7, 1), (8, 9), (0, 10)]  # text 0 three times, text 1 twice
    batches, repeated, closed = distinct_batches(list(range(7)), keys, [3, 3, 1])
    assert repeated == 0 and [len(b) for b in batches] == [3, 3, 1]
    assert closed == 1  # the batch of one row: no two rows in it
    assert sorted(row for batch in batches for row in batch) == list(range(7))
    for batch in batches:
        texts = [text for row in batch for text in keys[row]]
        assert len(texts) == len(set(texts)), batch
    assert batches[0] == [0, 1, 3]  # rows that would repeat a text wait, first in line for the next batch
    assert batches[1][0] == 2


def test_distinct_batches_without_repeated_keys_is_the_plain_split():
    """Where no key repeats, the batches are the plain split of the order: a contrastive source without repeated
    texts trains on the batches it had before keys existed."""
    generator = np.random.default_rng(0)
    for n, size in [(13, 4), (64, 8), (7, 7), (30, 4)]:
        order = generator.permutation(n).tolist()
        keys = [(2 * i, 2 * i + 1) for i in range(n)]
        sizes = [min(size, n - start) for start in range(0, n, size)]
        batches, repeated, closed = distinct_batches(order, keys, sizes)
        starts = np.cumsum([0, *sizes[:-1]]).tolist()
        assert batches == [order[start : start + s] for start, s in zip(starts, sizes)]
        assert repeated == 0 and closed == sum(s < 2 for s in sizes)


def _free_pair(batch, keys):
    """Whether two rows of the batch share no key (then each is a negative for the other)."""
    return any(set(keys[a]).isdisjoint(keys[b]) for i, a in enumerate(batch) for b in batch[i + 1 :])


def test_a_batch_in_which_every_two_rows_share_a_text_trades_a_row():
    """The greedy fill and the even spread leave [2, 5, 6, 0, 4] and [1, 3]: rows 1 and 3 share text 105, so the
    second batch had no negatives; a trade with the first batch gives both two rows that share no text."""
    keys = [(0, 104), (0, 105), (1, 105), (0, 104), (0, 102), (1, 101), (0, 103)]
    batches, _, closed = distinct_batches([2, 5, 1, 6, 0, 4, 3], keys, [5, 2])
    assert closed == 0 and [len(batch) for batch in batches] == [5, 2]
    assert sorted(row for batch in batches for row in batch) == list(range(7))
    assert all(_free_pair(batch, keys) for batch in batches)


def _loss_of(batch, keys, seed=0):
    """The in-batch-negatives loss of random embeddings on the batch's rows (keys: anchor, positive): 0 when no row
    has a negative."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[1, *keys[row]] for row in batch])
    return float(in_batch_negatives_loss(torch.randn(len(batch), 2, 8, generator=generator), ids))


def _each_batch_checked(sampler, keys, epochs, distinct):
    """For several epochs: len(sampler) batches, every row once, every batch with two rows that share no key (so a
    loss above 0), and, where `distinct`, no key twice in a batch."""
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(row for batch in batches for row in batch) == list(range(len(keys)))
        for batch in batches:
            assert _free_pair(batch, keys), batch
            assert _loss_of(batch, keys, epoch) > 0
            if distinct:
                texts = [text for row in batch for text in keys[row]]
                assert len(texts) == len(set(texts)), batch


@pytest.mark.parametrize("strategy", ["proportional", "round_robin", "temperature"])
@pytest.mark.parametrize("within", ["group_by_length", "random", "sequential"])
def test_rows_that_share_an_anchor_never_share_a_batch_when_the_count_allows(strategy, within, caplog):
    """40 pairs in 10 batches of 4: anchor 0 on 10 rows, anchor 1 on 8, positive 500 on 3 rows of other anchors,
    the order adversarial under `sequential` (every row of anchor 0 first). Ten batches can hold them apart: no
    batch repeats a text, every batch teaches, nothing is warned."""
    anchors = [0] * 10 + [1] * 8 + list(range(2, 24))
    positives = [100 + i for i in range(40)]
    positives[20] = positives[30] = positives[39] = 500
    keys = list(zip(anchors, positives))
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.sampler"):
        sampler = TaskBatchSampler(
            [list(range(5, 45))], 4, strategy=strategy, within=within, seed=7, keys=[keys], min_batch_size=2
        )
        assert len(sampler) == 10  # the plain split's count
        _each_batch_checked(sampler, keys, epochs=4, distinct=True)
    assert not [r for r in caplog.records if "share a text" in r.getMessage()]


@pytest.mark.parametrize("within", ["group_by_length", "random", "sequential"])
def test_an_anchor_on_more_rows_than_batches_is_spread_evenly(within, caplog):
    """48 pairs in 6 batches of 8, 30 of them with anchor 0: repeats cannot be avoided, so every batch gets its even
    share, 5 rows of anchor 0 and 3 others (piled into the last batches, their rows would have no negatives)."""
    keys = [(0 if i < 30 else i, 100 + i) for i in range(48)]
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.sampler"):
        sampler = TaskBatchSampler([[5] * 48], 8, within=within, keys=[keys])
        assert len(sampler) == 6
        _each_batch_checked(sampler, keys, epochs=4, distinct=False)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            assert all(sum(keys[row][0] == 0 for row in batch) == 5 for batch in sampler)
    warnings = [r.getMessage() for r in caplog.records if "share a text" in r.getMessage()]
    assert warnings == [
        "source 0, epoch 0: 30 of its 48 rows share a text with another row of their batch (up to 30 rows share "
        "one text, and a pass has 6 batches), and 0 batch(es) have no two rows without a shared text; the loss "
        "leaves a shared text out of the negatives, so such a batch may have no negatives but its rows' hard "
        "negatives."
    ]


@pytest.mark.parametrize("strategy", ["proportional", "round_robin", "temperature"])
def test_a_keyed_source_yields_the_length_it_reports_in_every_epoch(strategy):
    """Batch count and sizes are those of the plain split, whatever the order (and the keys), save that a keyed
    source's last batch of one row joins the one before it: the Trainer runs len(sampler) steps per epoch (and sizes
    it its schedule and resume by it)."""
    keys = [(a, 100 + i) for i, a in enumerate([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5, 6])]
    for min_batch_size in (1, 2):
        sampler = TaskBatchSampler(
            [[5] * 13, [5] * 10], [4, 3], strategy=strategy, keys=[keys, None], min_batch_size=min_batch_size
        )
        assert sampler.batches_per_source == [3, 4 if min_batch_size == 1 else 3]  # 4 + 4 + 5; 3 + 3 + 3 + 1
        for epoch in range(6):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            assert all(len(b) >= min_batch_size for b in batches)
            assert all(len(b) >= 2 for b in batches if b[0] < 13)
            keyed = sorted(i for b in batches if b[0] < 13 for i in b)
            if strategy != "temperature":  # every batch of the keyed source used: each row exactly once
                assert keyed == list(range(13))
                assert all(_free_pair(b, keys) for b in batches if b[0] < 13)


def test_a_keyed_source_spends_no_batch_of_one_row():
    """A contrastive batch of one row has no in-batch negatives: a keyed source's last batch of one row joins the
    one before it; a source without keys keeps its batches as they were."""
    keys = [(i, 100 + i) for i in range(9)]
    keyed, plain = TaskBatchSampler([[5] * 9], 4, keys=[keys]), TaskBatchSampler([[5] * 9], 4)
    assert sorted(len(b) for b in keyed) == [4, 5] and len(keyed) == 2
    assert sorted(len(b) for b in plain) == [1, 4, 4] and len(plain) == 3


def test_a_source_that_cannot_avoid_duplicates_says_so_once(caplog):
    """Six pairs with one anchor text: every batch holds only that anchor's pairs, so its loss has no negatives but
    hard negatives, whatever the batching. The run says so once, in the words docs/tasks.md quotes."""
    keys = [(0, i + 1) for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.sampler"):
        sampler = TaskBatchSampler([[5] * 6], 3, keys=[keys], min_batch_size=2)
        batches = list(sampler) + list(sampler)
    assert [len(batch) for batch in batches] == [3, 3, 3, 3] and len(sampler) == 2  # the plain split's sizes
    assert all(_loss_of(batch, keys) == 0 for batch in batches)
    warnings = [r.getMessage() for r in caplog.records if "share a text" in r.getMessage()]
    assert warnings == [
        "source 0, epoch 0: 6 of its 6 rows share a text with another row of their batch (up to 6 rows share one "
        "text, and a pass has 2 batches), and 2 batch(es) have no two rows without a shared text; the loss leaves "
        "a shared text out of the negatives, so such a batch may have no negatives but its rows' hard negatives."
    ]
    docs = " ".join((REPO_ROOT / "docs" / "tasks.md").read_text().split())
    assert f"`{warnings[0]}`" in docs
