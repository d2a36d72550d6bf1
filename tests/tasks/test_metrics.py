"""sentmtl/tasks/metrics.py: calibration by hand (ECE, reliability bins, log loss) and the retrieval metrics, against
hand-computed ranks and sentence-transformers' evaluator."""

import math

import numpy as np
import pytest
import torch

from sentmtl.tasks.metrics import (
    calibration_metrics,
    expected_calibration_error,
    reliability_bins,
    retrieval_metrics,
    score_metrics,
)


def test_ece_by_hand():
    # Ten predictions at 0.9: nine right is perfect calibration, five right is off by 0.4.
    assert expected_calibration_error([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 10, [1] * 5 + [0] * 5) == pytest.approx(0.4)
    # Two bins, weighted by size: 4 at 0.55 with 2 right (|0.5 − 0.55|), 6 at 0.95 with 6 right (|1 − 0.95|).
    ece = expected_calibration_error([0.55] * 4 + [0.95] * 6, [1, 1, 0, 0] + [1] * 6)
    assert ece == pytest.approx((4 * 0.05 + 6 * 0.05) / 10)


def test_reliability_bins_are_15_equal_widths_and_keep_confidence_one():
    bins = reliability_bins([0.0, 0.5, 0.999, 1.0], [0, 1, 1, 1])
    assert [(round(b["low"] * 15), b["count"]) for b in bins] == [(0, 1), (7, 1), (14, 2)]  # 1.0 in the last bin
    assert bins[-1]["confidence"] == pytest.approx(0.9995) and bins[-1]["rate"] == 1.0


def test_constant_confidence_is_not_rewarded_by_log_loss():
    """A model that says 0.9 about everything can have a small ECE; log loss still tells it from a sharp one."""
    labels = np.array([0, 1] * 50)
    hedging = np.where(labels[:, None] == np.arange(2), 0.9, 0.1)
    hedging[:10] = hedging[:10, ::-1]  # 90% right at 0.9 confidence
    sharp = np.where(labels[:, None] == np.arange(2), 0.999, 0.001)
    sharp[:10] = [0.5, 0.5]
    a, b = calibration_metrics(labels, hedging), calibration_metrics(labels, sharp)
    assert a["ece"] == pytest.approx(0.0, abs=1e-9)
    assert b["log_loss"] < a["log_loss"]
    assert a["confidence"] == pytest.approx(0.9)


def test_score_ece_reads_the_score_as_the_positive_probability():
    targets = np.array([1.0] * 8 + [0.0] * 2)
    m = score_metrics(targets, np.full(10, 0.8))  # says 0.8, 80% positive: calibrated
    assert m["ece"] == pytest.approx(0.0) and m["brier"] == pytest.approx(0.16)
    m = score_metrics(targets, np.full(10, 0.3))
    assert m["ece"] == pytest.approx(0.5)


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
