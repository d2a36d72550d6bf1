"""sentmtl/model/losses.py: the losses by hand: the relational distillation loss (its diagonal and rows without a
teacher left out), in-batch negatives (hard negatives, the symmetric form, repeated texts); and the default run's
training loss over 50 steps against a plain reference (issue 33: fewer kernels, the same loss)."""

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


def test_l2_normalize_is_f_normalize_with_its_gradient_written_out():
    """Issue 33: the embeddings' normalisation keeps F.normalize's values and, to rounding, its gradient, rows below
    its eps (divided by eps, nothing projected out) included; gradcheck on float64."""
    from sentmtl.model.losses import l2_normalize

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.float64, generator=generator)
    x[1], x[2] = 0.0, 1e-14  # at and below eps
    x.requires_grad_(True)
    grad = torch.randn(5, 7, dtype=torch.float64, generator=generator)
    expected = torch.nn.functional.normalize(x, dim=-1)
    got = l2_normalize(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
    assert torch.autograd.gradcheck(l2_normalize, (torch.randn(4, 6, dtype=torch.float64, requires_grad=True),))
    with torch.no_grad():  # no gradient to compute: the plain ops
        torch.testing.assert_close(l2_normalize(x), expected, rtol=0, atol=0)


def test_relational_distillation_of_unit_rows_skips_their_normalisation():
    """Issue 33: a normalising model's embeddings are unit rows already; told so, the loss takes their dot products
    as the cosines (the same loss to rounding), and rows that are not unit are still normalised without it."""
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 8), torch.randn(6, 12)
    unit = torch.nn.functional.normalize(student, dim=-1)
    loss = relational_distillation_loss(student, teacher)
    assert float(relational_distillation_loss(unit, teacher, unit_rows=True)) == pytest.approx(float(loss), rel=1e-6)
    assert float(relational_distillation_loss(3 * unit, teacher, unit_rows=True)) != pytest.approx(float(loss))


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


# -- the default run's training loss against a plain reference ---------------------------------------------------------


def _reference_loss(model, batch):
    """The default tasks' training loss written plainly, as the docs state it: mean pooling over each row's tokens,
    the projection, L2 normalisation, dropout, then per task the mean over the rows that carry a target (boolean
    indexing: host reads are fine here) — cross-entropy on the scaled classification logits, BCE on the scaled
    sentiment logit, and the MSE between the student's and the teacher's cosine matrices off the diagonal — summed
    with the tasks' weights. It uses the model's modules (encoder, projection, dropout, heads' weights) only."""
    F = torch.nn.functional
    mask = batch["attention_mask"].bool()
    states = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
    pooled = torch.stack([row[keep].mean(0) for row, keep in zip(states, mask)])
    embeddings = F.normalize(model.shared_projection(pooled), dim=-1)
    features = model.dropout(embeddings)
    targets, terms = batch["task_labels"], {}

    def logits(name):
        head = getattr(model, f"{name}_head")
        return F.linear(features, head.weight, head.bias) * head.logit_scale

    # A task no row carries a target for adds 0, still on the graph: its head gets a zero gradient (which AdamW
    # applies: momentum and weight decay move it), not none.
    ids = targets["classification"]
    kept, out = ids != -100, logits("classification")
    terms["classification"] = F.cross_entropy(out[kept], ids[kept]) if kept.any() else 0 * out.sum()
    scores = targets["sentiment"]
    kept, out = ~torch.isnan(scores), logits("sentiment").squeeze(-1)
    terms["sentiment"] = F.binary_cross_entropy_with_logits(out[kept], scores[kept]) if kept.any() else 0 * out.sum()
    teacher = targets["distillation"]
    kept = ~torch.isnan(teacher).any(-1)
    cosines = lambda x: F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T  # noqa: E731
    off_diagonal = ~torch.eye(int(kept.sum()), dtype=torch.bool)
    gap = cosines(embeddings[kept]) - cosines(teacher[kept])
    terms["distillation"] = (gap[off_diagonal] ** 2).mean() if kept.sum() > 1 else 0 * embeddings.sum()
    return sum(task.loss_weight * terms[task.name] for task in model.tasks)


def _default_run_batches(tokenizer, steps, rows=8, teacher_size=24):
    """`steps` batches of the default tasks' targets: in even steps some rows without one (-100, NaN), and one batch
    whose classification and sentiment targets are all absent (their losses are then 0); odd steps carry every
    target, and name their tasks in `complete_tasks` as the collator does (plain means instead of masked ones)."""
    from helpers import synthetic_rows

    generator = torch.Generator().manual_seed(0)
    data = synthetic_rows(steps * rows)
    batches = []
    for step in range(steps):
        texts = data["sentence"][step * rows : (step + 1) * rows]
        labels = torch.tensor(data["label"][step * rows : (step + 1) * rows])
        scores = labels.float() * 0.8 + 0.1
        teacher = torch.randn(rows, teacher_size, generator=generator)
        row = torch.arange(rows) + step
        if step % 2 == 0:
            labels, scores = labels.masked_fill(row % 5 == 0, -100), scores.masked_fill(row % 3 == 0, float("nan"))
            teacher[row % 7 == 0] = float("nan")
        if step == 8:
            labels, scores = torch.full_like(labels, -100), torch.full_like(scores, float("nan"))
        batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        batch["task_labels"] = {"classification": labels, "sentiment": scores, "distillation": teacher}
        complete = {"classification": bool((labels != -100).all()), "sentiment": not scores.isnan().any()}
        complete["distillation"] = not teacher.isnan().any()
        batch["complete_tasks"] = tuple(name for name, every in complete.items() if every)
        batches.append(batch)
    return batches


def test_fifty_steps_of_the_default_tasks_train_as_the_plain_reference(tiny_encoder_dir):
    """Issue 33, part 2: the default run's three tasks (classification, sentiment score, relational distillation at
    weight 10, logit-scaled heads, dropout) trained for 50 steps give, step by step, the loss of `_reference_loss`
    trained alike from the same weights on the same batches, within 1e-5 relative: whatever the model's forward
    does to launch fewer kernels, it computes the same loss and the same gradients."""
    import copy

    import sentmtl
    from sentmtl.model.task_spec import default_tasks

    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=default_tasks(distillation_weight=10.0), head_logit_scale=20.0
    )
    reference = copy.deepcopy(model)
    losses = {"model": [], "reference": []}
    for name, net in (("model", model.train()), ("reference", reference.train())):
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        for step, batch in enumerate(_default_run_batches(tokenizer, 50)):
            torch.manual_seed(step)  # the same dropout masks on both sides
            loss = net(**batch).loss if name == "model" else _reference_loss(net, batch)
            if name == "model" and step == 1:
                assert batch["complete_tasks"] == ("classification", "sentiment", "distillation")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses[name].append(float(loss))
    got, expected = np.array(losses["model"]), np.array(losses["reference"])
    assert expected[-1] < 0.8 * expected[0]  # it trained: the comparison covers the gradients, not only the forward
    drift = np.abs(got - expected) / np.abs(expected)
    print(f"max relative loss difference over 50 steps: {drift.max():.2e}")
    assert drift.max() <= 1e-5, (drift.argmax(), got[drift.argmax()], expected[drift.argmax()])


def test_the_gram_gap_of_a_complete_batch_has_autograds_gradient():
    """`_GramGap` (relational distillation of a batch where every row has a teacher vector): its written-out
    gradient is autograd's (gradcheck in float64), and its value the mean squared gap off the diagonal."""
    import torch.nn.functional as F

    from sentmtl.model.losses import _GramGap

    s = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1).requires_grad_(True)
    t = F.normalize(torch.randn(5, 7, dtype=torch.float64), dim=-1)
    assert torch.autograd.gradcheck(lambda x: _GramGap.apply(x, t, 1 / 20), (s,))
    gap = s @ s.T - t @ t.T
    expected = (gap[~torch.eye(5, dtype=torch.bool)] ** 2).mean()
    assert float(_GramGap.apply(s, t, 1 / 20)) == pytest.approx(float(expected), rel=1e-12, abs=1e-15)
    # Under bf16 autocast it computes in float32 (the rows' precision), forward and backward, as without autocast.
    student = s.detach().float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = relational_distillation_loss(student, t.float(), unit_rows=True, complete=True)
    loss.backward()
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert student.grad.dtype == torch.float32 and student.grad.abs().sum() > 0
    # A backward called inside autocast computes in float32 too (found in review: 5.9e-3 relative error in bf16).
    grads = []
    for inside in (False, True):
        student = s.detach().float().requires_grad_(True)
        loss = relational_distillation_loss(student, t.float(), unit_rows=True, complete=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=inside):
            loss.backward()
        grads.append(student.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)
    # Rows that are not quite unit (rounded through bf16), or a zero teacher vector: the diagonal is left out exactly,
    # as the masked path leaves it out (found in review: it added (s_i·s_i − t_i·t_i)²).
    rough = s.detach().float().bfloat16().float()
    teacher = t.float().clone()
    teacher[2] = 0.0
    results = []
    for complete in (False, True):
        student = rough.clone().requires_grad_(True)
        loss = relational_distillation_loss(student, teacher, unit_rows=True, complete=complete)
        loss.backward()
        results.append((float(loss), student.grad))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-8)
