"""`SentMtlOutput`: what `SentMtlModel.forward` returns (the combined and per-task losses, every task's output, the
embeddings, and the seed's names for the first classification and score tasks)."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class SentMtlOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned when targets are given):
        The combined loss: the weighted sum of the losses of the tasks present (see `SentMtlConfig.loss_weighting`).
    task_losses (`dict[str, torch.FloatTensor]`, returned when targets are given):
        Each present task's loss, by task name. Tasks without targets in the batch are not computed.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        The first classification task's class logits (Task A in the seed's model).
    sentiment_scores (`torch.FloatTensor` of shape `(batch_size,)`):
        The first score task's value in [0, 1] (Task B in the seed's model): `sigmoid(sentiment_logits)`.
    sentiment_logits (`torch.FloatTensor` of shape `(batch_size,)`):
        That score before the sigmoid.
    task_logits (`dict[str, torch.FloatTensor]`):
        Every headed task's output by name: `(batch_size, K)` for classification / multilabel, `(batch_size,)` for
        score (the logit) and regression (the value).
    task_outputs (`dict[str, torch.FloatTensor]`):
        What each task's loss and metrics read, by name: `task_logits` for headed tasks, the pair cosines
        `(batch_size,)` for similarity (when pairs are given), the embeddings for distillation.
    embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_size)`):
        The sentence embeddings (unit norm when `config.normalize`).
    pair_embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_size)`, returned for sentence pairs):
        The second sentences' embeddings.
    classification_loss / sentiment_loss (`torch.FloatTensor` of shape `()`):
        The first classification / score task's loss, the seed's names (aliases of `task_losses` entries).
    """

    loss: torch.FloatTensor | None = None
    task_losses: dict | None = None
    logits: torch.FloatTensor | None = None
    sentiment_scores: torch.FloatTensor | None = None
    sentiment_logits: torch.FloatTensor | None = None
    task_logits: dict | None = None
    task_outputs: dict | None = None
    embeddings: torch.FloatTensor | None = None
    pair_embeddings: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    sentiment_loss: torch.FloatTensor | None = None
