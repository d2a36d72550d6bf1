"""Data: the UCI corpus builder, the leak-free split, users' files, STS-B, the run's tasks and their data (`plan`),
sources (`sources`), tokenising and batches, the sampler, the teacher-vector cache. Imports the layers below it
(`model`, `utils`, `serving`, `tasks`), never `training`. `read_table`, `first_line` and `NO_SOURCE` are exported
here as `sentmtl.data` exported them in 0.2."""

from .files import NO_SOURCE, first_line, read_table  # noqa: F401 (0.2's `from sentmtl.data import ...`)

__all__ = ["NO_SOURCE", "first_line", "read_table"]
