"""sentmtl/tasks/io.py: label names to ids (digits, case, numbers), each task type's metrics by hand (binary classes
named, soft scores, rows without a target left out, retrieval queries merged)."""

import numpy as np
import pytest
from helpers import write_csv

from sentmtl.data.plan import tasks_from_flags
from sentmtl.data.sources import TARGET_PREFIX, build_sources
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import LabelMap, reliability_points, task_io, task_metrics
from sentmtl.training.run import parse_args


def test_digit_and_case_class_names_get_the_right_ids(tmp_path):
    """Issue #20, item 1 (one label rule): label names that are digits or differ by case get their own ids, never
    a number read as an id; --class_names follows the same rule."""
    stars = LabelMap(["1", "2", "3", "4", "5"])
    assert [stars(v, "x") for v in (1, 2, 3, 4, 5, "5", 5.0)] == [0, 1, 2, 3, 4, 4, 4]  # names, not ids
    flipped = LabelMap(["1", "0"])
    assert flipped(1, "x") == 0 and flipped("0", "x") == 1
    cased = LabelMap(["B", "b", "c"])
    assert [cased(v, "x") for v in ("B", "b", "C", " c ")] == [0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"f.csv, line 3: label 'ab' matches \['Ab', 'aB'\] when case"):
        LabelMap(["Ab", "aB"])("ab", "f.csv, line 3")
    with pytest.raises(
        ValueError, match=r"label 7 is not one of the names \['1', '2', '3', '4', '5'\] \(numbers are names"
    ):
        stars(7, "x")
    assert LabelMap(["neg", "pos"])(1, "x") == 1  # no name is an integer: an integer is a class id
    # Multilabel takes the same rule.
    tags = TaskSpec("tags", "multilabel", labels=["1", "0"])
    assert task_io(tags).parse(tags, ["1", "0,1", ""], lambda row: f"row {row}")[:2] == [[1.0, 0.0], [1.0, 1.0]]
    # The --class_names path is a task definition like any other: star ratings 1..5 map to their own names, and the
    # derived score is id / (K − 1).
    path = write_csv(
        tmp_path / "stars.csv", ["sentence", "label"], [[f"the film was good {i} .", i] for i in range(1, 6)] * 4
    )
    model_args, data_args, training_args = parse_args(
        [
            "--train_file",
            str(path),
            "--class_names",
            "1",
            "2",
            "3",
            "4",
            "5",
            "--output_dir",
            str(tmp_path / "o"),
            "--use_cpu",
            "true",
        ]
    )
    source = build_sources(tasks_from_flags(model_args, data_args, training_args), data_args, 0)[0]
    rows = source.train.to_list() + source.eval.to_list()
    for row in rows:
        star = int(row["text"].split()[-2])
        assert row[TARGET_PREFIX + "classification"] == star - 1
        assert row[TARGET_PREFIX + "sentiment"] == pytest.approx((star - 1) / 4)


def test_float_like_label_names_match_by_number():
    """Found reviewing the #20 change: label names like `0.5`, `1.0` match a value by number."""
    half_stars = LabelMap(["0.5", "1.0", "1.5", "2.0", "2.5"])
    assert [half_stars(v, "x") for v in (2.0, 1.0, "2", 0.5, np.float32(1.5))] == [3, 1, 3, 0, 2]
    with pytest.raises(ValueError, match="numbers are names here, not ids"):
        half_stars(4, "x")


def test_task_metrics_against_hand_computed_values():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    # predicted:        0            1            1            0            1            0
    labels = np.array([0, 1, 0, 1, 1, 0])
    domains = np.array([0, 0, 1, 1, 2, 2])
    scores = labels.astype(float)
    predicted_scores = np.array([0.2, 0.9, 0.6, 0.4, 0.8, 0.1])
    task_a = TaskSpec("classification", "classification", labels=["negative", "positive"])
    m = task_io(task_a).metrics(task_a, logits, labels, domains, ["amazon", "imdb", "yelp"])
    # TP = 2 (rows 1, 4), FP = 1 (row 2), FN = 1 (row 3), TN = 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert (
        m["precision"] == pytest.approx(2 / 3)
        and m["recall"] == pytest.approx(2 / 3)
        and m["f1"] == pytest.approx(2 / 3)
    )
    assert m["macro_f1"] == pytest.approx(2 / 3)  # both classes: P = R = 2/3
    assert (m["confusion_0_0"], m["confusion_0_1"], m["confusion_1_0"], m["confusion_1_1"]) == (2, 1, 1, 2)
    assert (m["accuracy_amazon"], m["accuracy_imdb"], m["accuracy_yelp"]) == (1.0, 0.0, 1.0)
    task_b = TaskSpec("sentiment", "score")
    b = task_io(task_b).metrics(task_b, np.log(predicted_scores / (1 - predicted_scores)), scores)
    m = {**m, **{f"sentiment_{k}": v for k, v in b.items()}}
    assert m["sentiment_mse"] == pytest.approx(np.mean((predicted_scores - scores) ** 2))
    assert m["sentiment_mae"] == pytest.approx(np.mean(np.abs(predicted_scores - scores)))
    assert m["sentiment_accuracy"] == pytest.approx(4 / 6)  # rows 2 and 3 wrong
    assert m["sentiment_roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (positive, negative) pairs ordered right
    assert m["sentiment_brier"] == pytest.approx(m["sentiment_mse"])
    # Calibration: softmax top-label confidences, log loss of the true class, and 15-bin ECE.
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    true_p = probabilities[np.arange(6), labels]
    assert m["log_loss"] == pytest.approx(-np.log(true_p).mean())
    assert m["confidence"] == pytest.approx(probabilities.max(1).mean())
    assert 0 < m["ece"] <= 1


def test_binary_precision_recall_f1_name_their_class():
    """Issue 31, finding 5: with two classes precision / recall / F1 are class id 1's whatever its name; the keys, the
    table and the card now name it (the unnamed keys stay as aliases)."""
    from sentmtl.training.report import format_metrics_table

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # predicted 0, 1, 1, 0
    labels = np.array([0, 1, 0, 0])  # id 1 predicted twice, right once: its precision 1/2, recall 1
    task = TaskSpec("tone", "classification", labels=["good", "bad"])  # id 1 is "bad", not a positive class
    m = task_io(task).metrics(task, logits, labels)
    assert m["precision_bad"] == m["precision"] == pytest.approx(1 / 2)
    assert m["recall_bad"] == m["recall"] == 1.0 and m["f1_bad"] == m["f1"] == pytest.approx(2 / 3)
    table = format_metrics_table({f"eval_tone_{k}": v for k, v in m.items()}, [task])
    assert "f1_bad" in table and "precision_bad" in table and " f1 " not in table  # the card uses the same rows
    assert task_io(task).shown_for(TaskSpec("t", "classification", labels=["a", "b", "c"])).count("f1") == 1  # macro


def test_binary_score_metrics_are_not_reported_for_soft_targets():
    """Issue #20, item 9: a score task's binary metrics (Brier, ECE, ROC AUC, accuracy) only for 0 / 1 targets."""
    score = TaskSpec("s", "score")
    soft = np.array([0.2, 0.4, 0.6, 0.8])
    perfect = np.log(soft / (1 - soft))
    metrics = task_metrics(score, perfect, soft)
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-12) and metrics["spearman"] == pytest.approx(1.0)
    assert not {"brier", "ece", "roc_auc", "accuracy"} & set(metrics)
    assert reliability_points(score, perfect, soft) is None
    binary = task_metrics(score, np.array([-2.0, 2.0, -1.0, 3.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert binary["roc_auc"] == 1.0 and "brier" in binary and "ece" in binary


def test_rows_without_the_task_target_are_left_out_of_its_metrics():
    """-100 (classification) and NaN (scores) mark rows that do not carry the task: the losses skip them, and so
    must the metrics (a -100 label would otherwise index the probabilities from the end)."""
    from sentmtl.tasks.io import task_metrics

    task = TaskSpec(name="classification", type="classification", labels=["negative", "positive"])
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0], [0.0, 1.0]])
    m = task_metrics(task, logits, np.array([0, 1, -100, 1]), np.array([0, 1, 2, 2]), ["amazon", "imdb", "yelp"])
    assert m["accuracy"] == 1.0 and m["confusion_0_0"] + m["confusion_1_1"] == 3
    assert m["accuracy_yelp"] == 1.0  # the masked yelp row (predicted 0) is not counted
    score = TaskSpec(name="sentiment", type="score")
    m = task_metrics(score, np.array([-3.0, 3.0, 0.0, 2.0]), np.array([0.0, 1.0, np.nan, 1.0]))
    kept = 1 / (1 + np.exp(-np.array([-3.0, 3.0, 2.0])))  # the three labelled rows' scores
    assert len(reliability_points(task, logits, np.array([0, 1, -100, 1]))[0]) == 3  # the diagram skips it too
    assert len(reliability_points(score, np.array([-3.0, 3.0, 0.0, 2.0]), np.array([0.0, 1.0, np.nan, 1.0]))[0]) == 3
    assert m["roc_auc"] == 1.0 and m["mse"] == pytest.approx(np.mean((kept - [0.0, 1.0, 1.0]) ** 2))


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


def test_contrastive_metrics_take_a_query_vector_from_the_anchors_and_a_document_vector_from_the_documents():
    """Under prompts an id is a sentence read two ways: 'good film' (id 0) asks for 'great movie' (1) and is its
    document. A query's vector is its anchor's (query-prompted), a document's its positive's: mixing them would
    rank the query's own query vector first (recall@1 0)."""
    spec = TaskSpec("retrieval", "contrastive")
    ids = np.array([[1, 0, 1], [1, 1, 0]])
    query = {0: [0.6, 0, 0, 0.8], 1: [0, 0.6, 0.8, 0]}
    document = {0: [0, 0, 1, 0], 1: [0, 0, 0, 1]}
    outputs = np.array([[query[a], document[p]] for _, a, p in ids], dtype=np.float32)
    got = task_io(spec).metrics(spec, outputs, ids)
    assert got["queries"] == 2 and got["documents"] == 2
    assert got["recall@1"] == 1.0 and got["mrr@10"] == 1.0


@pytest.mark.parametrize("flag", ["class_ids", "teacher_targets", "from_texts", "distinct_in_batch"])
def test_a_type_setting_a_removed_flag_is_refused(flag):
    """Review of the type-owned data (F2): 0.2's capability flags are no longer read; a user type that sets one
    would silently lose its behaviour (an unstratified split, no teacher vectors), so registering it fails."""
    from sentmtl.tasks.io import TASK_IO, TaskIO, register_task_io

    legacy = type("LegacyIO", (TaskIO,), {"name": "legacy", flag: True})
    with pytest.raises(TypeError, match=rf"LegacyIO sets {flag}, a TaskIO flag that sentmtl no longer reads"):
        register_task_io(legacy)
    assert "legacy" not in TASK_IO
