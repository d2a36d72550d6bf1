"""sentmtl/model/task_types.py, through its names: the similarity type's losses (CoSENT, cosine MSE) reward the right
order, the relational distillation loss is scale-free. The loss functions by hand: tests/model/test_losses.py."""

import torch

from sentmtl.model.task_spec import TaskSpec


def test_cosent_and_cosine_mse_reward_the_right_order():
    from sentmtl.model.task_types import cosent_loss, relational_distillation_loss, task_type

    scores = torch.tensor([0.9, 0.1, 0.5])
    assert cosent_loss(torch.tensor([0.8, 0.1, 0.4]), scores) < cosent_loss(torch.tensor([0.1, 0.8, 0.4]), scores)
    assert task_type("similarity").loss(TaskSpec("s", "similarity", loss="cosine_mse"), scores.clone(), scores) == 0
    teacher = torch.randn(5, 8)
    assert relational_distillation_loss(teacher * 3.0, teacher) < 1e-10  # scale-free: only the structure counts
    assert relational_distillation_loss(torch.randn(5, 8), teacher) > 0.05
