"""Task types, model half: what a type's head is and how its loss is computed. One class per type, registered by name.

A task type owns everything about its kind of task. This half is what the model needs (head size, the output that
losses and metrics read, the target's dtype and "absent" marker, the loss); it travels beside the saved weights, so
it imports torch and the standard library only. The run half (reading targets from data, metrics, what the report
and the model card show) is `sentmtl.task_io`, registered under the same names. Nothing else branches on a task's
type: a new type is one `TaskType` subclass here (or in user code) plus its `TaskIO` — see docs/design.md.

| type           | head                    | target per row (absent marker)       | losses (default first)                 |
| -------------- | ----------------------- | ------------------------------------ | -------------------------------------- |
| classification | Linear(d → K)           | class id (-100)                      | cross_entropy                          |
| multilabel     | Linear(d → K)           | K values in {0, 1} (NaN)             | bce                                    |
| score          | Linear(d → 1), sigmoid  | a value in [0, 1] (NaN)              | bce (on the logit), mse (on the sigmoid)|
| regression     | Linear(d → 1)           | any real value (NaN)                 | mse                                    |
| similarity     | none: the embedding     | a pair's score in [0, 1] (NaN)       | cosent, cosine_mse                     |
| distillation   | none: the embedding     | the teacher's vector of the sentence | relational, cosine                     |

Every loss is a mean over the rows that carry a target: a batch where no row does gives 0 for that task (not NaN),
and the mean is taken with a mask rather than by indexing, so it needs no device-to-host copy. Under DDP the model
computes every loss over the gathered global batch (`sentmtl.distributed.gather_rows`), so no loss depends on the
number of processes; `compares_rows` marks the losses that compare a batch's rows with each other (CoSENT,
relational distillation), which evaluation averages batch by batch rather than over all rows at once.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # an absent class id (the convention of torch's cross-entropy and transformers' labels)


@dataclass
class TaskInputs:
    """What a forward pass gives the task types to read: the embeddings (and a pair's second embeddings) and, for
    a headed task, its head's raw output."""

    embeddings: torch.Tensor
    pair_embeddings: torch.Tensor | None = None
    head_output: torch.Tensor | None = None


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

    def head_size(self, spec) -> int:
        return 1

    def output(self, spec, inputs: TaskInputs) -> torch.Tensor:
        """What the loss and the metrics read: by default the head's output, a `[batch]` vector for 1-wide heads."""
        out = inputs.head_output
        return out.squeeze(-1) if self.head_size(spec) == 1 else out

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
    return torch.where(keep.reshape(len(keep), *([1] * (targets.dim() - 1))), targets, torch.zeros_like(targets)).float()


@register_task_type
class Classification(TaskType):
    name, losses, min_labels, target_dtype, label_smoothing = "classification", ("cross_entropy",), 2, torch.long, True

    def head_size(self, spec) -> int:
        return len(spec.labels)

    def present(self, targets):
        return targets != IGNORE_INDEX

    def loss(self, spec, output, targets):
        targets = targets.view(-1)
        per_row = F.cross_entropy(output.float(), targets, ignore_index=IGNORE_INDEX, reduction="none",
                                  label_smoothing=spec.label_smoothing)  # fmt: skip
        return masked_mean(per_row, self.present(targets))


@register_task_type
class Multilabel(TaskType):
    name, losses, min_labels = "multilabel", ("bce",), 1

    def head_size(self, spec) -> int:
        return len(spec.labels)

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        per_row = F.binary_cross_entropy_with_logits(output.float(), _filled(targets, keep), reduction="none").mean(-1)
        return masked_mean(per_row, keep)


@register_task_type
class Score(TaskType):
    """A value in [0, 1] from one logit; the seed's Task B. BCE reads the logit (stable in low precision: BCE on a
    probability saturates to log(0)); MSE reads the sigmoid."""

    name, losses = "score", ("bce", "mse")

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

    def output(self, spec, inputs):
        if inputs.pair_embeddings is None:
            raise ValueError(f"task {spec.name!r} (similarity) needs sentence pairs: pair_input_ids is missing.")
        return F.cosine_similarity(inputs.embeddings.float(), inputs.pair_embeddings.float(), dim=-1)

    def loss(self, spec, output, targets):
        keep = self.present(targets)
        if spec.loss == "cosine_mse":  # Sentence-BERT's CosineSimilarityLoss: the cosine regressed onto the score
            return masked_mean((output - _filled(targets, keep)) ** 2, keep)
        return cosent_loss(output, targets.float())


@register_task_type
class Distillation(TaskType):
    """Keeps the embedding's similarity structure close to a teacher's (by default the encoder as the run starts),
    whose vectors of the same sentences are the targets."""

    name, losses, has_head = "distillation", ("relational", "cosine"), False
    compares_rows = True  # relational; harmless for cosine, which is per row

    def output(self, spec, inputs):
        return inputs.embeddings

    def loss(self, spec, output, targets):
        if spec.loss == "cosine":
            if output.shape[-1] != targets.shape[-1]:
                raise ValueError(f"cosine distillation needs the embedding size ({output.shape[-1]}) to equal the "
                                 f"teacher's ({targets.shape[-1]}); use loss: relational.")  # fmt: skip
            keep = self.present(targets)
            per_row = 1 - F.cosine_similarity(output.float(), _filled(targets, keep), dim=-1)
            return masked_mean(per_row, keep)
        return relational_distillation_loss(output, targets)


def cosent_loss(cosines: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
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


__all__ = ["IGNORE_INDEX", "TASK_TYPES", "TaskInputs", "TaskType", "cosent_loss", "masked_mean", "register_task_type",
           "relational_distillation_loss", "task_type"]
