"""Calibration (#14): the metrics by hand, the reliability diagram, and heads that can be confident."""

import numpy as np
import pytest
import torch

from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import reliability_points
from sentmtl.tasks.metrics import (
    calibration_metrics,
    expected_calibration_error,
    reliability_bins,
    score_metrics,
)
from sentmtl.training.report import plot_reliability


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


def test_reliability_diagram_is_drawn(tmp_path):
    task = TaskSpec(name="classification", type="classification", labels=["negative", "positive"])
    logits = np.random.default_rng(0).normal(size=(200, 2)) * 3
    labels = np.random.default_rng(1).integers(0, 2, 200)
    points = reliability_points(task, logits, labels)
    assert points[0].min() >= 0.5 and set(np.unique(points[1])) <= {0.0, 1.0}
    path = plot_reliability(*points, tmp_path / "reliability.png", task)
    assert path.is_file() and path.stat().st_size > 5000
    assert reliability_points(TaskSpec(name="d", type="distillation"), logits, labels) is None


def _train_heads_on_separable_data(model, steps=100):
    """Only the task heads and projection train, on two well-separated synthetic clusters."""
    torch.manual_seed(0)
    x = torch.randint(5, 20, (64, 6))
    labels = (torch.arange(64) % 2).long()
    x[labels == 1, 1:3] = 7  # a token pattern that decides the class
    x[labels == 0, 1:3] = 12
    batch = {
        "input_ids": x,
        "attention_mask": torch.ones_like(x),
        "task_labels": {"classification": labels, "sentiment": labels.float()},
    }
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=batch["attention_mask"])
    return out.logits.softmax(-1).max(-1).values, out.sentiment_scores


@pytest.mark.parametrize("scale", [20.0, None])
def test_trained_heads_can_be_confident_only_with_a_logit_scale(tiny_encoder_dir, scale):
    """The heads read unit-norm embeddings: without a scale their logits are bounded by the weight norms, which
    grow slowly (here confidence ≈ 0.70 after 100 steps at 1e-3, the Task B score within 0.39 – 0.61); with the
    learnable scale the same training exceeds 0.95 confidence and spans the score's range."""
    import sentmtl

    torch.manual_seed(0)
    model, _ = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, head_logit_scale=scale, distillation_weight=0
    )
    confidence, scores = _train_heads_on_separable_data(model)
    if scale:
        assert confidence.min() > 0.95
        assert scores.min() < 0.05 and scores.max() > 0.95
    else:
        assert confidence.max() < 0.9


# -- weight averaging (EMA) ------------------------------------------------------------------------------------------


def test_ema_follows_the_warmed_up_decay_and_ends_training_on_the_average():
    from types import SimpleNamespace

    from sentmtl.training.callbacks import WeightAveragingCallback

    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    callback = WeightAveragingCallback(0.9)
    callback.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    expected = 0.0
    for step in range(1, 30):
        model.weight.data.fill_(float(step))  # what an optimizer step would do
        state = SimpleNamespace(global_step=step)
        callback.on_step_end(None, state, None, model=model)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * step
    callback.on_train_end(None, state, None, model=model)
    assert model.weight.item() == pytest.approx(expected, rel=1e-6)
    assert 20 < expected < 29  # lags the last weights, as an average should
    with pytest.raises(ValueError, match="must be in"):
        WeightAveragingCallback(1.0)


def test_ema_resumed_run_ends_on_the_uninterrupted_average(tiny_encoder_dir, synthetic_csv, tmp_path):
    """The average is saved with each checkpoint and continued from it: interrupted + resumed = uninterrupted."""
    import signal

    from conftest import tiny_run_flags
    from test_faults import SignalAtStep, run_in_process

    from sentmtl.training.checkpoints import latest_checkpoint
    from sentmtl.training.run import RunInterrupted

    ema = ("--ema_decay", "0.8")
    reference = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "reference", *ema))
    plain = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "plain"))
    assert reference["eval_loss"] != pytest.approx(plain["eval_loss"], abs=1e-6)  # the average is what was evaluated
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        run_in_process(
            tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *ema), callbacks=[SignalAtStep(10, signal.SIGINT)]
        )
    assert (latest_checkpoint(out) / "ema_weights.pt").is_file()
    resumed = run_in_process(
        tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *ema, "--resume_from_checkpoint", "auto")
    )
    for key in ("eval_loss", "eval_classification_accuracy", "eval_sentiment_mse"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    # A checkpoint saved without the average cannot continue one.
    other = tmp_path / "no_ema"
    with pytest.raises(RunInterrupted):
        run_in_process(
            tiny_run_flags(tiny_encoder_dir, synthetic_csv, other), callbacks=[SignalAtStep(10, signal.SIGINT)]
        )
    with pytest.raises(ValueError, match="has no ema_weights.pt"):
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, other, *ema, "--resume_from_checkpoint", "auto"))


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
