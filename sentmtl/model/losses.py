"""The losses of the types that compare embeddings, as pure functions of tensors: CoSENT, relational distillation,
in-batch negatives, Matryoshka self-distillation, and the masked mean every loss takes over the rows that carry a
target. Torch only: the task types (`task_types.py`) call them, and the file travels beside the weights.

Every loss is a mean over the rows that carry a target: a batch where no row does gives 0 for that task (not NaN),
and the mean is taken with a mask rather than by indexing, so it needs no device-to-host copy. Under DDP the model
computes every loss over the gathered global batch (`sentmtl.model.distributed.gather_rows`), so no loss depends on the
number of processes.
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F

DEFAULT_SCALE = 20.0  # cosine × 20: CoSENT's and sentence-transformers' in-batch-negatives default


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values[mask]` (a bool mask) without boolean indexing; 0 (still attached to the graph) when no row is
    kept. Selected rather than multiplied by the mask: a cast fewer, the same sum."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def outside_autocast(device_type: str):
    """A context where autocast is off on `device_type` (nothing to do where it is off already): for products whose
    inputs are float32 on purpose, which autocast would round to half precision."""
    return torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) else nullcontext()


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """`x.float()`, without the call when `x` is float32 already (each call is an op a step, even one that copies
    nothing)."""
    return x if x.dtype == torch.float32 else x.float()


NORM_EPS = 1e-12  # F.normalize's: a row whose norm is below it is divided by it instead (a literal in _L2Normalize)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """`F.normalize(x, dim=-1)`: the same values, one op fewer (the norm broadcasts in the division rather than
    through an `expand_as` first); with a gradient to compute, its backward in seven kernels (`_L2Normalize`) where
    autograd would chain fourteen through the division, the clamp and the norm."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _L2Normalize.apply(x)
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS)


class _L2Normalize(torch.autograd.Function):
    """y = x / max(|x|, eps) along the last dimension, with the gradient written out: the incoming gradient less its
    component along y, over the norm, (g − y·(g·y)) / |x|; a row below eps is divided by the constant eps, so nothing
    is removed from its gradient (autograd's chain gives the same, to rounding)."""

    @staticmethod
    def forward(ctx, x):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        clamped = norm.clamp_min(1e-12)  # NORM_EPS; a literal, which torch.compile keeps a constant
        y = x / clamped
        ctx.save_for_backward(y, norm, clamped)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, norm, clamped = ctx.saved_tensors
        along = torch.where(norm >= 1e-12, (grad * y).sum(dim=-1, keepdim=True), 0.0)
        return torch.addcmul(grad, y, along, value=-1) / clamped  # g − y·along in one kernel


class _GramGap(torch.autograd.Function):
    """scale · Σ_{i≠j} (s_i·s_j − t_i·t_j)², the student's rows `s` against the teacher's `t` (which take no
    gradient), with the gradient written out: the gap G = s sᵀ − t tᵀ, its diagonal zeroed, is symmetric, so
    d/ds = 4 · scale · G s. Forward in five kernels (the teacher's product, the student's with it subtracted, the
    diagonal zeroed, a dot product, the scale), backward in three; autograd's chain through the products, the squared
    difference and the masked mean takes more than a dozen."""

    @staticmethod
    def forward(ctx, s, t, scale: float):
        # In the rows' own precision whatever autocast would choose: the gap is a small difference of numbers near 1
        # (half precision would round it away), and the backward, outside autocast, reuses it with `s`.
        with outside_autocast(s.device.type):
            gap = torch.addmm(t @ t.t(), s, s.t(), beta=-1)  # s sᵀ − t tᵀ
            # The diagonal (s_i·s_i − t_i·t_i, 0 for unit rows up to rounding) is no pair: left out exactly, so rows
            # that are not quite unit (from half precision, or a zero teacher vector) add nothing, as in the mask.
            gap.fill_diagonal_(0.0)
            flat = gap.reshape(-1)
            loss = torch.dot(flat, flat) * scale
        ctx.save_for_backward(s, gap)
        ctx.scale = scale
        return loss

    @staticmethod
    def backward(ctx, grad):
        s, gap = ctx.saved_tensors
        with outside_autocast(s.device.type):  # a backward called inside autocast would round the product
            return torch.mm(gap, s).mul_(grad * (4.0 * ctx.scale)), None, None


def _filled(targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # NaN × 0 is NaN: absent targets are replaced before they meet the loss, then masked out of the mean.
    return as_float32(torch.where(keep.reshape(len(keep), *([1] * (targets.dim() - 1))), targets, 0.0))


def in_batch_negatives_loss(
    output: torch.Tensor, ids: torch.Tensor, scale: float = DEFAULT_SCALE, symmetric: bool = False
) -> torch.Tensor:
    """Cross-entropy of each anchor over the batch's candidates (every row's positive, then every row's hard
    negatives), the target being its own positive; `output` `[n, 2 + k, d]`, `ids` `[n, 3 + k]` (see `Contrastive`).
    Rows whose flag is not 1 are neither anchors nor candidates. Excluded candidates are −inf (no indexing, no host
    sync). `symmetric`: the mean with each positive's cross-entropy over the anchors."""
    n, width, size = output.shape
    keep = ids[:, 0] == 1
    anchor_id, positive_id, negative_id = ids[:, 1], ids[:, 2], ids[:, 3:].reshape(-1)
    # At least float32 (half-precision embeddings are upcast; float64 ones stay float64).
    output = output.to(torch.promote_types(output.dtype, torch.float32))
    anchors = l2_normalize(output[:, 0])
    positives = l2_normalize(output[:, 1])
    candidates = torch.cat([positives, l2_normalize(output[:, 2:]).reshape(-1, size)])
    rows = torch.arange(n, device=output.device)
    candidate_row = torch.cat([rows, rows.repeat_interleave(width - 2)])  # the row each candidate comes from
    candidate_id = torch.cat([positive_id, negative_id])
    own = F.one_hot(rows, len(candidate_row)).bool()  # [i, i]: row i's own positive
    # Anchor i's positive texts: the positives of every pair whose anchor is the same text (`same_anchor @ positive_text`
    # as a boolean matrix product, no indexing). A candidate that is one of them, or the anchor's own text, is no
    # negative for i.
    same_anchor = (anchor_id[None, :] == anchor_id[:, None]) & keep[None, :]  # [i, r]
    positive_text = (positive_id[:, None] == candidate_id[None, :]).float()  # [r, c]
    relevant = (same_anchor.float() @ positive_text) > 0
    excluded = ((relevant | (candidate_id[None, :] == anchor_id[:, None])) & ~own) | ~keep[candidate_row][None, :]
    loss = _cross_entropy_to_own(scale * anchors @ candidates.T, excluded, keep)
    if symmetric:  # positive i → anchor i among the batch's anchors
        # The anchors positive i answers: those of every pair whose positive is the same text; and i's own text.
        same_positive = (positive_id[None, :] == positive_id[:, None]) & keep[None, :]  # [i, r]
        anchor_text = (anchor_id[:, None] == anchor_id[None, :]).float()  # [r, j]
        relevant = (same_positive.float() @ anchor_text) > 0
        excluded = ((relevant | (anchor_id[None, :] == positive_id[:, None])) & ~own[:, :n]) | ~keep[None, :]
        loss = (loss + _cross_entropy_to_own(scale * positives @ anchors.T, excluded, keep)) / 2
    return loss


def _cross_entropy_to_own(logits: torch.Tensor, excluded: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept rows i of −log softmax(logits[i])[i], excluded entries left out."""
    logits = logits.masked_fill(excluded, float("-inf"))
    own = logits.diagonal()
    # A skipped row's own entry is −inf too (−inf − −inf = NaN): replaced before the masked mean.
    per_row = torch.where(keep, torch.logsumexp(logits, dim=-1) - own, torch.zeros_like(own))
    return masked_mean(per_row, keep)


def cosent_loss(cosines: torch.Tensor, scores: torch.Tensor, scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """CoSENT (Su 2022): for every two pairs whose gold scores are ordered, penalise the cosines ordered the other
    way: log(1 + Σ exp(scale · (cos_j − cos_i))) over pairs with score_i > score_j. Only the order matters, so scores
    on any scale work. A NaN score (an absent target) is ordered against nothing, so its pair drops out. Masked
    rather than indexed (no host sync); excluded entries are −inf, which logsumexp ignores."""
    differences = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = s·(cos_j − cos_i)
    ordered = scores[:, None] > scores[None, :]
    differences = differences.masked_fill(~ordered, float("-inf")).reshape(-1)
    zero = torch.zeros(1, device=cosines.device, dtype=differences.dtype)  # the "1 +" inside the log
    return torch.logsumexp(torch.cat([zero, differences]), dim=0)


def relational_distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, unit_rows: bool = False, complete: bool = False
) -> torch.Tensor:
    """MSE between the batch's pairwise cosine matrix and the teacher's, over the off-diagonal entries: keeps which
    sentences are close to which, whatever the two sizes (a 256-d embedding against a 384-d teacher). The diagonal
    is 1 = 1 in both and carried no signal; counting it made the loss's weight (B − 1)/B, smaller for short batches.
    A batch of one row has no pair: 0. `unit_rows`: the student's rows are unit vectors already (a normalising
    model's embeddings), so their dot products are the cosines: normalising again would change them by rounding
    only, for four kernels forward and fourteen backward. `complete`: every row has a teacher vector (known on the
    host), so no row is masked: the off-diagonal squared differences are summed and divided by their count
    (`_GramGap`), in a dozen kernels fewer."""
    if complete:
        s = as_float32(student) if unit_rows else l2_normalize(as_float32(student))
        t = l2_normalize(as_float32(teacher))
        pairs = len(s) * (len(s) - 1)
        if not pairs:  # one row: no pair
            return (s * 0.0).sum()
        return _GramGap.apply(s, t if t.dtype == s.dtype else t.to(s.dtype), 1.0 / pairs)
    keep = (teacher == teacher).all(dim=-1)  # rows without a teacher vector (NaN) are left out, rows and columns
    s = as_float32(student) if unit_rows else l2_normalize(as_float32(student))
    t = l2_normalize(_filled(teacher, keep))
    pairs = keep[:, None] & keep[None, :]
    pairs.fill_diagonal_(False)
    return masked_mean((s @ s.t() - t @ t.t()) ** 2, pairs)


def prefix_self_distillation_loss(embeddings: torch.Tensor, sizes: list[tuple[int, float]]) -> torch.Tensor:
    """Matryoshka self-distillation: the weighted mean, over the (size, weight) pairs below the full size, of the
    relational distillation loss between the first `size` dimensions' cosine matrix over these rows and the full
    embedding's. The full embedding's matrix is the target and is detached: the term moves the prefixes towards it,
    never it towards them (the prefixes' gradient still reaches the encoder, which the full size shares). No size
    below the full one: 0."""
    teacher = embeddings.detach()
    terms = [
        (weight, relational_distillation_loss(embeddings[:, :size], teacher))
        for size, weight in sizes
        if size < embeddings.shape[-1]
    ]
    total = sum(weight for weight, _ in terms)
    if not total:
        return embeddings.sum() * 0  # keeps the graph (and the device) of a real loss
    return torch.stack([weight * term for weight, term in terms]).sum() / total
