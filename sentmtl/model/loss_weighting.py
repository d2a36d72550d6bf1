"""How a model's task losses combine into the one loss it trains on (`SentMtlConfig.loss_weighting`): each task's
static `loss_weight`, or weights learned as the tasks' log-variances (`uncertainty`, Kendall et al. 2018).
`SentMtlModel.combine_losses` calls it in training and evaluation alike."""

import torch


def combine_task_losses(
    task_losses: dict, tasks: list, log_variances: torch.Tensor | None = None, labelled: dict | None = None
) -> torch.Tensor:
    """The weighted sum of the losses of the tasks present (a dict by task name), in the order of `tasks`.
    `log_variances`: one learned s per task (the model's `loss_log_variances`; None: the static weights). `labelled`:
    {task: whether any row carried its target} (a bool, or a bool tensor, so no host sync); a task without one adds
    nothing."""
    if log_variances is not None:
        # Kendall et al. 2018: exp(-s) = 1/sigma^2 weighs each task; s/2 = log(sigma) stops s from growing
        # without bound (which would switch the task off). A batch with no target for a task must not move its
        # s either: its loss is 0, and s/2 alone would push s down, the task's weight up.
        s = log_variances.float()
        flags = {
            name: torch.as_tensor((labelled or {}).get(name, True), dtype=s.dtype, device=s.device)
            for name in task_losses
        }
        terms = [
            flags[task.name] * (torch.exp(-s[i]) * task_losses[task.name] + 0.5 * s[i])
            for i, task in enumerate(tasks)
            if task.name in task_losses
        ]
        return torch.stack(terms).sum()
    # Static weights: a chain of adds, each weight the add's `alpha` (one kernel a task, weighted or not; a weight of
    # 1, the default, multiplies by nothing).
    total = None
    for task in tasks:
        if task.name not in task_losses:
            continue
        loss, weight = task_losses[task.name], task.loss_weight
        if total is None:
            total = loss if weight == 1 else weight * loss
        else:
            total = total + loss if weight == 1 else torch.add(total, loss, alpha=weight)
    return total
