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


def _complete_cases():
    """(spec, output, targets) for every type and loss that takes `complete`, every row with its target."""
    g = torch.Generator().manual_seed(0)
    n = 6
    yield (
        TaskSpec("c", "classification", labels=["a", "b", "c"]),
        torch.randn(n, 3, generator=g),
        torch.randint(0, 3, (n,), generator=g),
    )
    yield (
        TaskSpec("c", "classification", labels=["a", "b"], label_smoothing=0.1),
        torch.randn(n, 2, generator=g),
        torch.randint(0, 2, (n,), generator=g),
    )
    yield (
        TaskSpec("m", "multilabel", labels=["a", "b", "c"]),
        torch.randn(n, 3, generator=g),
        torch.randint(0, 2, (n, 3), generator=g).float(),
    )
    for loss in ("bce", "mse"):
        yield TaskSpec("s", "score", loss=loss), torch.randn(n, generator=g), torch.rand(n, generator=g)
    yield TaskSpec("r", "regression"), torch.randn(n, generator=g), torch.randn(n, generator=g)
    yield TaskSpec("p", "similarity", loss="cosine_mse"), torch.rand(n, generator=g), torch.rand(n, generator=g)
    yield TaskSpec("p", "similarity", loss="cosent"), torch.rand(n, generator=g), torch.rand(n, generator=g)
    yield TaskSpec("d", "distillation", loss="cosine"), torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
    yield TaskSpec("d", "distillation"), torch.randn(n, 4, generator=g), torch.randn(n, 8, generator=g)


def test_a_complete_batch_gives_the_masked_loss_and_gradient():
    """`complete=True` (the collator found a target on every row: `complete_tasks`) takes a plain mean: the same loss
    and gradient as the masked path on the same rows."""
    import pytest

    from sentmtl.model.losses import l2_normalize

    seen = set()
    for spec, output, targets in _complete_cases():
        kind = spec.kind
        assert kind.takes_complete, spec.type
        seen.add(spec.type)
        results = []
        for complete in (False, True):
            x = output.clone().requires_grad_(True)
            options = {"complete": True} if complete else {}
            loss = kind.loss(spec, x, targets, **options)
            loss.backward()
            results.append((loss.detach(), x.grad))
        (masked, masked_grad), (plain, plain_grad) = results
        assert plain.item() == pytest.approx(masked.item(), rel=1e-6, abs=1e-8), (spec.type, spec.loss)
        assert torch.allclose(plain_grad, masked_grad, rtol=1e-5, atol=1e-8), (spec.type, spec.loss)
    assert seen == {"classification", "multilabel", "score", "regression", "similarity", "distillation"}
    # Relational distillation on unit rows (a normalising model's embeddings), and a batch of one row: 0, attached.
    spec = TaskSpec("d", "distillation")
    student = l2_normalize(torch.randn(5, 4)).requires_grad_(True)
    teacher = torch.randn(5, 8)
    masked = spec.kind.loss(spec, student, teacher, unit_rows=True)
    plain = spec.kind.loss(spec, student, teacher, unit_rows=True, complete=True)
    assert plain.item() == pytest.approx(masked.item(), rel=1e-6)
    one = spec.kind.loss(spec, student[:1], teacher[:1], unit_rows=True, complete=True)
    assert one.item() == 0 and one.requires_grad


def test_the_contrastive_type_takes_no_complete_flag():
    """Its rows' flag says which are pairs; nothing is averaged that a host-side flag could shorten."""
    from sentmtl.model.task_types import task_type

    assert not task_type("contrastive").takes_complete
