"""sentmtl/model/losses.py: the losses by hand: the relational distillation loss (its diagonal and rows without a
teacher left out), in-batch negatives (hard negatives, the symmetric form, repeated texts)."""

import math

import numpy as np
import pytest
import torch
from helpers import distinct_ids

from sentmtl.model.losses import in_batch_negatives_loss, relational_distillation_loss


def test_relational_distillation_leaves_out_the_diagonal():
    """Issue #20, item 13: the relational loss leaves out the diagonal, so its weight does not depend on the batch
    size."""
    torch.manual_seed(0)
    for rows in (2, 5, 16):
        teacher = torch.randn(rows, 8)
        student = torch.randn(rows, 6)
        s = torch.nn.functional.normalize(student, dim=-1)
        t = torch.nn.functional.normalize(teacher, dim=-1)
        off = ~torch.eye(rows, dtype=torch.bool)
        expected = ((s @ s.T - t @ t.T)[off] ** 2).mean()
        assert relational_distillation_loss(student, teacher) == pytest.approx(float(expected), rel=1e-5)
    assert float(relational_distillation_loss(torch.randn(1, 6), torch.randn(1, 8))) == 0.0  # one row: no pair


def test_relational_distillation_leaves_out_rows_without_a_teacher():
    """Found reviewing the #20 change: rows without a teacher vector take no part in the relational loss."""
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 6), torch.randn(5, 8)
    with_absent = teacher.clone()
    with_absent[2] = float("nan")
    kept = [0, 1, 3, 4]
    loss = relational_distillation_loss(student, with_absent)
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(relational_distillation_loss(student[kept], teacher[kept])), rel=1e-5)


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


@pytest.mark.parametrize("k, symmetric", [(0, False), (2, False), (0, True), (1, True)])
def test_in_batch_negatives_loss_matches_a_hand_computation(k, symmetric):
    generator = torch.Generator().manual_seed(0)
    anchors, positives = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    negatives = torch.randn(4, k, 6, generator=generator)
    output = torch.cat([anchors[:, None], positives[:, None], negatives], dim=1)
    loss = in_batch_negatives_loss(output, distinct_ids(4, k), scale=5.0, symmetric=symmetric)
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
