"""sentmtl/training/report.py: the reliability diagram, for two classes and for K."""

import numpy as np
import pytest

from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import reliability_points
from sentmtl.training.report import plot_reliability


def test_reliability_diagram_is_drawn(tmp_path):
    task = TaskSpec(name="classification", type="classification", labels=["negative", "positive"])
    logits = np.random.default_rng(0).normal(size=(200, 2)) * 3
    labels = np.random.default_rng(1).integers(0, 2, 200)
    points = reliability_points(task, logits, labels)
    assert points[0].min() >= 0.5 and set(np.unique(points[1])) <= {0.0, 1.0}
    path = plot_reliability(*points, tmp_path / "reliability.png", task)
    assert path.is_file() and path.stat().st_size > 5000
    assert reliability_points(TaskSpec(name="d", type="distillation"), logits, labels) is None


def test_the_reliability_diagram_of_four_classes_shows_confidences_below_one_half(tmp_path, monkeypatch):
    """Issue #20, item 14: a reliability diagram of K classes shows top-label confidences down to 1 / K."""
    import matplotlib.axes

    from sentmtl.training.report import plot_reliability

    limits = []
    original = matplotlib.axes.Axes.set_xlim
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_xlim", lambda self, *a, **k: limits.append(a) or original(self, *a, **k)
    )
    task = TaskSpec("topic", "classification", labels=["a", "b", "c", "d"])
    logits = np.array([[0.5, 0.4, 0.3, 0.2], [0.1, 0.9, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.2]])
    confidences, outcomes = reliability_points(task, logits, np.array([0, 1, 2, 2]))
    assert confidences.min() < 0.5
    plot_reliability(confidences, outcomes, tmp_path / "r.png", task)
    low, high = limits[-1]
    assert low == pytest.approx(0.25) and high == 1 and (confidences >= low).all()
