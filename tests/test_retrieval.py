"""Retrieval beside the heads: the `contrastive` task type (in-batch negatives, hard negatives, the symmetric form),
batches without repeated texts, the IR evaluator, Matryoshka embeddings, and a whole run with the other tasks."""

import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import NEGATIVE_WORDS, POSITIVE_WORDS, TOPICS, synthetic_rows

import sentmtl
from sentmtl.data.sampler import TaskBatchSampler, distinct_batches
from sentmtl.model.configuration_sentmtl import SentMtlConfig
from sentmtl.model.task_spec import TaskSpec
from sentmtl.model.task_types import TaskInputs, in_batch_negatives_loss
from sentmtl.tasks.io import task_io
from sentmtl.tasks.metrics import retrieval_metrics
from sentmtl.training.run import main, parse_args, run

# -- the loss, by hand ------------------------------------------------------------------------------------------------


def _by_hand(anchors, positives, negatives=None, scale=20.0, symmetric=False):
    """The in-batch-negatives loss with explicit loops: anchor i's cross-entropy over [every positive, every hard
    negative], its own positive the target; symmetric: the mean with positive i's over the anchors."""
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    candidates = list(positives) + ([n for row in negatives for n in row] if negatives is not None else [])
    forward = []
    for i, anchor in enumerate(anchors):
        logits = [scale * float(unit(anchor) @ unit(c)) for c in candidates]
        forward.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    loss = float(np.mean(forward))
    if symmetric:
        backward = []
        for i, positive in enumerate(positives):
            logits = [scale * float(unit(positive) @ unit(a)) for a in anchors]
            backward.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
        loss = (loss + float(np.mean(backward))) / 2
    return loss


def _ids(n, k=0):
    """Every text distinct: [flag 1, anchor, positive, negatives …]."""
    return torch.tensor([[1, *range(i * (2 + k), (i + 1) * (2 + k))] for i in range(n)])


@pytest.mark.parametrize("k, symmetric", [(0, False), (2, False), (0, True), (1, True)])
def test_in_batch_negatives_loss_matches_a_hand_computation(k, symmetric):
    generator = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    negatives = torch.randn(4, k, 6, generator=generator)
    output = torch.cat([anchors[:, None], positives[:, None], negatives], dim=1)
    loss = in_batch_negatives_loss(output, _ids(4, k), scale=5.0, symmetric=symmetric)
    expected = _by_hand(anchors.numpy(), positives.numpy(), negatives.numpy() if k else None, 5.0, symmetric)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_repeated_texts_are_not_negatives_and_skipped_rows_take_no_part():
    """Row 2 repeats row 0's positive text: for anchor 0 that candidate is the same text as its positive, not a
    negative. Row 3 is not a pair (flag 0): it neither asks nor answers. The loss is the one of rows 0 and 1 alone with
    the duplicate dropped."""
    generator = torch.Generator().manual_seed(1)
    output = torch.randn(4, 2, 6, generator=generator)
    ids = torch.tensor([[1, 0, 1], [1, 2, 3], [1, 4, 1], [0, 5, 6]])
    loss = in_batch_negatives_loss(output, ids, scale=5.0)
    a, p = output[:, 0].numpy(), output[:, 1].numpy()
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    logits = lambda i, js: [5.0 * float(unit(a[i]) @ unit(p[j])) for j in js]  # noqa: E731
    row0 = -logits(0, [0])[0] + math.log(sum(math.exp(v) for v in logits(0, [0, 1])))  # not 2 (same text), not 3
    row1 = -logits(1, [1])[0] + math.log(sum(math.exp(v) for v in logits(1, [0, 1, 2])))
    row2 = -logits(2, [2])[0] + math.log(sum(math.exp(v) for v in logits(2, [2, 1])))  # not 0: the same text
    assert float(loss) == pytest.approx((row0 + row1 + row2) / 3, rel=1e-5)
    # (A, p1), (A, p2), (B, p2): p2 is a positive of A, so neither copy of it is a negative for anchor A.
    shared = torch.tensor([[1, 0, 1], [1, 0, 2], [1, 3, 2]])
    out = torch.randn(3, 2, 6, generator=generator)
    a, p = out[:, 0].numpy(), out[:, 1].numpy()
    row0 = -logits(0, [0])[0] + math.log(math.exp(logits(0, [0])[0]))  # every other candidate is A's too: 0
    row1 = -logits(1, [1])[0] + math.log(math.exp(logits(1, [1])[0]))
    row2 = -logits(2, [2])[0] + math.log(sum(math.exp(v) for v in logits(2, [0, 2])))  # p2 of row 1 is its own text
    assert float(in_batch_negatives_loss(out, shared, scale=5.0)) == pytest.approx((row0 + row1 + row2) / 3, abs=1e-5)
    # No pair in the batch: 0, not NaN, and still a tensor on the graph.
    assert float(in_batch_negatives_loss(output, torch.zeros_like(ids))) == 0.0


def test_contrastive_output_and_the_model_forward_with_hard_negatives(tiny_model, tiny_tokenizer):
    tiny_model.config.tasks = [TaskSpec("retrieval", "contrastive").to_dict()]
    batch = tiny_tokenizer(["the film was good ."] * 3, return_tensors="pt")
    pair = tiny_tokenizer(
        ["the movie was great .", "the food was bad .", "the plot was boring ."], padding=True, return_tensors="pt"
    )
    negatives = tiny_tokenizer(["the phone was broken ."] * 6, return_tensors="pt")
    out = tiny_model(
        **batch,
        pair_input_ids=pair["input_ids"],
        pair_attention_mask=pair["attention_mask"],
        negative_input_ids=negatives["input_ids"].reshape(3, 2, -1),
        negative_attention_mask=negatives["attention_mask"].reshape(3, 2, -1),
        task_labels={"retrieval": torch.tensor([[1, 0, 1, 2, 2], [1, 3, 4, 2, 2], [1, 5, 6, 2, 2]])},
    )
    assert out.task_outputs["retrieval"].shape == (3, 4, 16)
    assert out.loss.requires_grad and torch.isfinite(out.loss)


def test_scale_is_only_for_losses_that_use_one():
    assert TaskSpec("r", "contrastive", scale=30.0).scale == 30.0
    assert "scale" not in TaskSpec("c", "classification", labels=["a", "b"]).to_dict()  # configs stay as they were
    with pytest.raises(ValueError, match="only these losses take one: similarity \\(cosent\\); contrastive"):
        TaskSpec("c", "classification", labels=["a", "b"], scale=2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        TaskSpec("r", "contrastive", scale=0.0)


# -- batches without repeated texts ---------------------------------------------------------------------------------


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


def test_a_batch_in_which_every_two_rows_share_a_text_trades_a_row():
    """The greedy fill and the even spread leave [2, 5, 6, 0, 4] and [1, 3]: rows 1 and 3 share text 105, so the
    second batch had no negatives; a trade with the first batch gives both two rows that share no text."""
    keys = [(0, 104), (0, 105), (1, 105), (0, 104), (0, 102), (1, 101), (0, 103)]
    batches, _, closed = distinct_batches([2, 5, 1, 6, 0, 4, 3], keys, [5, 2])
    assert closed == 0 and [len(batch) for batch in batches] == [5, 2]
    assert sorted(row for batch in batches for row in batch) == list(range(7))
    assert all(_free_pair(batch, keys) for batch in batches)


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
    docs = " ".join((Path(__file__).resolve().parent.parent / "docs" / "tasks.md").read_text().split())
    assert f"`{warnings[0]}`" in docs


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


# -- the IR evaluator ---------------------------------------------------------------------------------------------


def _fixture_vectors():
    generator = np.random.default_rng(0)
    queries, documents = generator.normal(size=(6, 8)), generator.normal(size=(25, 8))
    relevant = [{0}, {3, 7}, {11}, {24, 1, 2}, {5}, {13}]
    return queries, documents, relevant


def test_retrieval_metrics_match_hand_computed_ranks():
    queries, documents, relevant = _fixture_vectors()
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    scores = unit(queries) @ unit(documents).T
    recall1, recall10, mrr, ndcg = [], [], [], []
    for q, wanted in enumerate(relevant):
        ranking = sorted(range(len(documents)), key=lambda d: (-scores[q, d], d))
        hits = [d in wanted for d in ranking[:10]]
        recall1.append(sum(hits[:1]) / len(wanted))
        recall10.append(sum(hits) / len(wanted))
        mrr.append(next((1 / (i + 1) for i, hit in enumerate(hits) if hit), 0.0))
        dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(hits) if hit)
        ndcg.append(dcg / sum(1 / math.log2(i + 2) for i in range(min(len(wanted), 10))))
    got = retrieval_metrics(queries, documents, relevant)
    assert got == pytest.approx(
        {"recall@1": np.mean(recall1), "recall@10": np.mean(recall10), "mrr@10": np.mean(mrr), "ndcg@10": np.mean(ndcg)}
    )
    assert 0 < got["mrr@10"] < 1  # the fixture is neither trivial nor hopeless


def test_retrieval_metrics_match_sentence_transformers_evaluator():
    st_evaluation = pytest.importorskip("sentence_transformers.evaluation")
    queries, documents, relevant = _fixture_vectors()
    texts_q, texts_d = [f"q{i}" for i in range(len(queries))], [f"d{i:02d}" for i in range(len(documents))]
    vectors = dict(zip(texts_q + texts_d, np.concatenate([queries, documents]).astype(np.float32)))

    class Lookup:  # the evaluator's model: encodes a text by looking up its fixture vector
        def encode_query(self, texts, **kwargs):
            return torch.tensor(np.stack([vectors[t] for t in texts]))

        encode_document = encode_query

    evaluator = st_evaluation.InformationRetrievalEvaluator(
        dict(zip(texts_q, texts_q)),
        dict(zip(texts_d, texts_d)),
        {q: {texts_d[d] for d in wanted} for q, wanted in zip(texts_q, relevant)},
        accuracy_at_k=[1],
        precision_recall_at_k=[1, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        score_functions={"cosine": pytest.importorskip("sentence_transformers.util").cos_sim},
    )
    theirs = evaluator.compute_metrices(Lookup())["cosine"]
    ours = retrieval_metrics(queries, documents, relevant)
    assert ours["recall@1"] == pytest.approx(theirs["recall@k"][1])
    assert ours["recall@10"] == pytest.approx(theirs["recall@k"][10])
    assert ours["mrr@10"] == pytest.approx(theirs["mrr@k"][10])
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg@k"][10])


def test_contrastive_metrics_merge_repeated_queries_and_keep_filtered_rows_as_documents():
    """Text ids: 0 'q', 1 'a', 2 'r', 3 'b', 4 'x', 5 'c', 6 'dist'. Rows: (q, a) and (q, b) — one query with two
    relevant documents; (r, c) below min_score (flag 0) — c is a document, r no query; 'dist' a distractor."""
    spec = TaskSpec("retrieval", "contrastive")
    ids = np.array([[1, 0, 1], [1, 0, 3], [0, 2, 5], [2, 6, 6]])
    vectors = {0: [1, 0, 0], 1: [0.9, 0.1, 0], 3: [0, 1, 0], 2: [0, 0, 1], 5: [0.95, 0, 0.1], 6: [1, 0, 0.01]}
    outputs = np.array([[vectors[i] for i in row[1:]] for row in ids], dtype=np.float32)
    got = task_io(spec).metrics(spec, outputs, ids)
    assert got["queries"] == 1 and got["documents"] == 3 and got["distractors_documents"] == 4
    # Base ranking of q: c (0.995), a (0.99), b (0): a and b relevant.
    assert got["recall@1"] == 0.0 and got["recall@10"] == 1.0 and got["mrr@10"] == pytest.approx(0.5)
    assert got["distractors_recall@1"] == 0.0 and got["distractors_mrr@10"] == pytest.approx(1 / 3)


# -- Matryoshka ------------------------------------------------------------------------------------------------------


def test_matryoshka_loss_is_the_weighted_mean_over_prefixes(tiny_model, tiny_tokenizer):
    tiny_model.eval()  # no dropout: the three forwards below must see the same embeddings
    tiny_model.config.tasks = [TaskSpec("retrieval", "contrastive").to_dict()]
    texts = ["the film was good .", "the food was bad .", "the plot was boring .", "the phone was fine ."]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    pair = tiny_tokenizer(texts[1:] + texts[:1], padding=True, return_tensors="pt")
    inputs = dict(
        **batch,
        pair_input_ids=pair["input_ids"],
        pair_attention_mask=pair["attention_mask"],
        task_labels={"retrieval": _ids(4)},
    )
    with torch.no_grad():
        plain = tiny_model(**inputs)
        tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_weights = [16, 4], [1.0, 3.0]
        both = tiny_model(**inputs)
    a, p = plain.embeddings, plain.pair_embeddings
    small = in_batch_negatives_loss(
        torch.stack([F.normalize(a[:, :4], dim=-1), F.normalize(p[:, :4], dim=-1)], 1), _ids(4)
    )
    assert float(both.loss) == pytest.approx((float(plain.loss) + 3 * float(small)) / 4, rel=1e-5)
    assert float(small) != pytest.approx(float(plain.loss), rel=1e-3)  # the prefix loss is a different number
    # TaskInputs.truncated: the same prefix, re-normalised.
    cut = TaskInputs(a, p).truncated(4)
    torch.testing.assert_close(cut.embeddings, F.normalize(a[:, :4], dim=-1))


def test_matryoshka_config_is_checked_when_read():
    tasks = [{"name": "d", "type": "distillation", "loss": "cosine"}]
    with pytest.raises(ValueError, match="d \\(loss cosine\\) cannot be taken on a truncated embedding"):
        SentMtlConfig(tasks=tasks, embedding_size=32, matryoshka_dims=[32, 8])
    with pytest.raises(ValueError, match="distinct integers in 1 … embedding_size \\(32\\)"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[64, 8])
    with pytest.raises(ValueError, match="one non-negative weight per dimension"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8], matryoshka_weights=[1.0])
    assert SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8]).matryoshka() == [(32, 1.0), (8, 1.0)]


def test_a_task_with_matryoshka_false_keeps_its_loss_on_the_full_embedding(tiny_model, tiny_tokenizer):
    tiny_model.eval()
    texts = ["the film was good .", "the food was bad .", "the plot was boring .", "the phone was fine ."]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    teacher = torch.randn(4, 24, generator=torch.Generator().manual_seed(0))
    tasks = lambda on: [TaskSpec("d", "distillation", matryoshka=on).to_dict()]  # noqa: E731
    with torch.no_grad():
        tiny_model.config.tasks = tasks(True)
        plain = float(tiny_model(**batch, task_labels={"d": teacher}).loss)  # no matryoshka_dims yet
        tiny_model.config.matryoshka_dims = [16, 4]
        prefixes = float(tiny_model(**batch, task_labels={"d": teacher}).loss)
        tiny_model.config.tasks = tasks(False)
        full_only = float(tiny_model(**batch, task_labels={"d": teacher}).loss)
    assert prefixes != pytest.approx(plain, rel=1e-3)  # the flag's default: the prefixes count
    assert full_only == pytest.approx(plain, rel=1e-6)  # matryoshka: false: the full embedding only
    # A cosine distillation, refused on the prefixes, is accepted on the full embedding only.
    config = SentMtlConfig(
        tasks=[{"name": "d", "type": "distillation", "loss": "cosine", "matryoshka": False}],
        embedding_size=32,
        matryoshka_dims=[32, 8],
    )
    assert not config.task_specs[0].on_prefixes


def test_the_matryoshka_flag_of_a_task_is_checked_and_saved():
    with pytest.raises(ValueError, match=r"matryoshka: false has nothing to switch off \(loss 'cross_entropy'"):
        TaskSpec("c", "classification", labels=["a", "b"], matryoshka=False)
    with pytest.raises(ValueError, match="matryoshka 'no' must be true or false"):
        TaskSpec.from_dict({"name": "d", "type": "distillation", "matryoshka": "no"})
    assert "matryoshka" not in TaskSpec("d", "distillation").to_dict()  # the default leaves saved configs as they were
    saved = TaskSpec("d", "distillation", matryoshka=False).to_dict()
    assert saved["matryoshka"] is False and not TaskSpec.from_dict(saved).on_prefixes


def test_matryoshka_self_distillation_adds_the_prefixes_against_the_full_embedding(tiny_model, tiny_tokenizer):
    from sentmtl.model.task_types import prefix_self_distillation_loss, relational_distillation_loss

    tiny_model.eval()
    # The task's own loss weighs 0, so the term is the whole loss (a small number, not lost in a larger one's rounding).
    tiny_model.config.tasks = [TaskSpec("sts", "similarity", loss_weight=0.0).to_dict()]
    texts = ["the film was good .", "the food was bad .", "the plot was boring .", "the phone was fine ."]
    batch = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    pair = tiny_tokenizer(texts[1:] + texts[:1], padding=True, return_tensors="pt")
    inputs = dict(
        **batch,
        pair_input_ids=pair["input_ids"],
        pair_attention_mask=pair["attention_mask"],
        task_labels={"sts": torch.tensor([0.1, 0.9, 0.4, 0.7])},
    )
    size = tiny_model.config.embedding_size
    with torch.no_grad():
        tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_weights = [size, 8, 4], [1.0, 1.0, 3.0]
        without = tiny_model(**inputs)
        tiny_model.config.matryoshka_self_distillation = 5.0
        with_term = tiny_model(**inputs)
    rows = torch.cat([without.embeddings, without.pair_embeddings])  # every sentence of the batch, both sides
    by_hand = (
        relational_distillation_loss(rows[:, :8], rows) + 3 * relational_distillation_loss(rows[:, :4], rows)
    ) / 4
    assert float(without.loss) == 0 and float(by_hand) > 0
    assert float(with_term.loss) == pytest.approx(5 * float(by_hand), rel=1e-5)
    # The full embedding is the teacher, held fixed: no gradient reaches the dimensions past the longest prefix.
    embeddings = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=-1).requires_grad_()
    prefix_self_distillation_loss(embeddings, [(16, 1.0), (8, 1.0), (4, 1.0)]).backward()
    assert embeddings.grad[:, 8:].abs().max() == 0 and embeddings.grad[:, :8].abs().max() > 0


def test_matryoshka_self_distillation_is_checked_when_read():
    with pytest.raises(ValueError, match="matryoshka_self_distillation without matryoshka_dims"):
        SentMtlConfig(embedding_size=32, matryoshka_self_distillation=1.0)
    with pytest.raises(ValueError, match="matryoshka_self_distillation=-1.0 must be a finite number >= 0"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8], matryoshka_self_distillation=-1.0)
    with pytest.raises(ValueError, match="needs a size below the embedding's \\(32\\) with a weight above 0"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32], matryoshka_self_distillation=1.0)
    with pytest.raises(ValueError, match="needs a size below the embedding's \\(32\\) with a weight above 0"):
        SentMtlConfig(
            embedding_size=32, matryoshka_dims=[32, 8], matryoshka_weights=[1.0, 0.0], matryoshka_self_distillation=1.0
        )
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        SentMtlConfig(embedding_size=32, matryoshka_dims=[32, 8], matryoshka_self_distillation=float("inf"))
    assert (
        SentMtlConfig(
            embedding_size=32, matryoshka_dims=[32, 8], matryoshka_self_distillation=2
        ).matryoshka_self_distillation
        == 2.0
    )


def test_matryoshka_with_cosine_distillation_is_refused_before_anything_loads(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "matryoshka_dims": [256, 64],
                "tasks": [
                    {"name": "d", "type": "distillation", "loss": "cosine", "data": {"train_file": "nowhere.csv"}}
                ],
            }
        )
    )
    with pytest.raises(ValueError, match="cannot be taken on a truncated embedding"):
        parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])


# -- a whole run ---------------------------------------------------------------------------------------------------


def _pair_rows(n, seed):
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, word = TOPICS[i % len(TOPICS)], rng.choice(POSITIVE_WORDS + NEGATIVE_WORDS)
        rows.append(
            {
                "anchor": f"the {topic} was {word} .",
                "positive": f"it is a {word} {topic} !",
                "negative": f"the {rng.choice(TOPICS)} was not {word} .",
                "score": round(rng.random(), 2),
            }
        )
    return rows


def _write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def retrieval_files(tmp_path):
    train = _write_csv(tmp_path / "pairs_train.csv", _pair_rows(60, 0))
    dev = _write_csv(tmp_path / "pairs_dev.csv", _pair_rows(24, 1))
    dev_rows = _pair_rows(24, 1)
    distractors = _write_csv(
        tmp_path / "distractors.csv",
        [{"sentence": f"this {t} is {w} ."} for t in TOPICS for w in POSITIVE_WORDS]
        + [{"sentence": dev_rows[0]["anchor"]}],
    )  # a dev anchor: left out
    rows = synthetic_rows(48)
    labelled = _write_csv(
        tmp_path / "labelled.csv",
        [
            {"sentence": s, "label": ["negative", "positive"][label]}
            for s, label in zip(rows["sentence"], rows["label"])
        ],
    )
    return {"train": train, "dev": dev, "distractors": distractors, "labelled": labelled, "dev_rows": dev_rows}


def _run_file(tmp_path, files, **retrieval):
    task = {
        "name": "retrieval",
        "type": "contrastive",
        "text_column": "anchor",
        "text_pair_column": "positive",
        "data": {"train_file": str(files["train"]), "validation_file": str(files["dev"])},
        **retrieval,
    }
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "matryoshka_dims": [16, 8],
                "tasks": [
                    task,
                    {
                        "name": "classification",
                        "type": "classification",
                        "labels": ["negative", "positive"],
                        "data": {"train_file": str(files["labelled"])},
                    },
                ],
            }
        )
    )
    return run_file


def _flags(tiny_encoder_dir, out, *extra):
    return [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def test_a_contrastive_task_trains_beside_a_head_and_is_measured(tiny_encoder_dir, retrieval_files, tmp_path, capsys):
    run_file = _run_file(
        tmp_path,
        retrieval_files,
        negative_columns=["negative"],
        min_score=0.3,
        distractors={"file": str(retrieval_files["distractors"])},
        batch_size=12,
        batches_per_epoch=2,
    )
    out = tmp_path / "run"
    result = run(*parse_args([str(run_file), *_flags(tiny_encoder_dir, out)]))
    dev = retrieval_files["dev_rows"]
    queries = {r["anchor"] for r in dev if r["score"] >= 0.3}
    documents = {r["positive"] for r in dev} | {r["negative"] for r in dev}  # rows below min_score stay documents
    assert result["eval_retrieval_queries"] == len(queries)
    assert result["eval_retrieval_documents"] == len(documents)
    distractors = {f"this {t} is {w} ." for t in TOPICS for w in POSITIVE_WORDS}  # the dev anchor is left out
    assert result["eval_retrieval_distractors_documents"] == len(documents | distractors)
    for name in ("recall@1", "recall@10", "mrr@10", "ndcg@10", "distractors_recall@1"):
        assert 0.0 <= result[f"eval_retrieval_{name}"] <= 1.0
    assert "eval_classification_accuracy" in result.metrics
    # 2 fixed contrastive batches per epoch beside the classification batches, for 2 epochs.
    assert result.train_metrics["global_step"] == 2 * (2 + math.ceil(39 / 8))
    printed = capsys.readouterr().out
    table = printed[printed.index("Results on the held-out rows") :]
    assert re.search(rf"retrieval\s+queries\s+{len(queries)}\n", table)  # a count, not 17.0000
    assert re.search(r"retrieval\s+distractors_recall@1\s+\d\.\d{4}\n", table)
    card = (out / "README.md").read_text()
    assert "retrieval pairs with in-batch negatives; in_batch, scale 20" in card and "truncate_dim=8" in card
    saved = json.loads((out / "config.json").read_text())
    assert saved["matryoshka_dims"] == [16, 8]


def test_truncated_embeddings_agree_across_encode_run_embed_and_the_export(tiny_encoder_dir, retrieval_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    out = tmp_path / "run"
    assert (
        main([str(_run_file(tmp_path, retrieval_files)), *_flags(tiny_encoder_dir, out, "--num_train_epochs", "1")])
        == 0
    )
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    sentences = ["the movie was great .", "the food was very awful .", "the phone was fine ."]
    full = sentmtl.encode(model, sentences, tokenizer, precision="fp32")
    small = sentmtl.encode(model, sentences, tokenizer, precision="fp32", truncate_dim=8)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(small, expected, atol=1e-6)
    assert (
        run_embed.main(
            [
                "--model_name_or_path",
                str(out),
                "--truncate_dim",
                "8",
                "--output_file",
                str(tmp_path / "e.npy"),
                "--precision",
                "fp32",
                *sentences,
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), small, atol=1e-6)
    assert (
        run_embed.main(
            [
                "--model_name_or_path",
                str(out),
                "--export_sentence_transformer",
                str(tmp_path / "st"),
                "--truncate_dim",
                "8",
            ]
        )
        == 0
    )
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(sentences)
    assert exported.shape == (3, 8)
    np.testing.assert_allclose(exported, small, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim=17"):
        sentmtl.encode(model, sentences, tokenizer, truncate_dim=17)
    # Without the package: the config (contrastive task, Matryoshka) and the forward with pairs load from the folder.
    script = (
        "import sys, json, torch; sys.modules['sentmtl'] = None\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "b = t(json.loads(sys.argv[2]), padding=True, return_tensors='pt')\n"
        "with torch.no_grad(): o = m(**b, pair_input_ids=b['input_ids'], pair_attention_mask=b['attention_mask'])\n"
        "print(json.dumps({'dims': m.config.matryoshka_dims, 'shape': list(o.task_outputs['retrieval'].shape),"
        " 'emb': o.embeddings.tolist()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(sentences)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    remote = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert remote["dims"] == [16, 8] and remote["shape"] == [3, 2, 16]
    np.testing.assert_allclose(np.array(remote["emb"]), full, atol=1e-5)


# -- data errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column, line", [("anchor", 3), ("positive", 5), ("negative", 4)])
def test_a_row_without_a_text_names_file_line_and_column(tiny_encoder_dir, retrieval_files, tmp_path, column, line):
    rows = _pair_rows(6, 0)
    rows[line - 2][column] = ""
    _write_csv(retrieval_files["train"], rows)
    run_file = _run_file(tmp_path, retrieval_files, negative_columns=["negative"])
    with pytest.raises(ValueError, match=f"pairs_train.csv \\(train\\), line {line}, column '{column}': empty text"):
        run(*parse_args([str(run_file), *_flags(tiny_encoder_dir, tmp_path / "out")]))


def test_a_score_that_is_not_a_number_names_its_place(tiny_encoder_dir, retrieval_files, tmp_path):
    rows = _pair_rows(6, 0)
    rows[2]["score"] = "high"
    _write_csv(retrieval_files["train"], rows)
    run_file = _run_file(tmp_path, retrieval_files, min_score=0.5)
    with pytest.raises(ValueError, match="line 4, column 'score': 'high' is not a score, and min_score 0.5 needs one"):
        run(*parse_args([str(run_file), *_flags(tiny_encoder_dir, tmp_path / "out")]))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("min_score", 0.5, "min_score: only for contrastive tasks"),
        ("negative_columns", ["n"], "negative_columns: only for contrastive tasks"),
        ("distractors", {"stsb": "x"}, "distractors: only for contrastive tasks"),
        ("distractors", {"path": "x"}, "use {stsb: folder} or {file: path, columns"),
        ("batch_size", 0, "batch_size 0 must be a positive integer"),
        ("min_score", "high", "min_score 'high' must be a number"),
        ("distractors", {"file": "d.csv", "columns": []}, "distractors columns []: a non-empty list"),
        ("max_samples", 10, "max_samples would cut pairs that share a text apart"),
    ],
)
def test_retrieval_fields_are_checked_when_the_run_file_is_read(tmp_path, field, value, message):
    task = {"name": "t", "type": "similarity", "data": {"train_file": "x.csv"}, field: value}
    if not message.endswith("only for contrastive tasks"):
        task["type"] = "contrastive"
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"tasks": [task]}))
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])


def test_distractors_need_evaluation_data_of_the_source(tiny_encoder_dir, retrieval_files, tmp_path):
    run_file = _run_file(tmp_path, retrieval_files, distractors={"file": str(retrieval_files["distractors"])})
    config = yaml.safe_load(run_file.read_text())
    del config["tasks"][0]["data"]["validation_file"]
    run_file.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="distractors are added to a source's own evaluation data"):
        run(*parse_args([str(run_file), *_flags(tiny_encoder_dir, tmp_path / "out")]))


def test_the_split_keeps_each_hard_negative_on_one_side(tiny_encoder_dir, retrieval_files, tmp_path):
    """A source without evaluation data of its own is split leak-free over every text of a row, hard negatives
    included: a train row's hard negative is never an evaluation query or document."""
    from sentmtl.data.sources import build_sources

    run_file = _run_file(tmp_path, retrieval_files, negative_columns=["negative"])
    config = yaml.safe_load(run_file.read_text())
    del config["tasks"][0]["data"]["validation_file"]
    run_file.write_text(yaml.safe_dump(config))
    _, data_args, _ = parse_args([str(run_file), *_flags(tiny_encoder_dir, tmp_path / "out")])
    source = build_sources(data_args.tasks, data_args, 42)[0]
    assert "_negative_0" not in source.train.column_names
    train_texts = {t for row in source.train for t in (row["text"], row["text_pair"], *row["negatives"])}
    eval_texts = {t for row in source.eval for t in (row["text"], row["text_pair"], *row["negatives"])}
    assert source.eval.num_rows > 0 and not train_texts & eval_texts


def test_a_continued_matryoshka_model_refuses_an_added_cosine_distillation(tiny_model, tiny_tokenizer, tmp_path):
    from sentmtl.serving.loading import build_model
    from sentmtl.training.arguments import ModelArguments

    tiny_model.config.matryoshka_dims = [16, 8]
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    tasks = [*tiny_model.tasks, TaskSpec("d", "distillation", loss="cosine")]
    with pytest.raises(ValueError, match="d \\(loss cosine\\) cannot be taken on a truncated embedding"):
        build_model(ModelArguments(model_name_or_path=str(tmp_path / "m")), tasks)


def test_the_self_distillation_weight_comes_from_a_run_file_and_waits_for_the_sizes(tmp_path, tiny_encoder_dir):
    run_file = tmp_path / "run.yaml"
    tasks = [{"name": "sts", "type": "similarity", "data": {"train_file": "nowhere.csv"}}]
    run_file.write_text(
        yaml.safe_dump({"matryoshka_dims": [256, 64], "matryoshka_self_distillation": 10, "tasks": tasks})
    )
    model_args, _, _ = parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])
    assert model_args.matryoshka_self_distillation == 10.0
    assert model_args.config_overrides()["matryoshka_self_distillation"] == 10.0  # what a fresh model is built with
    # Without sizes the weight may be for a checkpoint's: read, then checked when the model is built.
    run_file.write_text(yaml.safe_dump({"matryoshka_self_distillation": 10, "tasks": tasks}))
    model_args, _, _ = parse_args([str(run_file), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="matryoshka_self_distillation without matryoshka_dims"):
        sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), **model_args.config_overrides())
    with pytest.raises(ValueError, match="matryoshka_self_distillation=-1.0 must be a finite number >= 0"):
        parse_args([str(run_file), "--output_dir", str(tmp_path / "out"), "--matryoshka_self_distillation", "-1"])


def test_a_continued_run_sets_its_own_self_distillation_weight(tiny_model, tiny_tokenizer, tmp_path):
    from sentmtl.serving.loading import build_model
    from sentmtl.training.arguments import ModelArguments
    from sentmtl.training.model_card import build_model_card

    tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_self_distillation = [16, 8], 10.0
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    card = build_model_card(tiny_model.config, {}, {})
    assert "+ 10 × Matryoshka self-distillation" in card and "self-distillation, weight 10" in card
    # A training setting, like the tasks' loss weights: the run's value, not the checkpoint's (0 when unset).
    unset, _ = build_model(ModelArguments(model_name_or_path=str(tmp_path / "m")), tiny_model.tasks)
    assert unset.config.matryoshka_self_distillation == 0.0
    five, _ = build_model(
        ModelArguments(model_name_or_path=str(tmp_path / "m"), matryoshka_self_distillation=5.0), tiny_model.tasks
    )
    assert five.config.matryoshka_self_distillation == 5.0
    # Checked against the checkpoint's sizes: none there, so the weight has nothing to act on.
    tiny_model.config.matryoshka_dims, tiny_model.config.matryoshka_self_distillation = None, 0.0
    tiny_model.save_pretrained(tmp_path / "plain")
    tiny_tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="matryoshka_self_distillation without matryoshka_dims"):
        build_model(
            ModelArguments(model_name_or_path=str(tmp_path / "plain"), matryoshka_self_distillation=5.0),
            tiny_model.tasks,
        )


def test_prepare_builds_a_contrastive_table_for_the_trainer(tiny_encoder_dir, tmp_path):
    import datasets

    from sentmtl.data.batching import prepare
    from sentmtl.training.arguments import SentMtlTrainingArguments
    from sentmtl.training.trainer import SentMtlTrainer

    tiny_model, tiny_tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[TaskSpec("retrieval", "contrastive").to_dict()]
    )
    rows = _pair_rows(24, 0)
    table = datasets.Dataset.from_dict({key: [r[key] for r in rows] for key in ("anchor", "positive", "negative")})
    data = prepare(
        table,
        tiny_model.tasks,
        tiny_tokenizer,
        text_column="anchor",
        text_pair_column="positive",
        negative_columns=["negative"],
    )
    args = SentMtlTrainingArguments(
        output_dir=str(tmp_path / "t"),
        max_steps=2,
        per_device_train_batch_size=8,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        eval_strategy="no",
    )
    trainer = SentMtlTrainer(
        model=tiny_model, args=args, train_dataset=data, eval_dataset=data, processing_class=tiny_tokenizer
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_retrieval_queries"] == len({r["anchor"] for r in rows}) and "eval_retrieval_mrr@10" in metrics
