"""The main job behind `run_mtl.py`: parse arguments (YAML + flags), train, evaluate, report, save."""

import copy
import dataclasses
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from ..data.batching import STREAM_PAD_MULTIPLE, MultiSourceDataset, MultiTaskCollator, tokenize_source
from ..data.plan import DataSpec, RunTask, tasks_from_file, tasks_from_flags
from ..data.sources import Source, bounded, build_sources, table_columns
from ..data.stsb import read_stsb
from ..data.teacher_cache import Teacher
from ..model.configuration_sentmtl import SentMtlConfig
from ..model.task_spec import TaskSpec
from ..serving.embed import default_max_length
from ..serving.hub import HubPushError, push_folder
from ..serving.loading import build_model, load_model_and_tokenizer
from ..serving.onnx_export import ONNX_FOLDER, export_onnx, output_names, single_sentence_types
from ..tasks.io import task_io
from ..tasks.metrics import reliability_bins
from ..utils.errors import USER_ERRORS, debug_requested, one_line
from ..utils.memory import release_memory
from .arguments import DataArguments, ModelArguments, SentMtlTrainingArguments
from .callbacks import FreezeCallback, InterruptCallback, ReleaseMemoryCallback, WeightAveragingCallback
from .checkpoints import latest_checkpoint, resolve_resume_checkpoint, save_final_model
from .model_card import build_model_card
from .report import format_metrics_table, plot_confusion_matrix, plot_loss_curve, plot_reliability
from .run_config import resolved_run_config, run_config_yaml
from .trainer import NonFiniteLossError, SentMtlTrainer

logger = logging.getLogger("sentmtl")
ARGUMENT_CLASSES = (ModelArguments, DataArguments, SentMtlTrainingArguments)


def parse_args(argv: list[str] | None = None):
    """`[config.yaml] [--flag value ...]`: the YAML gives the run, flags override it; unknown keys are errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if argv and argv[0].endswith((".yaml", ".yml")):
        config_file = Path(argv.pop(0))
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: no such config file.")
        values = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config_file}: expected a mapping of argument names to values.")
        tasks = values.pop("tasks", None)
        valid = sorted(f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init)
        unknown = sorted(set(values) - set(valid) - {"tasks"})
        if unknown:
            raise ValueError(f"{config_file}: unknown key(s) {unknown}. Valid keys: {', '.join(valid)}.")
        # As parser defaults, YAML values lose to any flag given on the command line; argparse still converts
        # strings (PyYAML reads `1e-5` as a string) with each field's type.
        parser.set_defaults(**values)
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
        if tasks is not None:
            data_args.tasks = tasks_from_file(tasks, model_args, data_args, training_args, where=str(config_file))
            # The model's rules over its tasks (Matryoshka against a loss that needs the full size, …) before any data
            # or model loads.
            SentMtlConfig(**model_args.checkable_overrides(), tasks=[task.spec.to_dict() for task in data_args.tasks])
        return model_args, data_args, training_args
    return parser.parse_args_into_dataclasses(args=argv)


@dataclass
class RunResult:
    """What a run measured and left: `run()`'s return value, so callers need not re-read the files."""

    metrics: dict
    train_metrics: dict | None
    log_history: list
    output_dir: Path
    files: list[str] = field(default_factory=list)
    # {task: reliability_bins(...)} of the final evaluation, for tasks with a reliability diagram.
    reliability: dict = field(default_factory=dict)

    def __getitem__(self, key):  # `run(...)["eval_classification_accuracy"]` reads a metric, as the dict it replaces
        return self.metrics[key]


class RunInterrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; `exit_code` is the shell's 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run(model_args, data_args, training_args, callbacks=()) -> "RunResult":
    """Train (unless nothing is trainable), evaluate, and leave the model, card and reports in `output_dir`."""
    # The Trainer would create the Hub repository before training and pickle the token into every checkpoint's
    # training_args.bin; sentmtl pushes once, after the local save, and keeps the token out of every file.
    push_to_hub, hub_token = training_args.push_to_hub, training_args.hub_token
    training_args.push_to_hub, training_args.hub_token = False, None
    output_dir = Path(training_args.output_dir)
    resume_from = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    if training_args.resume_from_checkpoint == "auto":
        logger.warning("Resuming from %s", resume_from or f"scratch: no complete checkpoint in {output_dir}")

    set_seed(training_args.seed)  # before the heads are initialised, so the same seed gives the same run
    tasks = data_args.tasks if data_args.tasks is not None else tasks_from_flags(model_args, data_args, training_args)
    streaming = check_streaming(tasks, data_args, training_args)
    model, tokenizer = build_model(model_args, [task.spec for task in tasks])
    if training_args.export_onnx:  # what the export at the end would refuse, refused before training
        single_sentence_types(tokenizer)
        output_names(model)
    # The encoder's position limit too: tokenizers often report a huge `model_max_length` sentinel.
    max_length = min(data_args.max_length, default_max_length(tokenizer, model))
    # Teacher vectors and evaluation run where and how training runs: the run's device and precision.
    teachers = {}

    def teacher_for(name):
        if name not in teachers:
            # A stream's targets are computed while the model trains: its teacher must be a frozen copy of the
            # model as the run starts, not the model itself.
            start = copy.deepcopy(model).requires_grad_(False) if streaming and name is None else model
            teachers[name] = teacher_encoder(
                start, tokenizer, name, max_length, training_args.device, "bf16" if training_args.bf16 else "fp32"
            )
        return teachers[name]

    # Every process reads the data; teacher vectors are computed by one of them while the others wait on the
    # cache's file lock and then read them (a lock, not a barrier: a long first computation cannot time out DDP).
    sources = build_sources(tasks, data_args, training_args.seed, teacher_for)
    teachers.clear()  # a teacher loaded from a path is not needed during training
    release_memory()  # what preparing the data freed, before training allocates its own
    eval_only = sts_eval_source(data_args.sts_eval_file, [task.spec for task in tasks], data_args.max_eval_samples)
    with training_args.main_process_first(desc="tokenising"):
        if streaming:  # one streamed source (check_streaming): its rows are tokenised as the loader reads them
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
        logger.info(
            "Data: %s feeds %s: %s training rows, %d held out.",
            source.description,
            ", ".join(t.name for t in source.tasks),
            rows,
            source.eval.num_rows if source.eval is not None else 0,
        )

    interrupt = InterruptCallback()
    eval_tasks = [task for source in eval_only for task in source.tasks]
    # A stream's batches are not grouped by length: padded to a multiple of 8 tokens (STREAM_PAD_MULTIPLE), its
    # training and evaluation batches, so that fewer shapes each keep compiled kernels.
    collator = (
        MultiTaskCollator(
            tokenizer, [*model.tasks, *eval_tasks], pad_to_multiple_of=STREAM_PAD_MULTIPLE, max_length=max_length
        )
        if streaming
        else None
    )
    averaging = [WeightAveragingCallback(training_args.ema_decay, resume_from)] if training_args.ema_decay else []
    trainer = SentMtlTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[FreezeCallback.from_args(training_args), interrupt, *averaging, ReleaseMemoryCallback(), *callbacks],
        head_learning_rates={
            t.spec.name: t.data.head_learning_rate for t in tasks if t.data.head_learning_rate is not None
        },
        eval_tasks=eval_tasks,
    )
    trainable, total = model.count_parameters()
    train_metrics = None
    if trainable == 0:
        logger.warning(
            "Every parameter is frozen (--freeze %s): nothing to train, evaluating only.", training_args.freeze
        )
    else:
        try:
            train_result = trainer.train(resume_from_checkpoint=resume_from)
        except NonFiniteLossError as err:
            last = latest_checkpoint(output_dir)
            kept = f"The last good checkpoint is {last}." if last else "No checkpoint was saved (--save_strategy no)."
            raise NonFiniteLossError(f"{err} {kept} Nothing was written over it.") from None
        finally:
            interrupt.restore()  # on_train_end is not called when training raises
        if interrupt.interrupted and trainer.state.global_step < trainer.state.max_steps:
            signal_name = signal.Signals(interrupt.received).name
            raise RunInterrupted(
                f"{signal_name}: stopped at step {trainer.state.global_step} of {trainer.state.max_steps}; checkpoint "
                f"saved in {latest_checkpoint(output_dir)}. Continue with the same command and "
                "--resume_from_checkpoint auto.",
                128 + interrupt.received,
            )
        train_metrics = {
            **train_result.metrics,
            "global_step": train_result.global_step,
            "trainable_parameters": trainable,
            "total_parameters": total,
        }
        trainer.save_metrics("train", train_metrics)
        # The optimizer's moments (twice the trainable weights) and the gradients are done with: freed before the
        # final evaluation, saving and plots, which would otherwise stack on top of them.
        trainer.accelerator.free_memory()
        trainer.optimizer = trainer.lr_scheduler = None
        model.zero_grad(set_to_none=True)
        release_memory()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    run_config = resolved_run_config(model_args, data_args, training_args)
    if data_args.tasks is not None:
        run_config["tasks"] = [task.to_dict() for task in data_args.tasks]
    card = build_model_card(
        model.config, metrics, run_config, train_metrics, repo_id=training_args.hub_model_id if push_to_hub else None
    )
    save_final_model(trainer, output_dir, extra_files={"README.md": card})
    if trainer.is_world_process_zero():
        if training_args.export_onnx:
            export_onnx(model, tokenizer, output_dir / ONNX_FOLDER)
    points = {
        task.name: task_io(task).reliability(task, *trainer.last_eval_outputs[task.name])
        for task in model.tasks
        if task.name in trainer.last_eval_outputs
    }
    points = {name: value for name, value in points.items() if value is not None}
    if trainer.is_world_process_zero():
        (output_dir / "run_config.yaml").write_text(run_config_yaml(run_config, training_args))
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        for task in model.tasks:
            if f"eval_{task.name}_confusion_0_0" in metrics:
                plot_confusion_matrix(metrics, output_dir / f"confusion_{task.name}.png", task)
            if task.name in points:
                plot_reliability(*points[task.name], output_dir / f"reliability_{task.name}.png", task)
        held_out = ", ".join(f"{s.eval.num_rows} for {'/'.join(t.name for t in s.tasks)}" for s in evaluated)
        print(f"\nResults on the held-out rows ({held_out}; {output_dir / 'eval_results.json'}):")
        print(format_metrics_table(metrics, [*model.tasks, *trainer.eval_tasks]))
        print(f"Model, tokenizer, model card (README.md) and reports saved in {output_dir}")
        if push_to_hub:
            url = push_folder(
                output_dir,
                training_args.hub_model_id,
                token=hub_token,
                private=training_args.hub_private_repo,
                revision=training_args.hub_revision,
            )
            print(f"Pushed to {url}")
    files = sorted(p.name for p in output_dir.iterdir() if p.is_file()) if output_dir.is_dir() else []
    reliability = {name: reliability_bins(*value) for name, value in points.items()}
    return RunResult(metrics, train_metrics, trainer.state.log_history, output_dir, files, reliability)


def check_streaming(tasks: list[RunTask], data_args, training_args) -> bool:
    """Whether the run trains on a stream (a task's `data: {..., streaming: true}`), refusing what a stream cannot
    honour: other training sources beside it (batches are drawn across sources by row index, which a stream has
    not), a run without --max_steps (a stream's length is not known), several processes, loader workers, and an
    order other than the stream's shuffle buffer."""
    streamed = [task for task in tasks if task.data.streamed]
    if not streamed:
        if data_args.stream_buffer_size != DataArguments.stream_buffer_size:
            raise ValueError(
                f"--stream_buffer_size {data_args.stream_buffer_size}: no task's data is streamed "
                "(data: {..., streaming: true}), so it would be ignored. Drop it."
            )
        return False
    where = f"task {streamed[0].spec.name!r} streams its data"
    if len({task.data.source_key() for task in tasks}) > 1:
        raise ValueError(
            f"{where}: a streamed source must be the run's only training source (every task on the same "
            "data); sampling across sources picks rows by index, which a stream has not."
        )
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError(f"{where}: a stream has no known length, so epochs cannot be counted; give --max_steps.")
    if training_args.world_size > 1:
        raise ValueError(
            f"{where}: streamed training runs in one process ({training_args.world_size} were started); "
            "run it without torchrun / accelerate launch, or give the data as a file."
        )
    if training_args.dataloader_num_workers:
        raise ValueError(
            f"{where}: --dataloader_num_workers {training_args.dataloader_num_workers}: a stream is "
            "read (and its teacher vectors computed) in the training process; drop it."
        )
    ignored = [
        flag
        for flag, given in (
            ("--data_seed", training_args.data_seed is not None),
            ("--unfreeze_backbone_at_epoch", training_args.unfreeze_backbone_at_epoch is not None),
        )
        if given
    ]
    if ignored:
        raise ValueError(
            f"{where}: {', '.join(ignored)}: a stream is ordered by --seed and has no epochs to count "
            "(a pass over it may outlast the run); drop it."
        )
    if training_args.train_sampling_strategy != "group_by_length":
        raise ValueError(
            f"{where}: --train_sampling_strategy {training_args.train_sampling_strategy}: a stream's "
            "order is its seeded shuffle buffer (--stream_buffer_size); drop the flag."
        )
    return True


def teacher_encoder(
    model, tokenizer, teacher: str | None, max_length: int, device=None, precision: str = "fp32"
) -> Teacher:
    """A distillation teacher (`Teacher`: `encode(sentences) -> pooled vectors` and its cache key): the model as this
    run starts (its encoder, pooled before the projection), or the model at `teacher` (a name or path)."""
    if teacher is not None:
        model, tokenizer = load_model_and_tokenizer(teacher)
    return Teacher.from_model(model, tokenizer, teacher or "the starting encoder", max_length, precision, device)


STS_EVAL_TASK = "stsb"


def sts_eval_source(path, tasks: list[TaskSpec], max_eval_samples: int | None = None) -> list:
    """`--sts_eval_file`: STS-B pairs as an evaluation-only source of a similarity task `stsb` that the model does
    not train, measured by the same evaluation as every task (`eval_stsb_spearman`, 0–1); at most
    `max_eval_samples` of them."""
    if not path:
        return []
    if any(task.name == STS_EVAL_TASK for task in tasks):
        raise ValueError(
            f"--sts_eval_file reports as the task {STS_EVAL_TASK!r}, and a task of the run already has "
            "that name: rename the task."
        )
    spec = TaskSpec(STS_EVAL_TASK, "similarity")
    table, _ = table_columns(read_stsb(path), [RunTask(spec, DataSpec({"stsb": str(path)}))], str(path))
    table = bounded(table, max_eval_samples, str(path))
    return [Source(STS_EVAL_TASK, [spec], None, table, f"STS-B ({path}, evaluation only)")]


# Errors a user can act on, a diverged run and a failed push among them: one line, no traceback (sentmtl.utils.errors).
RUN_ERRORS = (*USER_ERRORS, NonFiniteLossError, HubPushError)


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("sentmtl").setLevel(logging.INFO)  # the split's summary and other facts about the run
    try:
        model_args, data_args, training_args = parse_args(argv)
    except RUN_ERRORS as err:
        if debug_requested():
            raise
        print(one_line("run_mtl.py", err), file=sys.stderr)
        return 2
    try:
        run(model_args, data_args, training_args)
    except RUN_ERRORS as err:
        if debug_requested():
            raise
        print(one_line("run_mtl.py", err), file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(f"run_mtl.py: {err}", file=sys.stderr)
        return err.exit_code
    return 0
