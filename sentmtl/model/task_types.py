"""Task types, model half: what a type's head is and how its loss is computed. One class per type, registered by name.

A task type owns everything about its kind of task. This half is what the model needs (head size, the output that
losses and metrics read, the target's dtype and "absent" marker, the loss); it travels beside the saved weights, so
it imports torch and the standard library only. The run half (reading targets from data, metrics, what the report
and the model card show) is `sentmtl.model.task_spec.io`, registered under the same names. Nothing else branches on a task's
type: a new type is one `TaskType` subclass here (or in user code) plus its `TaskIO` — see docs/design.md.

| type           | head                    | target per row (absent marker)       | losses (default first)                 |
| -------------- | ----------------------- | ------------------------------------ | -------------------------------------- |
| classification | Linear(d → K)           | class id (-100)                      | cross_entropy                          |
| multilabel     | Linear(d → K)           | K values in {0, 1} (NaN)             | bce                                    |
| score          | Linear(d → 1), sigmoid  | a value in [0, 1] (NaN)              | bce (on the logit), mse (on the sigmoid)|
| regression     | Linear(d → 1)           | any real value (NaN)                 | mse                                    |
| similarity     | none: the embedding     | a pair's score in [0, 1] (NaN)       | cosent, cosine_mse                     |
| distillation   | none: the embedding     | the teacher's vector of the sentence | relational, cosine                     |
| contrastive    | none: the embedding     | the row's text ids (flag ≠ 1)        | in_batch, symmetric_in_batch           |

Every loss is a mean over the rows that carry a target: a batch where no row does gives 0 for that task (not NaN),
and the mean is taken with a mask rather than by indexing, so it needs no device-to-host copy. Under DDP the model
computes every loss over the gathered global batch (`sentmtl.model.distributed.gather_rows`), so no loss depends on the
number of processes; `compares_rows` marks the losses that compare a batch's rows with each other (CoSENT,
relational distillation), which evaluation averages batch by batch rather than over all rows at once.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # an absent class id (the convention of torch's cross-entropy and transformers' labels)
DEFAULT_SCALE = 20.0  # cosine × 20: CoSENT's and sentence-transformers' in-batch-negatives default


@dataclass
class TaskInputs:
    """What a forward pass gives the task types to read: the embeddings (and a pair's second embeddings) and, for
    a headed task, its head's raw output."""

    embeddings: torch.Tensor
    pair_embeddings: torch.Tensor | None = None
    head_output: torch.Tensor | None = None
    negative_embeddings: torch.Tensor | None = None  # `[batch, k, size]`: k hard negatives per row (contrastive)

    def truncated(self, size: int, normalize: bool = True) -> "TaskInputs":
        """The embeddings cut to their first `size` dimensions (re-normalised when the model normalises): what a
        Matryoshka loss reads. The head's output is left out: heads read the full embedding."""

        def cut(x):
            if x is None:
                return None
            x = x[..., :size]
            return F.normalize(x.float(), dim=-1) if normalize else x

        return TaskInputs(cut(self.embeddings), cut(self.pair_embeddings), None, cut(self.negative_embeddings))


class TaskType:
    """The model half of a task type. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]  # the first is the default
    min_labels: ClassVar[int | None] = None  # label names it needs (None: it takes none)
    has_head: ClassVar[bool] = True
    scaled_head: ClassVar[bool] = True  # multiply the head's output by the learnable logit scale (logits only)
    pairs: ClassVar[bool] = False  # rows are sentence pairs (text, text_pair)
    compares_rows: ClassVar[bool] = False  # the loss compares the rows of a batch (evaluated batch by batch)
    target_dtype: ClassVar[torch.dtype] = torch.float32
    label_smoothing: ClassVar[bool] = False  # accepts a label_smoothing
    scale_losses: ClassVar[tuple[str, ...]] = ()  # losses that multiply cosines by a `scale` (default DEFAULT_SCALE)
    # Matryoshka (`SentMtlConfig.matryoshka_dims`): the losses of this type that act on the embedding and can be taken
    # on its truncated prefixes. A loss that acts on the embedding but cannot (`prefix_refused`) is refused.
    prefix_losses: ClassVar[tuple[str, ...]] = ()
    prefix_refused: ClassVar[tuple[str, ...]] = ()

    def head_size(self, spec) -> int:
        return 1

    def output(self, spec, inputs: TaskInputs) -> torch.Tensor:
        """What the loss and the metrics read: by default the head's output, a `[batch]` vector for 1-wide heads."""
        out = inputs.head_output
        return out.squeeze(-1) if self.head_size(spec) == 1 else out

    def predict(self, spec, output: torch.Tensor) -> torch.Tensor:
        """What a user reads from a headed task at inference (`output` is `self.output`): by default the output
        itself (a regression value). The ONNX graph returns this for every head."""
        return output

    def present(self, targets: torch.Tensor) -> torch.Tensor:
        """`[batch]` bool: the rows that carry a target (NaN marks an absent one)."""
        return ~torch.isnan(targets.reshape(len(targets), -1)).any(dim=-1)

    def loss(self, spec, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


TASK_TYPES: dict[str, TaskType] = {}


def register_task_type(cls: type[TaskType]) -> type[TaskType]:
    """Class decorator: make `cls` the type named `cls.name` (a later registration of a name replaces it)."""
    TASK_TYPES[cls.name] = cls()
    return cls


def task_type(name: str) -> TaskType:
    if name not in TASK_TYPES:
        raise ValueError(f"task type {name!r} is not supported; choose one of {', '.join(TASK_TYPES)}.")
    return TASK_TYPES[name]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values[mask]` without boolean indexing; 0 (still attached to the graph) when no row is kept."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _filled(targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # NaN × 0 is NaN: absent targets are replaced before they meet the loss, then masked out of the mean.
    return torch.where(
        keep.reshape(len(keep), *([1] * (targets.dim() - 1))), targets, torch.zeros_like(targets)
    ).float()


@register_task_type
class Classification(TaskType):
    name, losses, min_labels, target_dtype, label_smoothing = "classification", ("cross_entropy",), 2, torch.long, True

    def head_size(self, spec) -> int:
        return len(spec.labels)

    def present(self, targets):
        return targets != IGNORE_INDEX

    def predict(self, spec, output):
        return torch.softmax(output.float(), dim=-1)  # class probabilities, in `spec.labels` order

    def loss(self, spec, output, targets):
        targets = targets.view(-1)
        per_row = F.cross_entropy(
            output.float(), targets, ignore_index=IGNORE_INDEX, reduction="none", label_smoothing=spec.label_smoothing
        )
        return masked_mean(per_row, self.present(targets))


@register_task_type
class Multilabel(TaskType):
    name, losses, min_labels = "multilabel", ("bce",), 1

    def head_size(self, spec) -> int:
        return len(spec.labels)

    def predict(self, spec, output):
        return torch.sigmoid(output.float())  # one probability per label

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        per_row = F.binary_cross_entropy_with_logits(output.float(), _filled(targets, keep), reduction="none").mean(-1)
        return masked_mean(per_row, keep)


@register_task_type
class Score(TaskType):
    """A value in [0, 1] from one logit; the seed's Task B. BCE reads the logit (stable in low precision: BCE on a
    probability saturates to log(0)); MSE reads the sigmoid."""

    name, losses = "score", ("bce", "mse")

    def predict(self, spec, output):
        return torch.sigmoid(output.float())  # the score in [0, 1]

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        output, targets = output.reshape(-1).float(), _filled(targets.reshape(-1), keep)
        if spec.loss == "mse":
            per_row = (torch.sigmoid(output) - targets) ** 2
        else:
            per_row = F.binary_cross_entropy_with_logits(output, targets, reduction="none")
        return masked_mean(per_row, keep)


@register_task_type
class Regression(TaskType):
    name, losses, scaled_head = "regression", ("mse",), False

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        return masked_mean((output.reshape(-1).float() - _filled(targets.reshape(-1), keep)) ** 2, keep)


@register_task_type
class Similarity(TaskType):
    """Sentence pairs scored in [0, 1], trained through the cosine of the two embeddings (no head)."""

    name, losses, has_head, pairs, compares_rows = "similarity", ("cosent", "cosine_mse"), False, True, True
    prefix_losses, scale_losses = ("cosent", "cosine_mse"), ("cosent",)

    def output(self, spec, inputs):
        if inputs.pair_embeddings is None:
            raise ValueError(f"task {spec.name!r} (similarity) needs sentence pairs: pair_input_ids is missing.")
        return F.cosine_similarity(inputs.embeddings.float(), inputs.pair_embeddings.float(), dim=-1)

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        if spec.loss == "cosine_mse":  # Sentence-BERT's CosineSimilarityLoss: the cosine regressed onto the score
            return masked_mean((output - _filled(targets, keep)) ** 2, keep)
        return cosent_loss(output, targets.float(), spec.scale if spec.scale is not None else DEFAULT_SCALE)


@register_task_type
class Distillation(TaskType):
    """Keeps the embedding's similarity structure close to a teacher's (by default the encoder as the run starts),
    whose vectors of the same sentences are the targets."""

    name, losses, has_head = "distillation", ("relational", "cosine"), False
    compares_rows = True  # relational; harmless for cosine, which is per row
    # Relational distillation compares cosine matrices, whatever the sizes; cosine distillation needs the full size.
    prefix_losses, prefix_refused = ("relational",), ("cosine",)

    def output(self, spec, inputs):
        return inputs.embeddings

    def loss(self, spec, output, targets):
        if spec.loss == "cosine":
            if output.shape[-1] != targets.shape[-1]:
                raise ValueError(
                    f"cosine distillation needs the embedding size ({output.shape[-1]}) to equal the "
                    f"teacher's ({targets.shape[-1]}); use loss: relational."
                )
            keep = self.present(targets)
            per_row = 1 - F.cosine_similarity(output.float(), _filled(targets, keep), dim=-1)
            return masked_mean(per_row, keep)
        return relational_distillation_loss(output, targets)


@register_task_type
class Contrastive(TaskType):
    """(anchor, positive) pairs, optionally with hard negatives, trained with in-batch negatives: each anchor must
    pick its own positive among every positive and hard negative of the (global) batch — softmax over the cosines
    times `scale` (sentence-transformers' MultipleNegativesRankingLoss). `symmetric_in_batch` adds the positive →
    anchor direction (their MultipleNegativesSymmetricRankingLoss).

    The output is `[batch, 2 + k, size]`: anchor, positive and the k hard negatives' embeddings. The target is the
    row's text ids `[flag, anchor, positive, negative 1 … k]` (`sentmtl.model.task_spec.io`): flag 1 marks a pair, anything else
    a row the loss skips (a retrieval document only, or another source's row). Texts with the same id are the same
    text: a candidate that is the anchor's own text, its positive's text or another positive of the same anchor is
    not used as a negative (a false negative), even where a batch holds duplicates."""

    name, losses, has_head, pairs, compares_rows = "contrastive", ("in_batch", "symmetric_in_batch"), False, True, True
    target_dtype = torch.long
    prefix_losses = scale_losses = ("in_batch", "symmetric_in_batch")

    def output(self, spec, inputs):
        if inputs.pair_embeddings is None:
            raise ValueError(
                f"task {spec.name!r} (contrastive) needs (anchor, positive) pairs: pair_input_ids is missing."
            )
        parts = [inputs.embeddings.float()[:, None], inputs.pair_embeddings.float()[:, None]]
        if inputs.negative_embeddings is not None:
            parts.append(inputs.negative_embeddings.float())
        return torch.cat(parts, dim=1)

    def present(self, targets):
        return targets.reshape(len(targets), -1)[:, 0] == 1

    def loss(self, spec, output, targets):
        scale = spec.scale if spec.scale is not None else DEFAULT_SCALE
        return in_batch_negatives_loss(output, targets, scale, symmetric=spec.loss == "symmetric_in_batch")


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
    anchors = F.normalize(output[:, 0], dim=-1)
    positives = F.normalize(output[:, 1], dim=-1)
    candidates = torch.cat([positives, F.normalize(output[:, 2:], dim=-1).reshape(-1, size)])
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


def relational_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the batch's pairwise cosine matrix and the teacher's, over the off-diagonal entries: keeps which
    sentences are close to which, whatever the two sizes (a 256-d embedding against a 384-d teacher). The diagonal
    is 1 = 1 in both and carried no signal; counting it made the loss's weight (B − 1)/B, smaller for short batches.
    A batch of one row has no pair: 0."""
    keep = ~torch.isnan(teacher).any(dim=-1)  # rows without a teacher vector (NaN) are left out, rows and columns
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(_filled(teacher, keep), dim=-1)
    pairs = keep[:, None] & keep[None, :] & ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    return masked_mean(((s @ s.T - t @ t.T) ** 2).reshape(-1), pairs.reshape(-1))


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


__all__ = [
    "DEFAULT_SCALE",
    "IGNORE_INDEX",
    "TASK_TYPES",
    "TaskInputs",
    "TaskType",
    "cosent_loss",
    "in_batch_negatives_loss",
    "masked_mean",
    "prefix_self_distillation_loss",
    "register_task_type",
    "relational_distillation_loss",
    "task_type",
]
