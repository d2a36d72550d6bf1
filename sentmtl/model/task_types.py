"""Task types, model half: what a type's head is and how its loss is computed. One class per type, registered by name.

A task type owns everything about its kind of task. This half is what the model needs (head size, the output that
losses and metrics read, the target's dtype and "absent" marker, the loss); it travels beside the saved weights, so
it imports torch, the standard library and its sibling `losses.py` only. The run half (reading targets from data,
metrics, what the report and the model card show) is `sentmtl.tasks.io` (the built-in types in `sentmtl.tasks.builtin` and `sentmtl.tasks.contrastive`), registered under the same names.
Nothing else branches on a task's type: a new type is one `TaskType` subclass here (or in user code) plus its `TaskIO`
— see docs/design.md.

| type           | head                    | target per row (absent marker)       | losses (default first)                 |
| -------------- | ----------------------- | ------------------------------------ | -------------------------------------- |
| classification | Linear(d → K)           | class id (-100)                      | cross_entropy                          |
| multilabel     | Linear(d → K)           | K values in {0, 1} (NaN)             | bce                                    |
| score          | Linear(d → 1), sigmoid  | a value in [0, 1] (NaN)              | bce (on the logit), mse (on the sigmoid)|
| regression     | Linear(d → 1)           | any real value (NaN)                 | mse                                    |
| similarity     | none: the embedding     | a pair's score in [0, 1] (NaN)       | cosent, cosine_mse                     |
| distillation   | none: the embedding     | the teacher's vector of the sentence | relational, cosine                     |
| contrastive    | none: the embedding     | the row's text ids (flag ≠ 1)        | in_batch, symmetric_in_batch           |

The loss arithmetic (CoSENT, relational distillation, in-batch negatives, Matryoshka self-distillation, the masked
mean over the rows that carry a target) is `losses.py`, its names importable from here too. `compares_rows` marks the
losses that compare a batch's rows with each other (CoSENT, relational distillation), which evaluation averages batch
by batch rather than over all rows at once.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .losses import (
    DEFAULT_SCALE,
    _filled,
    as_float32,
    cosent_loss,
    in_batch_negatives_loss,
    l2_normalize,
    masked_mean,
    prefix_self_distillation_loss,
    relational_distillation_loss,
)

IGNORE_INDEX = -100  # an absent class id (the convention of torch's cross-entropy and transformers' labels)


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
            return l2_normalize(as_float32(x)) if normalize else x

        return TaskInputs(cut(self.embeddings), cut(self.pair_embeddings), None, cut(self.negative_embeddings))


class TaskType:
    """The model half of a task type. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]  # the first is the default
    min_labels: ClassVar[int | None] = None  # label names it needs (None: it takes none)
    has_head: ClassVar[bool] = True
    scaled_head: ClassVar[bool] = True  # multiply the head's output by the learnable logit scale (logits only)
    pairs: ClassVar[bool] = False  # rows are sentence pairs (text, text_pair)
    negatives: ClassVar[bool] = False  # rows may carry hard negatives
    compares_rows: ClassVar[bool] = False  # the loss compares the rows of a batch (evaluated batch by batch)
    # The loss takes `unit_rows=True` when the output's rows are unit vectors (a normalising model's embeddings, or
    # their re-normalised prefixes), and may then skip normalising them again.
    takes_unit_rows: ClassVar[bool] = False
    # The loss takes `complete=True` when every row of the batch carries a target (the collator knows it on the host:
    # `complete_tasks`) and then takes a plain mean: no mask to build, select and count on the device.
    takes_complete: ClassVar[bool] = False
    target_dtype: ClassVar[torch.dtype] = torch.float32
    label_smoothing: ClassVar[bool] = False  # accepts a label_smoothing
    scale_losses: ClassVar[tuple[str, ...]] = ()  # losses that multiply cosines by a `scale` (default DEFAULT_SCALE)
    # Matryoshka (`SentMtlConfig.matryoshka_dims`): the losses of this type that act on the embedding and can be taken
    # on its truncated prefixes. A loss that acts on the embedding but cannot (`prefix_refused`) is refused.
    prefix_losses: ClassVar[tuple[str, ...]] = ()
    prefix_refused: ClassVar[tuple[str, ...]] = ()

    @property
    def text_roles(self) -> tuple[str, ...]:
        """The texts of a row this type reads, each of which may take a prompt (`sentmtl.model.prompts.ROLES`)."""
        return ("text",) + (("text_pair",) if self.pairs else ()) + (("negatives",) if self.negatives else ())

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
        """`[batch]` bool: the rows that carry a target (NaN marks an absent one: the one value unequal to itself)."""
        values = targets.reshape(len(targets), -1)
        present = values == values
        return present.all(dim=-1) if values.shape[1] != 1 else present.reshape(-1)

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


@register_task_type
class Classification(TaskType):
    name, losses, min_labels, target_dtype, label_smoothing = "classification", ("cross_entropy",), 2, torch.long, True
    takes_complete = True

    def head_size(self, spec) -> int:
        return len(spec.labels)

    def present(self, targets):
        return targets != IGNORE_INDEX

    def predict(self, spec, output):
        return torch.softmax(as_float32(output), dim=-1)  # class probabilities, in `spec.labels` order

    def loss(self, spec, output, targets, complete=False):
        targets = targets.view(-1)
        if complete:  # every row has a class id: cross-entropy's own mean
            return F.cross_entropy(as_float32(output), targets, label_smoothing=spec.label_smoothing)
        # The mean over the rows with a class id: cross-entropy's sum leaves the others out already, so only the count
        # needs the mask (0 when no row has one, as `masked_mean`).
        summed = F.cross_entropy(
            as_float32(output),
            targets,
            ignore_index=IGNORE_INDEX,
            reduction="sum",
            label_smoothing=spec.label_smoothing,
        )
        return summed / self.present(targets).sum().clamp(min=1)


@register_task_type
class Multilabel(TaskType):
    name, losses, min_labels, takes_complete = "multilabel", ("bce",), 1, True

    def head_size(self, spec) -> int:
        return len(spec.labels)

    def predict(self, spec, output):
        return torch.sigmoid(as_float32(output))  # one probability per label

    def loss(self, spec, output, targets, complete=False):
        if complete:  # every row has all its labels: the mean over rows of equal-width means is the mean of all
            return F.binary_cross_entropy_with_logits(as_float32(output), as_float32(targets))
        keep = self.present(targets)
        logits, targets = as_float32(output), _filled(targets, keep)
        per_row = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
        return masked_mean(per_row, keep)


@register_task_type
class Score(TaskType):
    """A value in [0, 1] from one logit; the seed's Task B. BCE reads the logit (stable in low precision: BCE on a
    probability saturates to log(0)); MSE reads the sigmoid."""

    name, losses, takes_complete = "score", ("bce", "mse"), True

    def predict(self, spec, output):
        return torch.sigmoid(as_float32(output))  # the score in [0, 1]

    def loss(self, spec, output, targets, complete=False):
        if complete:
            output, targets = as_float32(output.reshape(-1)), as_float32(targets.reshape(-1))
            if spec.loss == "mse":
                return F.mse_loss(torch.sigmoid(output), targets)
            return F.binary_cross_entropy_with_logits(output, targets)
        keep = self.present(targets)
        output, targets = as_float32(output.reshape(-1)), _filled(targets.reshape(-1), keep)
        if spec.loss == "mse":
            per_row = (torch.sigmoid(output) - targets) ** 2
        else:
            per_row = F.binary_cross_entropy_with_logits(output, targets, reduction="none")
        return masked_mean(per_row, keep)


@register_task_type
class Regression(TaskType):
    name, losses, scaled_head, takes_complete = "regression", ("mse",), False, True

    def loss(self, spec, output, targets, complete=False):
        if complete:
            return F.mse_loss(as_float32(output.reshape(-1)), as_float32(targets.reshape(-1)))
        keep = self.present(targets)
        return masked_mean((as_float32(output.reshape(-1)) - _filled(targets.reshape(-1), keep)) ** 2, keep)


@register_task_type
class Similarity(TaskType):
    """Sentence pairs scored in [0, 1], trained through the cosine of the two embeddings (no head)."""

    name, losses, has_head, pairs, compares_rows = "similarity", ("cosent", "cosine_mse"), False, True, True
    prefix_losses, scale_losses = ("cosent", "cosine_mse"), ("cosent",)
    takes_complete = True

    def output(self, spec, inputs):
        if inputs.pair_embeddings is None:
            raise ValueError(f"task {spec.name!r} (similarity) needs sentence pairs: pair_input_ids is missing.")
        return F.cosine_similarity(as_float32(inputs.embeddings), as_float32(inputs.pair_embeddings), dim=-1)

    def loss(self, spec, output, targets, complete=False):
        if spec.loss == "cosine_mse" and complete:
            return F.mse_loss(output, as_float32(targets))
        keep = self.present(targets)
        if spec.loss == "cosine_mse":  # Sentence-BERT's CosineSimilarityLoss: the cosine regressed onto the score
            return masked_mean((output - _filled(targets, keep)) ** 2, keep)
        return cosent_loss(output, as_float32(targets), spec.scale if spec.scale is not None else DEFAULT_SCALE)


@register_task_type
class Distillation(TaskType):
    """Keeps the embedding's similarity structure close to a teacher's (by default the encoder as the run starts),
    whose vectors of the same sentences are the targets."""

    name, losses, has_head = "distillation", ("relational", "cosine"), False
    compares_rows = True  # relational; harmless for cosine, which is per row
    takes_unit_rows = True  # its output is the embedding
    takes_complete = True
    # Relational distillation compares cosine matrices, whatever the sizes; cosine distillation needs the full size.
    prefix_losses, prefix_refused = ("relational",), ("cosine",)

    def output(self, spec, inputs):
        return inputs.embeddings

    def loss(self, spec, output, targets, unit_rows=False, complete=False):
        if spec.loss == "cosine":
            if output.shape[-1] != targets.shape[-1]:
                raise ValueError(
                    f"cosine distillation needs the embedding size ({output.shape[-1]}) to equal the "
                    f"teacher's ({targets.shape[-1]}); use loss: relational."
                )
            if complete:
                return (1 - F.cosine_similarity(as_float32(output), as_float32(targets), dim=-1)).mean()
            keep = self.present(targets)
            per_row = 1 - F.cosine_similarity(as_float32(output), _filled(targets, keep), dim=-1)
            return masked_mean(per_row, keep)
        return relational_distillation_loss(output, targets, unit_rows, complete)


@register_task_type
class Contrastive(TaskType):
    """(anchor, positive) pairs, optionally with hard negatives, trained with in-batch negatives: each anchor must
    pick its own positive among every positive and hard negative of the (global) batch — softmax over the cosines
    times `scale` (sentence-transformers' MultipleNegativesRankingLoss). `symmetric_in_batch` adds the positive →
    anchor direction (their MultipleNegativesSymmetricRankingLoss).

    The output is `[batch, 2 + k, size]`: anchor, positive and the k hard negatives' embeddings. The target is the
    row's text ids `[flag, anchor, positive, negative 1 … k]` (`sentmtl.tasks.contrastive`): flag 1 marks a pair, anything else
    a row the loss skips (a retrieval document only, or another source's row). Texts with the same id are the same
    text: a candidate that is the anchor's own text, its positive's text or another positive of the same anchor is
    not used as a negative (a false negative), even where a batch holds duplicates."""

    name, losses, has_head, pairs, compares_rows = "contrastive", ("in_batch", "symmetric_in_batch"), False, True, True
    target_dtype, negatives = torch.long, True
    prefix_losses = scale_losses = ("in_batch", "symmetric_in_batch")

    def output(self, spec, inputs):
        if inputs.pair_embeddings is None:
            raise ValueError(
                f"task {spec.name!r} (contrastive) needs (anchor, positive) pairs: pair_input_ids is missing."
            )
        parts = [as_float32(inputs.embeddings)[:, None], as_float32(inputs.pair_embeddings)[:, None]]
        if inputs.negative_embeddings is not None:
            parts.append(as_float32(inputs.negative_embeddings))
        return torch.cat(parts, dim=1)

    def present(self, targets):
        return targets.reshape(len(targets), -1)[:, 0] == 1

    def loss(self, spec, output, targets):
        scale = spec.scale if spec.scale is not None else DEFAULT_SCALE
        return in_batch_negatives_loss(output, targets, scale, symmetric=spec.loss == "symmetric_in_batch")


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
