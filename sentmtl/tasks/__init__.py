"""Task types, run half (`tasks.io`: reading targets, metrics, what the report and card show) and the metric
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

__all__ = ["DEFAULT_CLASSIFICATION", "DEFAULT_SCORE", "TaskSpec", "check_unique_names", "default_tasks", "first_task"]
