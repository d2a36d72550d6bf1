"""A run's data, from its tasks to the datasets the trainer reads: every source (loaded, converted, split, teacher
targets added), the evaluation-only STS-B source, tokenised training and evaluation sets, and the collator of a run
whose batches are padded to a multiple (a stream's by default, any run's with --pad_to_multiple_of)."""

import logging
from dataclasses import dataclass

from ..model.task_spec import TaskSpec
from ..utils.memory import release_memory
from .batching import STREAM_PAD_MULTIPLE, MultiSourceDataset, MultiTaskCollator, tokenize_source
from .miners import Miners
from .plan import DataSpec, RunTask
from .sources import Source, bounded, build_sources, table_columns
from .stsb import read_stsb
from .teacher_cache import Teachers

logger = logging.getLogger(__name__)
STS_EVAL_TASK = "stsb"


@dataclass
class RunData:
    """What the trainer reads. `evaluated`: the sources with held-out rows, the evaluation-only ones last;
    `eval_tasks`: the tasks measured but not trained (STS-B dev); `collator`: None for the trainer's own."""

    sources: list[Source]
    evaluated: list[Source]
    eval_tasks: list[TaskSpec]
    train_dataset: object
    eval_dataset: MultiSourceDataset
    collator: MultiTaskCollator | None = None


def build_run_data(
    tasks: list[RunTask],
    model,
    tokenizer,
    data_args,
    training_args,
    streaming: bool,
    max_length: int,
    allow_pickle_weights: bool = False,
):
    """Every process reads the data; teacher vectors and mined hard negatives are computed by one of them while the
    others wait on the cache's file lock and then read them (a lock, not a barrier: a long first computation cannot
    time out DDP)."""
    precision = "bf16" if training_args.bf16 else "fp32"
    # --allow_pickle_weights covers the teachers and miners a run names, as it covers the model
    device, pickles = training_args.device, allow_pickle_weights
    teachers = Teachers(
        model, tokenizer, max_length, device, precision, streamed=streaming, allow_pickle_weights=pickles
    )
    miners = Miners(model, tokenizer, max_length, device, precision, allow_pickle_weights=pickles)
    sources = build_sources(tasks, data_args, training_args.seed, teachers, model.config.prompt_for, miners)
    teachers.clear()
    miners.clear()
    release_memory()  # what preparing the data freed, before training allocates its own
    eval_only = sts_eval_source(
        data_args.sts_eval_file, [task.spec for task in tasks], data_args.max_eval_samples, model.config.prompt_for
    )
    with training_args.main_process_first(desc="tokenising"):
        if streaming:  # one streamed source (run_checks.check_streaming): tokenised as the loader reads it
            train_dataset = tokenize_source(sources[0].train, tokenizer, max_length)
        else:
            train_dataset = MultiSourceDataset(
                [tokenize_source(source.train, tokenizer, max_length) for source in sources],
                [source.tasks for source in sources],
                batch_sizes=[source.batch_size for source in sources],
                batches_per_epoch=[source.batches_per_epoch for source in sources],
            )
        evaluated = [source for source in sources if source.eval is not None] + eval_only
        eval_dataset = MultiSourceDataset(
            [tokenize_source(source.eval, tokenizer, max_length) for source in evaluated],
            [source.tasks for source in evaluated],
            [source.domain_names for source in evaluated],
        )
    for source in sources + eval_only:
        rows = "streamed" if streaming and source in sources else source.train.num_rows if source.train else 0
        held_out = source.eval.num_rows if source.eval is not None else 0
        names = ", ".join(t.name for t in source.tasks)
        logger.info("Data: %s feeds %s: %s training rows, %d held out.", source.description, names, rows, held_out)
    eval_tasks = [task for source in eval_only for task in source.tasks]
    collator = None
    multiple = pad_multiple(data_args, streaming)
    if multiple > 1:  # otherwise the trainer's own collator pads to the longest row
        known = [*model.tasks, *eval_tasks]
        collator = MultiTaskCollator(tokenizer, known, pad_to_multiple_of=multiple, max_length=max_length)
    return RunData(sources, evaluated, eval_tasks, train_dataset, eval_dataset, collator)


def pad_multiple(data_args, streaming: bool) -> int:
    """The multiple training and evaluation batches are padded to (1: their longest row): --pad_to_multiple_of, or
    by default 8 tokens (STREAM_PAD_MULTIPLE) for a stream, whose batches are not grouped by length, so that fewer
    shapes each keep compiled kernels."""
    chosen = getattr(data_args, "pad_to_multiple_of", None)
    if chosen is not None:
        return chosen
    return STREAM_PAD_MULTIPLE if streaming else 1


def sts_eval_source(path, tasks: list[TaskSpec], max_eval_samples: int | None = None, prompt_for=None) -> list[Source]:
    """`--sts_eval_file`: STS-B pairs as an evaluation-only source of a similarity task `stsb` that the model does
    not train, measured by the same evaluation as every task (`eval_stsb_spearman`, 0–1); at most
    `max_eval_samples` of them. Both sentences take the model's default prompt (`prompt_for`), as `encode` would."""
    if not path:
        return []
    if any(task.name == STS_EVAL_TASK for task in tasks):
        raise ValueError(
            f"--sts_eval_file reports as the task {STS_EVAL_TASK!r}, and a task of the run already has "
            "that name: rename the task."
        )
    spec = TaskSpec(STS_EVAL_TASK, "similarity")
    member = RunTask(spec, DataSpec({"stsb": str(path)}))
    table, _ = table_columns(read_stsb(path), [member], str(path), prompt_for=prompt_for)
    table = bounded(table, max_eval_samples, str(path))
    return [Source(STS_EVAL_TASK, [spec], None, table, f"STS-B ({path}, evaluation only)")]
