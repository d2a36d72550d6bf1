"""Task types, run half (`tasks.io`: the protocol; `tasks.builtin` and `tasks.contrastive`: the built-in types' data
options, target reading, metrics and what the report and card show; `tasks.labels`: the label rule) and the metric
arithmetic (`tasks.metrics`). The model half is `sentmtl.model.task_types`; a task's definition is
`sentmtl.model.task_spec.TaskSpec`, exported here as `sentmtl.tasks` exported it in 0.2."""

from ..model.task_spec import (  # noqa: F401 (0.2's `from sentmtl.tasks import ...`)
    DEFAULT_CLASSIFICATION,
    DEFAULT_SCORE,
    TaskSpec,
    check_unique_names,
    default_tasks,
    first_task,
)
from . import builtin, contrastive  # noqa: F401, E402 (registers the built-in types' run halves)

__all__ = ["DEFAULT_CLASSIFICATION", "DEFAULT_SCORE", "TaskSpec", "check_unique_names", "default_tasks", "first_task"]
