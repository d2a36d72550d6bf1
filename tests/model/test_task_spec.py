"""sentmtl/model/task_spec.py: a task's fields are checked with clear messages (type, loss, labels, scale,
matryoshka) and saved only where they differ from the default."""

import pytest

from sentmtl.model.task_spec import TaskSpec


def test_task_specs_are_validated_with_clear_messages():
    with pytest.raises(ValueError, match=r"unknown task field\(s\) \['lables'\]; valid: name, type, labels"):
        TaskSpec.from_dict({"name": "a", "type": "classification", "lables": ["x", "y"]})
    with pytest.raises(ValueError, match="type 'ranking' is not supported; choose one of classification"):
        TaskSpec("a", "ranking")
    with pytest.raises(ValueError, match="loss 'mse' does not fit a similarity task; choose one of cosent, cosine_mse"):
        TaskSpec("a", "similarity", loss="mse")
    with pytest.raises(ValueError, match="needs 2\\+ distinct label names"):
        TaskSpec("a", "classification", labels=["x"])
    with pytest.raises(ValueError, match="must be an identifier"):
        TaskSpec("my task", "score")


def test_scale_is_only_for_losses_that_use_one():
    assert TaskSpec("r", "contrastive", scale=30.0).scale == 30.0
    assert "scale" not in TaskSpec("c", "classification", labels=["a", "b"]).to_dict()  # configs stay as they were
    with pytest.raises(ValueError, match="only these losses take one: similarity \\(cosent\\); contrastive"):
        TaskSpec("c", "classification", labels=["a", "b"], scale=2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        TaskSpec("r", "contrastive", scale=0.0)


def test_the_matryoshka_flag_of_a_task_is_checked_and_saved():
    with pytest.raises(ValueError, match=r"matryoshka: false has nothing to switch off \(loss 'cross_entropy'"):
        TaskSpec("c", "classification", labels=["a", "b"], matryoshka=False)
    with pytest.raises(ValueError, match="matryoshka 'no' must be true or false"):
        TaskSpec.from_dict({"name": "d", "type": "distillation", "matryoshka": "no"})
    assert "matryoshka" not in TaskSpec("d", "distillation").to_dict()  # the default leaves saved configs as they were
    saved = TaskSpec("d", "distillation", matryoshka=False).to_dict()
    assert saved["matryoshka"] is False and not TaskSpec.from_dict(saved).on_prefixes
