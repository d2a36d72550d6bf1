"""The losses of the task types, as small pure functions of tensors (fp32 in, a scalar out)."""

import torch
import torch.nn.functional as F


def classification_loss(logits, labels, label_smoothing: float = 0.0):
    """Cross-entropy over the examples that carry a label (-100 marks an absent one)."""
    return F.cross_entropy(logits.float(), labels.view(-1), ignore_index=-100, label_smoothing=label_smoothing)


def _present(targets):
    """Rows whose target is given (NaN marks an absent one)."""
    return ~torch.isnan(targets.reshape(len(targets), -1)).any(dim=-1)


def multilabel_loss(logits, targets):
    keep = _present(targets)
    return F.binary_cross_entropy_with_logits(logits[keep].float(), targets[keep].float())


def score_loss(logits, targets, loss: str = "bce"):
    """A score in [0, 1] from one logit: BCE on the logit (stable in low precision), or MSE on the sigmoid."""
    keep = _present(targets)
    logits, targets = logits.reshape(-1)[keep].float(), targets.reshape(-1)[keep].float()
    if loss == "mse":
        return F.mse_loss(torch.sigmoid(logits), targets)
    return F.binary_cross_entropy_with_logits(logits, targets)


def regression_loss(predictions, targets):
    keep = _present(targets)
    return F.mse_loss(predictions.reshape(-1)[keep].float(), targets.reshape(-1)[keep].float())


def pair_cosines(a, b):
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def cosent_loss(cosines, scores, scale: float = 20.0):
    """CoSENT (Su 2022): for every two pairs whose gold scores are ordered, penalise the cosines ordered the other
    way, log(1 + Σ exp(scale · (cos_j − cos_i))) over pairs with score_i > score_j. Only the order matters, so
    scores on any scale work."""
    differences = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = s·(cos_j − cos_i)
    ordered = scores[:, None] > scores[None, :]
    differences = differences[ordered]
    zero = torch.zeros(1, device=cosines.device, dtype=differences.dtype)  # the "1 +" inside the log
    return torch.logsumexp(torch.cat([zero, differences]), dim=0)


def cosine_mse_loss(cosines, scores):
    """Sentence-BERT's CosineSimilarityLoss: the cosine regressed onto the gold score in [0, 1]."""
    return F.mse_loss(cosines, scores.float())


def relational_distillation_loss(student, teacher):
    """MSE between the batch's pairwise cosine matrix and the teacher's: keeps which sentences are close to which,
    whatever the dimensions (the student's 256-d embedding against the encoder's 384-d mean pooling)."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return F.mse_loss(s @ s.T, t @ t.T)


def cosine_distillation_loss(student, teacher):
    """1 − cosine to the teacher's own vector (needs the same size: the untrained projection is the identity's
    stand-in only when sizes match, so prefer `relational`)."""
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"cosine distillation needs the embedding size ({student.shape[-1]}) to equal the teacher's "
                         f"({teacher.shape[-1]}); use loss: relational.")  # fmt: skip
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()
